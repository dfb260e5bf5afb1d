"""The README's main job: `rnn-xframework parity` prints a passing table."""

import pytest

from rnn_xframework import cli


def test_parity_report_passes_on_small_sizes(capsys):
    code = cli.main(["parity", "--steps", "6", "--features", "5", "--units", "4", "--batch", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 failed" in out and "numpy" in out


def test_bad_sizes_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["parity", "--units", "0"])
    assert e.value.code == 2

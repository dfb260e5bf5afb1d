"""``rnn-xframework parity``: exit 0 / 1 / 2, one-line errors, JSON, golden write and check."""

import json
import subprocess
import sys

import pytest
from conftest import require

from rnn_xframework import cli, transfer
from rnn_xframework.parity.problem import orderings_for
from rnn_xframework.testing import GOLDEN_DIR

SMALL = ["--batch", "2", "--steps", "4", "--features", "3", "--units", "5", "--layers", "2", "--plain"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backends", "jax"], "unknown backend 'jax'"),
        (["--batch", "0"], "argument --batch: must be a positive integer, got 0"),
        (["--units", "-3"], "argument --units: must be a positive integer"),
        (["--steps", "x"], "argument --steps: must be a positive integer, got 'x'"),
        (["--dtypes", "float16"], "argument --dtypes: invalid choice"),
        (["--checks", "sideways"], "argument --checks: invalid choice"),
        (["--orderings", "sideways"], "unknown ordering"),
        (["golden"], "one of the arguments --write --check is required"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        code = cli.main(["parity", *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_cuda_without_a_gpu_exits_2(capsys):
    require("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(["parity", "--devices", "cuda", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' is not available here (torch.cuda.is_available() is False)" in err
    assert err.count("\n") == 1


def test_console_entry_point_in_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "rnn_xframework", "parity", "--backends", "mxnet"], capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stdout == ""
    assert (
        out.stderr.startswith("rnn-xframework parity: error: unknown backend 'mxnet'") and out.stderr.count("\n") == 1
    )


def test_passing_run_exits_0_and_writes_json(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert cli.main(["parity", "--backends", "numpy", *SMALL, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rnn_xframework parity (batch 2, 4 steps, 3 features, 5 units, 2 layers)" in out
    data = json.loads(path.read_text())
    checks = ("forward", "backward", "train:sgd", "train:adam", "masked", "masked:wide", "masked:grad")
    rows = [line for line in out.splitlines() if line.split(" ", 1)[0] in checks]
    assert data["passed"] and len(data["results"]) == len(rows) > 0


def test_failing_run_exits_1(monkeypatch, capsys, tmp_path):
    require("torch")
    real = transfer.transfer_weights

    def perturbed(src, dst):
        real(src, dst)
        weights = dst.get_weights()
        weights[0][0, 0] += 1e-4  # a kernel weight, 10 x the float32 forward tolerance
        dst.set_weights(weights)
        return dst

    monkeypatch.setattr(transfer, "transfer_weights", perturbed)
    path = tmp_path / "r.json"
    assert (
        cli.main(
            [
                "parity",
                "--backends",
                "torch",
                "--cells",
                "SimpleRNNCell",
                "--checks",
                "forward",
                *SMALL,
                "--json",
                str(path),
            ]
        )
        == 1
    )
    assert "FAIL" in capsys.readouterr().out
    data = json.loads(path.read_text())
    rows = 2 * len(orderings_for("torch", "cpu"))  # both dtypes x (timestep, layer, each fast compile method)
    assert not data["passed"] and data["counts"]["FAIL"] == len(data["results"]) == rows


def test_golden_check_of_the_shipped_files(capsys):
    require("torch")
    assert cli.main(["parity", "golden", "--check", str(GOLDEN_DIR), "--backends", "torch", "--plain"]) == 0
    assert "golden: SimpleRNNCell-float32.npz" in capsys.readouterr().out


def test_golden_write_then_check(tmp_path, capsys):
    require("tensorflow")
    argv = ["parity", "golden", "--write", str(tmp_path), "--dtypes", "float64", *SMALL]
    assert cli.main(argv) == 0
    assert "SimpleRNNCell-float64.npz" in capsys.readouterr().out
    assert cli.main(["parity", "golden", "--check", str(tmp_path), "--backends", "numpy", "--plain"]) == 0


def test_golden_check_of_a_missing_directory_exits_2(tmp_path, capsys):
    assert cli.main(["parity", "golden", "--check", str(tmp_path / "nowhere")]) == 2
    assert "no golden .npz files" in capsys.readouterr().err


# --- issue 18: outputs checked before the run, empty and interrupted runs, atomic reports ---------
TINY = ["--backends", "numpy", "--cells", "SimpleRNNCell", "--dtypes", "float64", "--checks", "forward", *SMALL]


def never_run(*args, **kwargs):  # pragma: no cover - the defect: the run started
    raise AssertionError("the run started before its flags were checked")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--json", "missing_dir/r.json"], "argument --json: cannot write 'missing_dir/r.json': directory"),
        (["--json", ""], "argument --json: needs a file path, got ''"),
        (["--json", "."], "argument --json: '.' is a directory"),
        (["--seed", "-5"], "argument --seed: must be a non-negative integer, got -5"),
        (["--seed", "x"], "argument --seed: must be a non-negative integer, got 'x'"),
    ],
)
def test_outputs_and_seed_are_checked_before_the_run(monkeypatch, capsys, tmp_path, argv, message):
    """Issue 18: ``--json missing_dir/r.json`` ran for minutes, then died with a traceback and exit 1;
    ``--seed -5`` gave a traceback; ``--json ""`` wrote nothing, silently. Now: exit 2, one line."""
    from rnn_xframework.parity import matrix

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(matrix, "_run_problem", never_run)
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(cli.main(["parity", *TINY, *argv]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_run_that_compares_nothing_exits_2(capsys, tmp_path):
    """Issue 18: ``--orderings cudagraph`` on a CPU ran 0 checks and exited 0. An empty run fails:
    exit 2, one line saying why, and its JSON report says ``"passed": false``."""
    require("torch")
    path = tmp_path / "r.json"
    argv = ["parity", *TINY, "--backends", "torch", "--orderings", "cudagraph", "--devices", "cpu", "--json", str(path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("rnn-xframework parity: error: no comparison ran"), err
    data = json.loads(path.read_text())
    assert data["passed"] is False and data["counts"]["PASS"] == data["counts"]["FAIL"] == 0


@pytest.mark.parametrize("with_json", [True, False])
def test_an_interrupted_run_says_so_and_leaves_no_current_looking_report(monkeypatch, capsys, tmp_path, with_json):
    """Ctrl-C in the second group: exit 130, a line saying so, and the report at ``--json`` is the
    finished groups' rows marked ``"interrupted": true, "passed": false`` (a stale report from an
    earlier run is replaced, never left looking current)."""
    from rnn_xframework.parity import matrix

    real, calls = matrix._run_problem, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(matrix, "_run_problem", interrupted_second)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"passed": True, "stale": True}))
    argv = ["parity", *TINY, "--cells", "SimpleRNNCell", "GRUCell", *(["--json", str(path)] if with_json else [])]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.splitlines()
    assert "interrupted after 1 of 2 groups" in err[-1], err
    if with_json:
        data = json.loads(path.read_text())
        assert data["interrupted"] is True and data["passed"] is False and "stale" not in data
        assert data["results"] and {r["cell"] for r in data["results"]} == {"SimpleRNNCell"}


def test_the_report_is_written_atomically(monkeypatch, capsys, tmp_path):
    """Written to a temporary file next to the destination, then renamed over it; a failed write
    leaves the old report as it was."""
    import os

    path = tmp_path / "r.json"
    renames = []
    real = os.replace

    def spy(src, dst, *a, **k):
        renames.append((os.path.dirname(src), os.fspath(dst)))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", spy)
    assert cli.main(["parity", *TINY, "--json", str(path)]) == 0
    assert renames == [(str(tmp_path), str(path))] and json.loads(path.read_text())["passed"] is True

    def broken(src, dst, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    before = path.read_bytes()
    capsys.readouterr()
    assert cli.main(["parity", *TINY, "--json", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()  # the progress lines, then one error line
    assert err[-1].startswith(f"rnn-xframework parity: error: parity --json: cannot write {str(path)!r}: No space")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["r.json"]

"""``rnn-xframework parity``: exit 0 / 1 / 2, one-line errors, JSON, golden write and check."""

import json
import subprocess
import sys

import pytest
from conftest import require

from rnn_xframework import cli, transfer
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
    rows = [
        line for line in out.splitlines() if line.split(" ", 1)[0] in ("forward", "backward", "train:sgd", "train:adam")
    ]
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
    assert not data["passed"] and data["counts"]["FAIL"] == len(data["results"]) == 6


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

"""scripts/gpu_checks.py, the one script that runs every GPU check: its CPU dry run works end to
end and ends with the summary table; asking for CUDA without a GPU is one clear line, exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_checks.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def test_cpu_dry_run_ends_with_the_summary(tmp_path):
    require("torch")
    out = run("--device", "cpu", "--quick", "--bench", "--json-dir", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = out.stdout[out.stdout.rindex("SUMMARY (device cpu)") :]
    for step in ("parity matrix", "golden check", "pytest -m cuda", "kernel tests", "bench"):
        assert step in summary
    assert "FAIL" not in summary
    kernel_line = next(line for line in summary.splitlines() if line.startswith("kernel tests"))
    assert "passed" in kernel_line  # the kernel tests ran (interpreted), not only skipped
    bench = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert {(r["method"], r["workload"], r["grad"]) for r in bench["results"]} == {
        ("torch nn.RNN", w, g) for w in ("2x3x4x5", "2x3x4x5 LSTM", "2x3x4x5 GRU") for g in (False, True)
    }
    assert "skipped 'xf torch triton': no cpu support" in bench["notes"]


def test_cuda_without_a_gpu_is_one_line_exit_2():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = run()
    assert out.returncode == 2
    assert out.stderr.strip() == "gpu_checks: error: torch sees no CUDA device; use --device cpu for a dry run"

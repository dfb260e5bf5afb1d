#!/usr/bin/env python
"""The whole CUDA part of the parity suite in one go, with one summary table printed last.

    python scripts/gpu_checks.py                 # on a machine with a CUDA GPU seen by torch
    python scripts/gpu_checks.py --bench         # ... and the CUDA benchmark against cuDNN
    python scripts/gpu_checks.py --device cpu    # dry run of the same steps on the CPU
    python scripts/gpu_checks.py --device cpu --quick --bench  # the same, tiny sizes

Steps: (1) the parity matrix on the device at the tutorial's sizes (torch; forward against the
NumPy reference, backward and training against TensorFlow, or torch on the CPU where TensorFlow
is missing), (2) the shipped golden vectors (recorded with TensorFlow) on the device, (3)
``pytest -m cuda`` over tests/ and rnn_xframework/testing, (4) the Triton kernel and CUDA-graph
tests (tests/test_triton.py, tests/test_triton_masked.py, tests/test_cudagraph.py: compiled on CUDA;
in Triton's interpreter on the CPU dry run), both skipped with a note when pytest is not installed, and with ``--bench``
(5) ``rnn-xframework bench --device cuda --grad --cells all`` for cuDNN ``nn.RNN``/``nn.LSTM``/
``nn.GRU``, the same graphed, and ``xf.compile``'s ``triton`` and ``cudagraph`` at W1-W3, its
table and JSON written to ``--json-dir`` or, on CUDA, ``benchmarks/results/``. Works without
TensorFlow and without rich (plain-text tables; the bench step needs rich and is skipped with a
note without it). TF32 is turned off for the parity runs and restored afterwards; the report says
so. Exit status 1 if anything failed. Sized to finish in under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's rnn_xframework, whether or not it is installed

from rnn_xframework import parity  # noqa: E402
from rnn_xframework.testing import GOLDEN_DIR  # noqa: E402

QUICK = parity.Sizes(batch=2, steps=5, features=3, units=4, layers=2)


def run_matrix(device: str, json_dir: Path | None, sizes: parity.Sizes) -> tuple[str, str]:
    report = parity.run(parity.Config(sizes=sizes, devices=[device]))
    return _show("parity matrix", report, json_dir)


def run_golden(device: str, json_dir: Path | None) -> tuple[str, str]:
    report = parity.check_golden(GOLDEN_DIR, devices=[device])
    return _show("golden check", report, json_dir)


def _show(name: str, report: parity.Report, json_dir: Path | None) -> tuple[str, str]:
    print(parity.format_plain(report), end="\n\n", flush=True)
    if json_dir is not None:
        report.write_json(json_dir / f"{name.replace(' ', '_')}.json")
    status = "PASS" if report.passed else "FAIL"
    return status, report.verdict()


KERNEL_TESTS = ["tests/test_triton.py", "tests/test_triton_masked.py", "tests/test_cudagraph.py"]
QUICK_KERNEL_TESTS = (
    "outputs_match and b1t1 or split_kernels_match and float32-LSTM or capture_cache_logic"
    " or right_padded_gradients_match and LSTM"
)
"""The dry run's share of the kernel tests (interpreted kernels are slow)."""
BENCH_METHODS = "torch nn.RNN,torch nn.RNN graphed,xf torch triton,xf torch cudagraph"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def run_pytest(device: str) -> tuple[str, str]:
    return _pytest(device, ["-m", "cuda", "tests", "rnn_xframework/testing"])


def run_kernel_tests(device: str, quick: bool) -> tuple[str, str]:
    return _pytest(device, [*KERNEL_TESTS, *(["-k", QUICK_KERNEL_TESTS] if quick else [])])


def _pytest(device: str, args: list[str]) -> tuple[str, str]:
    if importlib.util.find_spec("pytest") is None:
        return "SKIP", "pytest is not installed here: pip install pytest to run the tests"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    print(out.stdout[-6000:], out.stderr[-2000:], sep="\n", flush=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"pytest exited {out.returncode}"
    if out.returncode == 5:  # nothing selected: no CUDA test collected
        return "SKIP", summary
    if device != "cuda" and out.returncode == 0:
        return "PASS", summary + " (CUDA tests skip without a GPU)"
    return ("PASS" if out.returncode == 0 else "FAIL"), summary


def run_bench(device: str, quick: bool, json_dir: Path | None) -> tuple[str, str]:
    """The CUDA benchmark (on the CPU dry run: a tiny workload; the CUDA-only methods are
    skipped with a note). Its table and JSON go to ``json_dir`` or ``benchmarks/results/``."""
    if importlib.util.find_spec("rich") is None:
        return "SKIP", "the bench needs rich: pip install rich"
    out_dir = json_dir if json_dir is not None else (ROOT / "benchmarks" / "results" if device == "cuda" else None)
    workloads = "2x3x4x5" if quick else "W1,W2,W3"
    cmd = [sys.executable, "-m", "rnn_xframework", "bench", "--device", device, "--grad", "--cells", "all"]
    cmd += ["--workloads", workloads, "--methods", BENCH_METHODS, "--gemm", "0"]
    cmd += ["--budget-scale", "0.05" if quick else "0.2"]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd += ["--json", str(out_dir / f"bench_{device}.json"), "--table", str(out_dir / f"bench_{device}.txt")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    print(out.stdout[-20000:], out.stderr[-2000:], sep="\n", flush=True)
    where = f"; table and JSON in {out_dir}" if out_dir is not None else ""
    if out.returncode != 0:
        return "FAIL", f"bench exited {out.returncode}{where}"
    return "PASS", f"{workloads} x SimpleRNN/LSTM/GRU, fwd and fwd+bwd{where}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default), or cpu for a dry run")
    ap.add_argument("--json-dir", type=Path, help="also write each report as JSON into this directory")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for the matrix (a smoke test of this script)")
    ap.add_argument("--bench", action="store_true", help="also run the CUDA benchmark against cuDNN")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_checks: error: torch sees no CUDA device; use --device cpu for a dry run", file=sys.stderr)
            return 2
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    if args.json_dir is not None:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    steps = [
        ("parity matrix", lambda: run_matrix(args.device, args.json_dir, QUICK if args.quick else parity.Sizes())),
        ("golden check", lambda: run_golden(args.device, args.json_dir)),
        ("pytest -m cuda", lambda: run_pytest(args.device)),
        ("kernel tests", lambda: run_kernel_tests(args.device, args.quick)),
    ]
    if args.bench:
        steps.append(("bench", lambda: run_bench(args.device, args.quick, args.json_dir)))
    for name, step in steps:
        start = time.perf_counter()
        try:
            status, detail = step()
        except Exception as e:  # a crash is a failure of that step, reported in the table
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
        rows.append((name, status, f"{time.perf_counter() - start:.1f} s", detail))
    head = ("step", "result", "time", "detail")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "  ".join("-" * w for w in widths)
    print(
        f"SUMMARY (device {args.device})",
        rule,
        fmt.format(*head),
        rule,
        *(fmt.format(*r) for r in rows),
        rule,
        sep="\n",
    )
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

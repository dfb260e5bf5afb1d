#!/usr/bin/env python
"""The whole CUDA part of the parity suite in one go, with one summary table printed last.

    python scripts/gpu_checks.py                 # on a machine with a CUDA GPU seen by torch
    python scripts/gpu_checks.py --device cpu    # dry run of the same steps on the CPU
    python scripts/gpu_checks.py --device cpu --quick   # the same with a tiny parity matrix

Steps: (1) the parity matrix on the device at the tutorial's sizes (torch; forward against the
NumPy reference, backward and training against TensorFlow, or torch on the CPU where TensorFlow
is missing), (2) the shipped golden vectors (recorded with TensorFlow) on the device, (3)
``pytest -m cuda`` over tests/ and rnn_xframework/testing, skipped with a note when pytest is not
installed. Works without TensorFlow and without rich (plain-text tables). TF32 is turned off
for the parity runs and restored afterwards; the report says so. Exit status 1 if anything failed.
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


def run_pytest(device: str) -> tuple[str, str]:
    if importlib.util.find_spec("pytest") is None:
        return "SKIP", "pytest is not installed here: pip install pytest to run `pytest -m cuda`"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "-p",
        "no:cacheprovider",
        "tests",
        "rnn_xframework/testing",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    print(out.stdout[-6000:], out.stderr[-2000:], sep="\n", flush=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"pytest exited {out.returncode}"
    if out.returncode == 5:  # nothing selected: no CUDA test collected
        return "SKIP", summary
    if device != "cuda" and out.returncode == 0:
        return "PASS", summary + " (CUDA tests skip without a GPU)"
    return ("PASS" if out.returncode == 0 else "FAIL"), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default), or cpu for a dry run")
    ap.add_argument("--json-dir", type=Path, help="also write each report as JSON into this directory")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for the matrix (a smoke test of this script)")
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
    ]
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

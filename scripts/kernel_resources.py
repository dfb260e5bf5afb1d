#!/usr/bin/env python
"""Compile every Triton kernel configuration ``xf.compile(rnn, "triton")`` launches for an H100
(sm_90), without a GPU, and print a table per configuration: registers per thread, spill
stores/loads, stack frame, shared memory, ``num_warps``, PTX and cubin size, and which cases
(size, cell, dtype, mode) launch it. Configurations that fail to compile, exceed an H100 block or
spill registers are listed under "Findings".

    python scripts/kernel_resources.py                      # print the table
    python scripts/kernel_resources.py --out benchmarks/results/kernel_resources_sm90.md

Needs torch and triton with its NVIDIA backend (the CPU wheel has it: it ships ``ptxas`` and
``cuobjdump``), no GPU. The launches, sizes and compile path are those of
:mod:`rnn_xframework.bench.kernel_resources` (which ``tests/test_triton_compile.py`` checks).
The figures come from the installed triton (``ptxas`` and ``cuobjdump`` from its wheel); the
GPU machine of issue 9 runs triton 3.6, whose compiler may allocate differently.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's rnn_xframework, whether or not it is installed


def _users(cases: list) -> str:
    """``W1 LSTM float32 training; ...``, the sizes of one cell/dtype/mode folded together."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for c in cases:
        groups.setdefault((c.cell, c.dtype, c.mode), []).append(c.size)
    return "; ".join(f"{'/'.join(sizes)} {cell} {dtype} {mode}" for (cell, dtype, mode), sizes in groups.items())


def _extremes(rows: list) -> list[str]:
    """The most shared memory and the most registers per thread among the compiled rows."""
    if not rows:
        return []
    out = []
    for what, key in (("shared memory", lambda r: r[2].shared), ("registers per thread", lambda r: r[2].registers)):
        config, users, r = max(rows, key=key)
        out.append(f"- most {what}: {key((config, users, r))}, `{config.kernel}` {config.dtype} ({config.label()}), "
                   f"used by {_users(users)}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)

    from rnn_xframework.bench import kernel_resources as kr

    missing = kr.toolchain_missing()
    if missing:
        print(f"kernel_resources: cannot compile for sm_90: {missing}", file=sys.stderr)
        return 2
    import triton

    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # a fresh cache: every configuration compiled here
        started = time.perf_counter()
        configs = kr.all_configs()
        rows, findings = [], []
        for config, users in configs.items():
            try:
                r = kr.resources(kr.compile_config(config))
            except Exception as e:
                findings.append(f"**fails to compile**: `{config.kernel}` ({config.label()}), used by {_users(users)}: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")  # fmt: skip
                continue
            rows.append((config, users, r))
            for problem in r.problems():
                findings.append(f"`{config.kernel}` ({config.label()}): {problem}; used by {_users(users)}")
        seconds = time.perf_counter() - started

    head = (
        "| kernel | dtype | constexprs; options | registers/thread | spill stores B | spill loads B | stack B "
        "| shared B | warps | PTX KiB | cubin KiB | used by |"
    )
    lines = [
        "# Triton kernels compiled for sm_90 (H100), without a GPU",
        "",
        f"`python scripts/kernel_resources.py --out ...`: triton {triton.__version__} (its ptxas and cuobjdump), "
        f"target `{kr.TARGET}`, enable_fp_fusion={kr.FP_FUSION}; {len(configs)} distinct configurations from "
        f"{len(kr.cases())} cases (sizes {', '.join(f'{k} {v}' for k, v in kr.SIZES.items())} as "
        "(batch, steps, features, units); cells, float32/float64, modes "
        f"{'; '.join(kr.MODES)}); {seconds:.0f} s. Registers and spills per thread (ptxas -v; registers "
        "equal to the cubin's), shared memory per block (what Triton's launch requests; limit "
        f"{kr.SHARED_LIMIT}). The GPU machine runs triton 3.6: its figures may differ.",
        "",
        "## Findings",
        "",
        *([f"- {f}" for f in findings] or ["- none: every configuration compiles, fits a block and does not spill"]),
        *_extremes(rows),
        "",
        "## Per configuration",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for config, users, r in rows:
        lines.append(
            f"| {config.kernel} | {config.dtype} | {config.label()} | {r.registers} | {r.spill_stores} "
            f"| {r.spill_loads} | {r.stack} | {r.shared} | {r.num_warps} | {r.ptx_bytes / 1024:.0f} "
            f"| {r.cubin_bytes / 1024:.0f} | {_users(users)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if any(f.startswith("**fails") for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())

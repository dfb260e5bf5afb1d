"""Command line of the benchmark suite: orchestrator and worker entry point.

Orchestrator (default)::

    rnn-xframework bench                       # W1-W3, all peers, forward
    rnn-xframework bench --grad --grad-methods "torch nn.RNN,keras SimpleRNN xla"
    rnn-xframework bench --quick                # W1 only, few repeats (< ~60 s)
    rnn-xframework bench --device cuda --grad --cells all   # every cell type against cuDNN
    rnn-xframework bench --cells LSTM,GRU --mask both       # random lengths, and unmasked alongside
    rnn-xframework bench --cells LSTM --bidirectional       # both directions, each layer
    rnn-xframework bench --json out.json --table out.txt [--plot out.png]
    rnn-xframework bench --plugin mypkg.bench_methods   # extra registered methods

Worker (started by the orchestrator, one framework per process)::

    rnn-xframework bench --worker torch --workload W1 \\
        --methods "torch nn.RNN,torch RNNCell loop" --json -

This module imports no framework; workers import them lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnn_xframework.bench.methods import PlanError
from rnn_xframework.bench.orchestrate import build_plan, run_plan
from rnn_xframework.bench.prefault import prefault
from rnn_xframework.bench.tables import (
    output_console,
    render_all,
    render_text,
    require_matplotlib,
    write_json,
    write_plot,
)
from rnn_xframework.bench.timing import Budget
from rnn_xframework.bench.worker import (
    EXIT_DEVICE_UNAVAILABLE,
    WorkerJob,
    load_plugins,
    run_job,
    write_doc,
)
from rnn_xframework.bench.workloads import parse_workload


def build_parser() -> argparse.ArgumentParser:
    """All options of the orchestrator and of the worker mode."""
    p = argparse.ArgumentParser(
        prog="rnn-xframework bench",
        description="Time framework peers of a two-layer RNN stack, one subprocess per framework.",
    )
    p.add_argument(
        "--workloads",
        default="W1,W2,W3",
        help="comma list of W1/W2/W3 or BxTxFxU (batch x steps x features x units)",
    )
    p.add_argument(
        "--cells",
        default="SimpleRNN",
        help="comma list of SimpleRNN, LSTM, GRU, or all: the cell type of the two-layer stack",
    )
    variants = ("off", "on", "both")
    p.add_argument(
        "--mask",
        nargs="?",
        const="on",
        default="off",
        choices=variants,
        help="masked workloads: random lengths (each drawn uniformly in [T/2, T], seeded), right-padded; "
        "torch peers on a PackedSequence, Keras and ours given mask=. 'both': unmasked ones too (default: off)",
    )
    p.add_argument(
        "--bidirectional",
        nargs="?",
        const="on",
        default="off",
        choices=variants,
        help="bidirectional workloads: both directions in each layer (nn.RNN(bidirectional=True), "
        "keras.layers.Bidirectional, ours). 'both': unidirectional ones too (default: off)",
    )
    p.add_argument(
        "--methods",
        default="",
        help="comma list of registered method names (default: all)",
    )
    p.add_argument(
        "--grad",
        action="store_true",
        help="also time forward+backward (sum of outputs w.r.t. inputs and weights)",
    )
    p.add_argument(
        "--grad-methods",
        default="",
        help="methods to time with --grad (default: all that support it)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--baseline", default="torch nn.RNN", help="method for the speedup column")
    p.add_argument(
        "--gemm",
        type=int,
        default=2048,
        metavar="N",
        help="n for the fp32 GEMM peak (0 disables)",
    )
    p.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiply every per-measurement time budget",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="sanity run: W1 only, short budgets, GEMM n=1024",
    )
    p.add_argument("--json", default="", metavar="PATH", help="write results JSON ('-' = stdout)")
    p.add_argument("--table", default="", metavar="PATH", help="write the printed tables as text")
    p.add_argument("--plot", default="", metavar="PNG", help="GFLOP/s bar chart (needs matplotlib)")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE to register more methods (repeatable)",
    )
    p.add_argument(
        "--prefault-gb",
        type=float,
        default=0.0,
        metavar="GIB",
        help="touch GIB GiB of memory once before running (fresh VMs fault pages in "
        "lazily; see rnn_xframework/bench/prefault.py)",
    )
    p.add_argument(
        "--from-json",
        default="",
        metavar="PATH",
        help="re-render a saved results JSON instead of running (--table/--plot apply)",
    )
    p.add_argument("--list", action="store_true", help="list registered methods and exit")
    # Worker mode: the orchestrator's own flags for its subprocesses, not for users (hidden from --help).
    hidden = argparse.SUPPRESS
    p.add_argument("--worker", choices=("torch", "tensorflow", "numpy"), help=hidden)
    p.add_argument("--workload", default="", help=hidden)
    p.add_argument("--cell", default="SimpleRNNCell", help=hidden)
    p.add_argument("--budget-s", type=float, default=Budget.budget_s, help=hidden)
    p.add_argument("--min-repeats", type=int, default=Budget.min_repeats, help=hidden)
    p.add_argument("--max-repeats", type=int, default=Budget.max_repeats, help=hidden)
    p.add_argument("--warmup-s", type=float, default=Budget.warmup_s, help=hidden)
    return p


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def worker_main(args: argparse.Namespace) -> int:
    """``--worker FRAMEWORK``: measure, write JSON, exit 3 if the device is missing."""
    budget = Budget(args.budget_s, args.min_repeats, args.max_repeats, args.warmup_s)
    job = WorkerJob(
        framework=args.worker,
        methods=_split(args.methods),
        device=args.device,
        budget=budget,
        workload=parse_workload(args.workload).variant(
            args.cell, bidirectional=args.bidirectional == "on", masked=args.mask == "on"
        )
        if args.workload
        else None,
        grad=args.grad,
        gemm_n=0 if args.workload else args.gemm,
    )
    doc = run_job(job)
    write_doc(doc, args.json or "-")
    return EXIT_DEVICE_UNAVAILABLE if "fatal" in doc else 0


def list_methods() -> None:
    """Print the registries."""
    from rnn_xframework.bench.methods import GEMM_METHODS, METHODS

    for m in METHODS.values():
        grad = "grad" if m.supports_grad else "fwd only"
        cells = ",".join(c.removesuffix("Cell") for c in m.cells)
        variants = ",".join(v for v, ok in (("masked", m.masks), ("bi", m.bidirectional)) if ok) or "-"
        print(
            f"{m.name:32s} {m.framework:11s} {grad:9s} devices={','.join(m.devices):9s} "
            f"cells={cells:18s} variants={variants}"
        )
    for g in GEMM_METHODS.values():
        print(f"{g.name:32s} {g.framework:11s} {'gemm':9s} devices={','.join(g.devices)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rnn-xframework bench``."""
    args = build_parser().parse_args(argv)
    load_plugins(args.plugin)
    if args.worker:
        return worker_main(args)
    if args.list:
        list_methods()
        return 0
    try:
        if args.plot:
            require_matplotlib()
        plan = None if args.from_json else build_plan(args)
    except PlanError as e:
        print(f"rnn-xframework bench: error: {e}", file=sys.stderr)
        return 2
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        workloads = [str(w["name"]) for w in doc["workloads"]]
    else:
        assert plan is not None
        if args.prefault_gb > 0:
            seconds = prefault(args.prefault_gb)
            plan.notes.append(f"pre-faulted {args.prefault_gb:g} GiB in {seconds:.1f} s")
        doc = run_plan(plan, argv if argv is not None else sys.argv[1:])
        if "fatal" in doc:
            print(f"error: {doc['fatal']}", file=sys.stderr)
            return EXIT_DEVICE_UNAVAILABLE
        workloads = [w.name for w in plan.workloads]
    render_all(output_console(), doc, workloads, args.baseline)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(render_text(doc, workloads, args.baseline))
    if args.json and not args.from_json:
        write_json(doc, Path(args.json))
    if args.plot:
        write_plot(doc, workloads, Path(args.plot))
    return 1 if doc.get("failures") else 0


if __name__ == "__main__":
    raise SystemExit(main())

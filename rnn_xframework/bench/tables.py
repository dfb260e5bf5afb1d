"""Rendering of collected results: rich tables, JSON file and optional PNG plot."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnn_xframework.bench.methods import PlanError

Record = dict[str, object]


def row_label(record: Record) -> str:
    """Table row name: the method, with ``[fwd+bwd]`` for gradient runs."""
    return f"{record['method']} [fwd+bwd]" if record.get("grad") else str(record["method"])


def num(record: Record, key: str) -> float:
    """``record[key]`` as a float (JSON numbers only)."""
    value = record[key]
    if not isinstance(value, int | float):
        raise TypeError(f"{key}={value!r} is not a number")
    return float(value)


def _records(doc: dict[str, object], key: str) -> list[Record]:
    value = doc.get(key, [])
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _strings(doc: dict[str, object], key: str) -> list[str]:
    value = doc.get(key, [])
    return [str(v) for v in value] if isinstance(value, list) else []


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def timed(record: Record) -> bool:
    """Whether the record has timings: not an ``error`` nor an ``unsupported`` one (a method that
    refused the workload, e.g. a compiled one given ``mask=``)."""
    return "error" not in record and "unsupported" not in record


def _index(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    return {(row_label(r), str(r["workload"])): r for r in records}


def results_table(records: list[Record], workloads: list[str], baseline: str, title: str) -> Table:
    """Rows = methods, columns per workload: median ms, IQR ms, GFLOP/s, speedup."""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("method", no_wrap=True)
    for name in workloads:
        table.add_column(f"{name} ms", justify="right")
        table.add_column(f"{name} IQR", justify="right")
        table.add_column(f"{name} GF/s", justify="right")
        table.add_column(f"{name} x", justify="right")
    cells = _index(records)
    labels = list(dict.fromkeys(row_label(r) for r in records))
    for label in labels:
        row = [escape(label)]
        grad = label.endswith("[fwd+bwd]")
        base_label = f"{baseline} [fwd+bwd]" if grad else baseline
        for name in workloads:
            rec = cells.get((label, name))
            if rec is None:
                row += ["", "", "", ""]
            elif not timed(rec):
                row += ["error" if "error" in rec else "unsupported", "", "", ""]
            else:
                base = cells.get((base_label, name))
                ok = base is not None and timed(base)
                speedup = f"{num(base, 'median_s') / num(rec, 'median_s'):.2f}" if ok else "-"
                iqr = num(rec, "q3_s") - num(rec, "q1_s")
                gflops = f"{num(rec, 'gflops'):.1f}"
                row += [_ms(num(rec, "median_s")), _ms(iqr), gflops, speedup]
        table.add_row(*row)
    return table


def details_table(records: list[Record], workloads: list[str]) -> Table:
    """First call (``compile_s``) and how many samples x calls were timed."""
    table = Table(
        title="first call (compile_s, s), fastest sample (min ms), samples x calls/sample",
        title_justify="left",
    )
    table.add_column("method", no_wrap=True)
    for name in workloads:
        table.add_column(f"{name} first s", justify="right")
        table.add_column(f"{name} min ms", justify="right")
        table.add_column(f"{name} n", justify="right")
    cells = _index(records)
    for label in dict.fromkeys(row_label(r) for r in records):
        row = [escape(label)]
        for name in workloads:
            rec = cells.get((label, name))
            if rec is None or not timed(rec):
                row += ["", "", ""]
            else:
                first = f"{num(rec, 'compile_s'):.3g}"
                fastest = _ms(num(rec, "min_s"))
                row += [first, fastest, f"{rec['repeats']}x{rec['number']}"]
        table.add_row(*row)
    return table


def gemm_table(records: list[Record]) -> Table:
    """One row per GEMM method; the caption states the measured peak."""
    table = Table(title="fp32 GEMM (n x n @ n x n)", title_justify="left")
    for column in ("method", "n", "median ms", "IQR ms", "GFLOP/s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for rec in records:
        if "error" in rec:
            table.add_row(escape(str(rec["method"])), str(rec["n"]), "error", "", "")
            continue
        iqr = num(rec, "q3_s") - num(rec, "q1_s")
        table.add_row(
            escape(str(rec["method"])),
            str(rec["n"]),
            _ms(num(rec, "median_s")),
            _ms(iqr),
            f"{num(rec, 'gflops'):.1f}",
        )
    peak = gemm_peak(records)
    if peak is not None:
        table.caption = f"measured fp32 GEMM peak: {peak[1]:.1f} GFLOP/s ({peak[0]})"
    return table


def gemm_peak(records: list[Record]) -> tuple[str, float] | None:
    """``(method, GFLOP/s)`` of the fastest successful GEMM, if any."""
    ok = [r for r in records if "error" not in r]
    if not ok:
        return None
    best = max(ok, key=lambda r: num(r, "gflops"))
    return str(best["method"]), num(best, "gflops")


def render_all(
    console: Console,
    doc: dict[str, object],
    workloads: list[str],
    baseline: str,
) -> None:
    """Print header, result tables, GEMM table and errors to ``console``."""
    records = _records(doc, "results")
    gemm = _records(doc, "gemm")
    for line in _strings(doc, "header"):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if records:
        legend = (
            f"two-layer stacks (SimpleRNN unless the workload names LSTM or GRU; 'bi' = bidirectional; "
            f"'masked' = random lengths in [T/2, T], right-padded, torch peers on a PackedSequence), "
            f"float32, device={doc['device']}; median over samples; "
            f"IQR = q3-q1; x = speedup vs '{baseline}' (baseline ms / method ms)"
        )
        console.print(legend, highlight=False, markup=False, soft_wrap=True)
        console.print(results_table(records, workloads, baseline, "results"))
        console.print(details_table(records, workloads))
    if gemm:
        console.print(gemm_table(gemm))
    for note in _strings(doc, "notes"):
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    for rec in [*records, *gemm]:
        for kind in ("unsupported", "error"):
            if kind in rec:
                where = rec.get("workload", f"n={rec.get('n')}")
                line = f"{kind}: {row_label(rec)} @ {where}: {rec[kind]}"
                console.print(line, highlight=False, markup=False, soft_wrap=True)


def output_console() -> Console:
    """stdout: as wide as the terminal on one; elsewhere (a pipe, a file) wide enough that no table
    is cut and no line wrapped (a Console's default off a terminal is 80 columns)."""
    console = Console()
    return console if console.is_terminal else Console(width=UNWRAPPED)


UNWRAPPED = 1000
"""Columns of a console that must not wrap: wider than any table or line of the report."""


def render_text(doc: dict[str, object], workloads: list[str], baseline: str) -> str:
    """The same report as plain text, wide enough not to wrap (for files)."""
    console = Console(file=io.StringIO(), width=UNWRAPPED, record=True, color_system=None)
    render_all(console, doc, workloads, baseline)
    return console.export_text()


def write_json(doc: dict[str, object], path: Path) -> None:
    """Write the whole result document, pretty-printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def require_matplotlib() -> None:
    """Fail early, with a clear message, if ``--plot`` cannot work."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlanError(
            "--plot needs matplotlib, which is not installed in this environment; install it yourself or drop --plot"
        )


def write_plot(doc: dict[str, object], workloads: list[str], path: Path) -> None:
    """Grouped bar chart of GFLOP/s per method and workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _records(doc, "results")
    cells = _index(records)
    labels = list(dict.fromkeys(row_label(r) for r in records))
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(labels) * len(workloads) + 2))
    height = 0.8 / max(len(workloads), 1)
    for j, name in enumerate(workloads):
        values = []
        for label in labels:
            rec = cells.get((label, name))
            values.append(num(rec, "gflops") if rec is not None and timed(rec) else 0.0)
        ys = [i + j * height for i in range(len(labels))]
        ax.barh(ys, values, height=height, label=name)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)

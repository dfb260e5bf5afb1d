"""Results, the stated tolerances, and the table / JSON that show them.

The table uses ``rich`` when it is installed and a plain-text layout otherwise (the same
columns); nothing here needs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Tolerance:
    """Largest error accepted, per check kind.

    ``forward`` bounds the max absolute difference of outputs and final states (all in
    ``[-1, 1]`` for tanh cells). ``gradient`` and ``training`` bound a *scale-relative* error:
    ``max|got - ref| / max|ref|`` per tensor (each gradient, each weight's update), the worst
    tensor reported.
    """

    forward: float
    gradient: float
    training: float


# (dtype, device) -> Tolerance. Stated once, never tuned to pass; docs/parity.md says why.
_F32 = Tolerance(forward=1e-5, gradient=1e-4, training=1e-4)
_F64 = Tolerance(forward=1e-12, gradient=1e-10, training=1e-10)
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "cpu"): _F32,
    ("float64", "cpu"): _F64,
    # With TF32 off (parity runs turn it off) CUDA computes in true float32/float64.
    ("float32", "cuda"): _F32,
    ("float64", "cuda"): _F64,
}
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")


@dataclass
class Result:
    """One comparison: ``backend``/``ordering``/``device`` against ``reference``.

    ``max_abs`` is the largest absolute difference; ``max_rel`` the worst tensor's
    ``max|got - ref| / max|ref|``. ``metric`` says which of the two meets ``tolerance``.
    """

    check: str
    cell: str
    backend: str
    ordering: str
    device: str
    dtype: str
    reference: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    metric: str = "abs"
    tolerance: float = float("nan")
    status: str = SKIP
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(self).items()}


@dataclass
class Report:
    """Everything one run produced: rows, what was set for it, and what it ran on."""

    title: str
    results: list[Result] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    """Set when the run was stopped (Ctrl-C) before its last group: the rows are a part."""

    @property
    def ran(self) -> int:
        """Rows that compared something (passed or failed; skipped rows compare nothing)."""
        return sum(r.status != SKIP for r in self.results)

    @property
    def passed(self) -> bool:
        """Every row passed, at least one compared something, and the run was not interrupted:
        an empty or partial run never passes."""
        return self.ran > 0 and not self.interrupted and all(r.passed for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in (PASS, FAIL, SKIP)}

    def verdict(self) -> str:
        c = self.counts()
        return f"{c[PASS]} passed, {c[FAIL]} failed, {c[SKIP]} skipped"

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "settings": self.settings,
            "references": self.references,
            "versions": self.versions,
            "tolerances": {f"{d}/{v}": asdict(t) for (d, v), t in TOLERANCES.items()},
            "results": [r.as_dict() for r in self.results],
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write the report to ``path`` atomically (a temporary file next to it, then a rename):
        a reader never sees a half-written report, and a failed write leaves ``path`` as it was."""
        from rnn_xframework.weightfile import write_atomic

        text = json.dumps(self.as_dict(), indent=2) + "\n"
        write_atomic(os.fspath(path), lambda f: f.write(text.encode()), what="parity --json")


ProgressFn = Callable[[int, int, str, "Sequence[Result] | None"], None]
"""``progress(index, total, label, results)``: called with ``results=None`` when group ``index`` (of
``total``, counted from 0) starts, and with that group's rows when it ends. A group is one cell type
in one dtype (``label``: ``"LSTMCell float32"``), or one golden file."""


HEAD = ("check", "cell", "backend", "ordering", "device", "dtype", "vs", "max abs err", "max rel err", "tolerance")
HEAD_END = ("result", "note")


def _row(r: Result) -> tuple[str, ...]:
    def num(v: float) -> str:
        return "-" if v != v else f"{v:.2e}"

    tol = "-" if r.tolerance != r.tolerance else f"{r.metric} {r.tolerance:.0e}"
    return (
        r.check,
        r.cell,
        r.backend,
        r.ordering,
        r.device,
        r.dtype,
        r.reference,
        num(r.max_abs),
        num(r.max_rel),
        tol,
        r.status,
        r.note,
    )


def format_plain(report: Report) -> str:
    """The table as plain text (what ``--plain``, pipes without rich and the GPU script print)."""
    head = HEAD + HEAD_END
    rows = [_row(r) for r in report.results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    line = "  ".join("-" * w for w in widths)
    lines = [report.title, *report.references, *report.settings, line, fmt.format(*head).rstrip(), line]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return "\n".join([*lines, line, report.verdict()])


def rich_available() -> bool:
    return importlib.util.find_spec("rich") is not None


def print_report(report: Report, plain: bool = False) -> None:
    """Print with rich (colours, a boxed table) when available and not ``plain``; else plain text."""
    if plain or not rich_available():
        print(format_plain(report), flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=report.title, title_justify="left", caption=report.verdict(), caption_justify="left")
    for h in HEAD:
        table.add_column(h, justify="right" if h.startswith("max") else "left", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("note")
    style = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
    for r in report.results:
        *cells, status, note = _row(r)
        table.add_row(*cells, f"[{style[status]}]{status}[/]", note)
    console = Console(width=None if Console().is_terminal else 1000)  # off a terminal: never cut a row
    for line in (*report.references, *report.settings):
        console.print(line, highlight=False)
    console.print(table)


def compare(got: Sequence[Any], want: Sequence[Any], names: Sequence[str]) -> tuple[float, float, str]:
    """``(max abs err, worst per-tensor scale-relative err, name of that tensor)``."""
    import numpy as np

    max_abs, max_rel, worst = 0.0, 0.0, ""
    for g, w, name in zip(got, want, names, strict=True):
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g64.shape != w64.shape:
            return float("inf"), float("inf"), f"{name}: shape {g64.shape} != {w64.shape}"
        err = float(np.max(np.abs(g64 - w64))) if g64.size else 0.0
        scale = float(np.max(np.abs(w64))) if w64.size else 0.0
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        if not np.isfinite(err):
            err = rel = float("inf")
        max_abs = max(max_abs, err)
        if rel >= max_rel:
            max_rel, worst = rel, name
    return max_abs, max_rel, worst

"""Orchestrator: plan the worker subprocesses, run them with a progress bar, merge JSON."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from rnn_xframework.bench.contention import ContentionProbe
from rnn_xframework.bench.methods import GEMM_METHODS, METHODS, Framework, PlanError
from rnn_xframework.bench.timing import Budget
from rnn_xframework.bench.worker import PROGRESS_TAG
from rnn_xframework.bench.workloads import CELLS, Workload, parse_workload

ProgressFn = Callable[[str, str], None]
"""``on_progress(method, status)`` with status ``start`` or ``done``."""

ROOT = Path(__file__).resolve().parents[2]
"""Directory that contains the ``rnn_xframework`` package (put on the workers' ``PYTHONPATH``, so
a source checkout benchmarks its own code)."""

FOREIGN_WARN = 0.10
"""Warn when other processes used more than this share of the CPUs during a job."""

FRAMEWORK_ORDER: tuple[Framework, ...] = ("torch", "tensorflow", "numpy")


@dataclass(frozen=True)
class Job:
    """One worker subprocess."""

    framework: Framework
    methods: list[str]
    budget: Budget
    workload: Workload | None = None
    grad: bool = False
    gemm_n: int = 0

    def label(self) -> str:
        """Short text for the progress bar."""
        if self.workload is None:
            return f"GEMM n={self.gemm_n} {self.framework}"
        mode = "fwd+bwd" if self.grad else "fwd"
        return f"{self.workload.name} {mode} {self.framework}"


@dataclass
class Plan:
    """Everything the orchestrator will run."""

    workloads: list[Workload]
    device: str
    baseline: str
    plugins: list[str]
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_budget(workload: Workload, quick: bool, scale: float) -> Budget:
    """Per-measurement budget: long calls (W3: 0.1-2 s) get fewer repeats."""
    if quick:
        return Budget(budget_s=0.3 * scale, min_repeats=3, max_repeats=10, warmup_s=0.05)
    gflop = workload.forward_flops() / 1e9
    if gflop < 0.1:
        return Budget(budget_s=1.0 * scale, min_repeats=7, max_repeats=50)
    if gflop < 5:
        return Budget(budget_s=1.5 * scale, min_repeats=5, max_repeats=30)
    return Budget(budget_s=3.0 * scale, min_repeats=5, max_repeats=10)


def _select(names: list[str], device: str, notes: list[str]) -> list[str]:
    """Validate method names; drop (with a note) those that cannot use ``device``."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise PlanError(f"unknown method(s) {unknown}; see --list")
    kept = []
    for name in names:
        if device in METHODS[name].devices:
            kept.append(name)
        else:
            notes.append(f"skipped {name!r}: no {device} support")
    return kept


def parse_cells(text: str) -> list[str]:
    """``--cells``: a comma list of SimpleRNN, LSTM, GRU, or ``all``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(CELLS.values())
    bad = [n for n in names if n not in CELLS]
    if bad or not names:
        raise PlanError(f"--cells {text!r}: use a comma list of {', '.join(CELLS)}, or all")
    return [CELLS[n] for n in names]


def _flags(value: str) -> list[bool]:
    """``--mask`` / ``--bidirectional``: ``off`` -> [False], ``on`` -> [True], ``both`` -> [False, True]."""
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def _installed(framework: str) -> bool:
    return framework == "numpy" or importlib.util.find_spec(framework) is not None


def build_plan(args: argparse.Namespace) -> Plan:
    """Turn the command line into worker jobs (framework-grouped, per workload and cell type).

    Methods of a framework that is not installed are dropped with a note (a torch-only GPU
    machine benchmarks torch), as are methods that do not run a workload's cell type or variant
    (bidirectional, masked: :meth:`Method.runs`)."""
    if not 0.0 < args.budget_scale < math.inf:
        raise PlanError(f"--budget-scale must be a number > 0 (0.5 halves every budget), got {args.budget_scale!r}")
    names = [w for w in args.workloads.split(",") if w.strip()]
    cells = parse_cells(getattr(args, "cells", "SimpleRNN"))
    try:
        bases = [parse_workload("W1")] if args.quick else [parse_workload(n) for n in names]
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    variants = [
        (bi, masked)
        for bi in _flags(getattr(args, "bidirectional", "off"))
        for masked in _flags(getattr(args, "mask", "off"))
    ]
    workloads = [w.variant(c, bidirectional=bi, masked=m) for c in cells for bi, m in variants for w in bases]
    plan = Plan(workloads, args.device, args.baseline, list(args.plugin))
    split = [n.strip() for n in args.methods.split(",") if n.strip()]
    methods = _select(split or list(METHODS), args.device, plan.notes)
    missing = sorted({METHODS[n].framework for n in methods if not _installed(METHODS[n].framework)})
    for fw in missing:
        plan.notes.append(f"skipped the {fw} methods: {fw} is not installed here")
    methods = [n for n in methods if METHODS[n].framework not in missing]
    grad_methods: list[str] = []
    if args.grad:
        wanted = [n.strip() for n in args.grad_methods.split(",") if n.strip()]
        if wanted:
            bad = [n for n in wanted if n in METHODS and not METHODS[n].supports_grad]
            if bad:
                raise PlanError(f"{bad} do not support --grad")
        grad_methods = _select(
            wanted or [n for n in methods if METHODS[n].supports_grad],
            args.device,
            plan.notes,
        )
        grad_methods = [n for n in grad_methods if METHODS[n].framework not in missing]
    for workload in workloads:
        budget = default_budget(workload, args.quick, args.budget_scale)
        for grad, chosen in ((False, methods), (True, grad_methods)):
            for fw in FRAMEWORK_ORDER:
                mine = [n for n in chosen if METHODS[n].framework == fw and METHODS[n].runs(workload)]
                if mine:
                    plan.jobs.append(Job(fw, mine, budget, workload, grad))
        if not any(j.workload == workload for j in plan.jobs):
            plan.notes.append(f"no chosen method runs {workload.name!r} (each method's cells and variants: --list)")
    gemm_n = 1024 if args.quick and args.gemm == 2048 else args.gemm
    if gemm_n > 0:
        gemm_budget = Budget(budget_s=1.0 * args.budget_scale, min_repeats=5, max_repeats=20)
        for fw in FRAMEWORK_ORDER:
            mine = [n for n, g in GEMM_METHODS.items() if g.framework == fw]
            mine = [n for n in mine if args.device in GEMM_METHODS[n].devices]
            if mine and _installed(fw):
                plan.jobs.append(Job(fw, mine, gemm_budget, gemm_n=gemm_n))
    return plan


def worker_command(job: Job, plan: Plan, json_path: str) -> list[str]:
    """The ``rnn-xframework bench --worker ...`` command line for ``job``."""
    cmd = [sys.executable, "-m", "rnn_xframework.bench.harness", "--worker", job.framework]
    cmd += [
        "--methods",
        ",".join(job.methods),
        "--device",
        plan.device,
        "--json",
        json_path,
    ]
    if job.workload is not None:
        w = job.workload
        spec = w.base if w.base in ("W1", "W2", "W3") else f"{w.batch}x{w.steps}x{w.features}x{w.units}"
        cmd += ["--workload", spec, "--cell", w.cell]
        cmd += ["--mask", "on"] if w.masked else []
        cmd += ["--bidirectional", "on"] if w.bidirectional else []
    else:
        cmd += ["--gemm", str(job.gemm_n)]
    if job.grad:
        cmd.append("--grad")
    b = job.budget
    cmd += ["--budget-s", str(b.budget_s), "--min-repeats", str(b.min_repeats)]
    cmd += ["--max-repeats", str(b.max_repeats), "--warmup-s", str(b.warmup_s)]
    for plugin in plan.plugins:
        cmd += ["--plugin", plugin]
    return cmd


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TF's own C++ logging: the only thing silenced
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_worker(job: Job, plan: Plan, on_progress: ProgressFn) -> dict[str, object]:
    """Run one worker; ``on_progress(method, status)`` is called per progress line."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.Popen(
            worker_command(job, plan, str(out)),
            env=_worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS_TAG):
                event = json.loads(line[len(PROGRESS_TAG) :])
                on_progress(event["method"], event["status"])
            else:
                log.append(line)
        code = proc.wait()
        if out.exists():
            doc: dict[str, object] = json.loads(out.read_text())
        else:
            tail = "".join(log[-30:])
            doc = {"crash": f"worker exited with {code} and no JSON; output tail:\n{tail}"}
    doc["returncode"] = code
    return doc


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class JobProgress:
    """What the orchestrator shows while it runs: a rich bar on a terminal (gone at the end, so
    the tables that follow stand alone), one line per finished job elsewhere (pipes, logs)."""

    def __init__(self, total: int, jobs: int, stream: TextIO, bar: Progress | None) -> None:
        self.total, self.jobs, self.stream, self.bar = total, jobs, stream, bar
        self.task = bar.add_task("starting", total=total) if bar is not None else None
        self.done_jobs, self.start = 0, time.monotonic()

    def describe(self, text: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=text)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def job_done(self, label: str, methods: int) -> None:
        self.done_jobs += 1
        if self.bar is None:
            elapsed = time.monotonic() - self.start
            print(
                f"rnn-xframework bench: [{self.done_jobs}/{self.jobs}] {label}: {methods} method(s) ({elapsed:.0f} s)",
                file=self.stream,
                flush=True,
            )


@contextlib.contextmanager
def job_progress(total: int, jobs: int, stream: TextIO | None = None) -> Iterator[JobProgress]:
    """A :class:`JobProgress` on ``stream`` (stderr): ``total`` methods in ``jobs`` worker runs."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        yield JobProgress(total, jobs, stream, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=stream), transient=True) as bar:
        yield JobProgress(total, jobs, stream, bar)


def run_plan(plan: Plan, argv: list[str], stream: TextIO | None = None) -> dict[str, object]:
    """Run every job and merge the worker documents; progress on ``stream`` (stderr)."""
    results: list[dict[str, object]] = []
    gemm: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    versions: dict[str, dict[str, object]] = {}
    command = "rnn-xframework bench " + " ".join(argv)
    date = dt.datetime.now().isoformat(timespec="seconds")
    host = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    doc: dict[str, object] = {
        "device": plan.device,
        "command": command,
        "date": date,
        "host": host,
        "workloads": [w.to_dict() for w in plan.workloads],
        "results": results,
        "gemm": gemm,
        "versions": versions,
        "notes": plan.notes,
        "failures": failures,
    }
    unusable: dict[str, str] = {}  # framework -> why it cannot run on the device
    with job_progress(sum(len(j.methods) for j in plan.jobs), len(plan.jobs), stream) as progress:
        for job in plan.jobs:
            label = job.label()
            progress.describe(f"{label}: starting worker")

            def on_progress(method: str, status: str, label: str = label) -> None:
                if status == "start":
                    progress.describe(f"{label}: {method}")
                else:
                    progress.advance()

            if job.framework in unusable:
                progress.advance(len(job.methods))
                progress.job_done(f"{label} (skipped)", len(job.methods))
                continue
            probe = ContentionProbe.start()
            wdoc = run_worker(job, plan, on_progress)
            foreign = probe.foreign_fraction()
            if "fatal" in wdoc:  # this framework cannot use the device: skip it, keep the others
                unusable[job.framework] = str(wdoc["fatal"])
                plan.notes.append(f"skipped the {job.framework} methods: {wdoc['fatal']}")
                progress.advance(len(job.methods))
                progress.job_done(f"{label} (skipped)", len(job.methods))
                continue
            if "crash" in wdoc:
                failures.append({"job": label, "error": wdoc["crash"]})
                progress.advance(len(job.methods))
                progress.job_done(label, len(job.methods))
                continue
            versions[job.framework] = wdoc["versions"]  # type: ignore[assignment]
            target = results if job.workload is not None else gemm
            records: list[dict[str, object]] = wdoc["results"]  # type: ignore[assignment]
            for record in records:
                record["foreign_cpu"] = foreign
            target.extend(records)
            if foreign is not None and foreign > FOREIGN_WARN:
                plan.notes.append(
                    f"{label}: other processes used {foreign:.0%} of the CPUs meanwhile; these timings are suspect"
                )
            progress.job_done(label, len(job.methods))
        progress.describe("done")
    if unusable and not results and not gemm:  # nothing could run at all
        doc["fatal"] = "; ".join(unusable.values())
        return doc
    doc["header"] = header_lines(date, host, versions, command)
    return doc


def header_lines(
    date: str,
    host: dict[str, object],
    versions: dict[str, dict[str, object]],
    command: str,
) -> list[str]:
    """Text lines printed above the tables."""
    lines = [
        f"rnn_xframework peers benchmark, {date}",
        f"host: {host['cpu']}, {host['cpu_count']} CPUs, {host['platform']}",
    ]
    for fw, info in versions.items():
        skip = ("python", "cpu_count")
        detail = ", ".join(f"{k}={v}" for k, v in info.items() if k not in skip)
        lines.append(f"{fw} worker: {detail}")
    lines.append(f"command: {command}")
    return lines

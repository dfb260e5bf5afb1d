"""Worker side: measure some methods of *one* framework in this process.

The orchestrator (:mod:`rnn_xframework.bench.harness`) starts one worker subprocess per
(framework, workload, fwd|grad) and one per framework for the GEMM peak, so TF
and torch never share a timing process. Progress goes to stderr as lines
starting with :data:`PROGRESS_TAG`; the result is one JSON document.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rnn_xframework import frameworks
from rnn_xframework.bench.framework_setup import check_device, quiet_tensorflow, sync_fn, versions
from rnn_xframework.bench.methods import (
    GEMM_METHODS,
    METHODS,
    DeviceUnavailableError,
    Framework,
    Runner,
)
from rnn_xframework.bench.timing import Budget, measure
from rnn_xframework.bench.workloads import Workload, gemm_flops
from rnn_xframework.errors import UnsupportedConfigError

PROGRESS_TAG = "@@bench-progress "
EXIT_DEVICE_UNAVAILABLE = 3

Setup = Callable[[], tuple[Runner, float]]


@dataclass(frozen=True)
class WorkerJob:
    """What one worker subprocess measures."""

    framework: Framework
    methods: list[str]
    device: str
    budget: Budget
    workload: Workload | None = None
    grad: bool = False
    gemm_n: int = 0


def load_plugins(modules: list[str]) -> None:
    """Import the built-in peers and any ``--plugin`` modules (they register methods)."""
    importlib.import_module("rnn_xframework.bench.peers")
    for module in modules:
        importlib.import_module(module)


def _progress(method: str, status: str) -> None:
    print(PROGRESS_TAG + json.dumps({"method": method, "status": status}), file=sys.stderr)
    sys.stderr.flush()


def _setup_thunk(job: WorkerJob, name: str) -> tuple[Framework, Setup, int, dict[str, object]]:
    """Resolve ``name`` to (framework, setup thunk, FLOPs per call, record fields)."""
    workload, device = job.workload, job.device
    if workload is not None:
        method = METHODS[name]

        def setup() -> tuple[Runner, float]:
            return method.setup(workload, job.grad, device)

        fields: dict[str, object] = {"workload": workload.name, "grad": job.grad, "cell": workload.cell}
        fields.update(bidirectional=workload.bidirectional, masked=workload.masked)
        return method.framework, setup, workload.flops(job.grad), fields

    gemm = GEMM_METHODS[name]

    def gemm_setup() -> tuple[Runner, float]:
        return gemm.setup(job.gemm_n, device)

    return gemm.framework, gemm_setup, gemm_flops(job.gemm_n), {"n": job.gemm_n}


def _measure_one(job: WorkerJob, name: str) -> dict[str, object]:
    """Set up and time one method; errors become an ``error`` field, not a crash, and a refusal
    (:class:`UnsupportedConfigError`: a compiled method given ``mask=``) an ``unsupported`` one."""
    framework, setup, flops, fields = _setup_thunk(job, name)
    if framework != job.framework:
        raise ValueError(f"{name!r} is a {framework} method, not {job.framework}")
    record: dict[str, object] = {
        "method": name,
        "framework": framework,
        "device": job.device,
    }
    record.update(fields, flops=flops)
    _progress(name, "start")
    try:
        runner, compile_s = setup()
        result = measure(runner, job.budget, sync_fn(job.framework, job.device))
        record["compile_s"] = compile_s
        record.update(result.to_dict())
        record["gflops"] = flops / result.median_s / 1e9
    except UnsupportedConfigError as exc:
        record["unsupported"] = str(exc)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    _progress(name, "done")
    return record


def run_job(job: WorkerJob) -> dict[str, object]:
    """Run every method of ``job``; returns the JSON-ready document."""
    if job.framework == "tensorflow":
        quiet_tensorflow()
    frameworks.load(job.framework)  # triton before TensorFlow where it is installed
    doc: dict[str, object] = {"framework": job.framework, "device": job.device}
    try:
        check_device(job.framework, job.device)
    except DeviceUnavailableError as exc:
        doc["fatal"] = str(exc)
        return doc
    doc["versions"] = versions(job.framework)
    doc["budget"] = job.budget.__dict__
    start = time.perf_counter()
    doc["results"] = [_measure_one(job, name) for name in job.methods]
    doc["wall_s"] = time.perf_counter() - start
    return doc


def write_doc(doc: dict[str, object], json_path: str) -> None:
    """Write the document to ``json_path``, or to stdout for ``-``."""
    text = json.dumps(doc, indent=1)
    if json_path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(json_path).write_text(text + "\n")

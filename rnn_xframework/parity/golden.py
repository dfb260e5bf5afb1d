"""Golden vectors: a problem and TensorFlow's answers to it, in framework-neutral ``.npz`` files.

``write_golden(dir)`` records, with TensorFlow, one file per cell type and dtype
(``SimpleRNNCell-float32.npz``): inputs, canonical weights, initial states, loss weights, the
outputs at every step, the final states, and the gradients of the loss. ``check_golden(dir)``
runs every installed backend, ordering and device on the recorded problems and compares, so a
machine without TensorFlow still checks against TensorFlow's numbers. Files are plain arrays plus
a JSON record (``__meta__``); they are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError, WeightsError
from rnn_xframework.parity import training
from rnn_xframework.parity.matrix import (
    Config,
    Plan,
    forward_arrays,
    forward_names,
    gradient_arrays,
    gradient_names,
    judge,
    new_result,
    plan,
    references,
    strict_numerics,
    variants,
    versions,
)
from rnn_xframework.parity.problem import Problem, Sizes, build, random_problem
from rnn_xframework.parity.report import DTYPES, SKIP, ProgressFn, Report, Result

FORMAT = "rnn_xframework.golden"
VERSION = 1
# Small enough to ship (a few tens of kB per file), large enough for real recurrences.
SIZES = Sizes(batch=3, steps=20, features=8, units=16, layers=2)
_META = "__meta__"


def _nested(prefix: str, lists: Sequence[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{i}.{j}": a for i, layer in enumerate(lists) for j, a in enumerate(layer)}


def _unnested(files: dict[str, np.ndarray], prefix: str, shape: Sequence[int]) -> list[list[np.ndarray]]:
    return [[files[f"{prefix}.{i}.{j}"] for j in range(n)] for i, n in enumerate(shape)]


def write_golden(
    directory: str | os.PathLike[str],
    sizes: Sizes = SIZES,
    cells: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    seed: int = 0,
) -> list[Path]:
    """Record the preferred gradient reference's (TensorFlow's) outputs and gradients for each cell
    type and dtype; return the paths."""
    recorder = references("gradient")[0]
    p = plan(Config(sizes=sizes, backends=[recorder], dtypes=dtypes, cells=cells, devices=["cpu"], seed=seed))
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in p.cells:
        for dtype in p.dtypes:
            problem = random_problem(kind, sizes, dtype, seed)
            model = build(problem, recorder)
            forward = forward_arrays(model, problem, recorder, "cpu")
            grads = training.loss_and_grads(recorder, model, problem.x, problem.states, problem.loss_weights)
            n_states = [len(layer) for layer in problem.states]
            final = iter(forward[1:])
            arrays = {
                "inputs": problem.x,
                **{f"weights.{k}": w for k, w in enumerate(problem.weights)},
                **_nested("states", problem.states),
                "loss.outputs": problem.loss_weights[0],
                **_nested("loss.states", problem.loss_weights[1]),
                "outputs": forward[0],
                **_nested("final_states", [[next(final) for _ in range(n)] for n in n_states]),
                "grads.inputs": grads.inputs,
                **_nested("grads.states", grads.states),
                **{f"grads.weights.{k}": g for k, g in enumerate(grads.weights)},
            }
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "kind": kind,
                "dtype": dtype,
                "sizes": vars(sizes),
                "n_states": n_states,
                "n_weights": len(problem.weights),
                "seed": seed,
                "recorded_with": versions([recorder]),
            }
            arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            path = out_dir / f"{kind}-{dtype}.npz"
            np.savez_compressed(path, **arrays)
            paths.append(path)
    return paths


def golden_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The golden files in ``directory``, sorted; raises if there are none."""
    paths = sorted(Path(directory).glob("*.npz"))
    if not paths:
        raise WeightsError(f"no golden .npz files in {os.fspath(directory)!r}; write some with `parity golden --write`")
    return paths


def load_golden(path: str | os.PathLike[str]) -> tuple[Problem, list[np.ndarray], training.Gradients, dict]:
    """``(problem, [outputs, final states...], gradients, meta)`` from one file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            files = {k: f[k] for k in f.files}
        meta = json.loads(bytes(files.pop(_META)).decode())
    except (KeyError, ValueError, OSError) as e:
        raise WeightsError(f"{os.fspath(path)!r} is not a golden file ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise WeightsError(
            f"{os.fspath(path)!r}: format {meta.get('format')!r} v{meta.get('version')}, expected {FORMAT!r} v{VERSION}"
        )
    n_states = meta["n_states"]
    weights = [files[f"weights.{k}"] for k in range(meta["n_weights"])]
    problem = Problem(
        meta["kind"],
        meta["dtype"],
        Sizes(**meta["sizes"]),
        files["inputs"],
        weights,
        _unnested(files, "states", n_states),
        (files["loss.outputs"], _unnested(files, "loss.states", n_states)),
    )
    forward = [files["outputs"], *(s for layer in _unnested(files, "final_states", n_states) for s in layer)]
    grads = training.Gradients(
        float("nan"),
        files["grads.inputs"],
        _unnested(files, "grads.states", n_states),
        [files[f"grads.weights.{k}"] for k in range(meta["n_weights"])],
    )
    return problem, forward, grads, meta


def check_golden(
    directory: str | os.PathLike[str],
    backend_names: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    orderings: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    progress: ProgressFn | None = None,
) -> Report:
    """Forward and gradients of every installed backend / ordering / device against the files.

    ``progress`` hears of each file as it starts and ends (see :func:`~rnn_xframework.parity.run`)."""
    paths = golden_files(directory)
    p = plan(Config(backends=backend_names, devices=devices, orderings=orderings, dtypes=dtypes))
    report = Report(f"rnn_xframework golden check ({os.fspath(directory)})", versions=versions(p.backends))
    report.references.append("versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    with strict_numerics(p.backends, p.devices) as settings:
        report.settings += settings
        loaded = [load_golden(path) for path in paths]
        chosen = [(path, *rest) for path, rest in zip(paths, loaded, strict=True) if rest[0].dtype in p.dtypes]
        for index, (path, problem, forward, grads, meta) in enumerate(chosen):
            start = len(report.results)
            if progress is not None:
                progress(index, len(chosen), path.name, None)
            recorded = ", ".join(f"{k} {v}" for k, v in meta["recorded_with"].items())
            report.references.append(f"golden: {path.name} ({problem.sizes.describe()}), recorded with {recorded}")
            _check_file(p, problem, forward, grads, report)
            if progress is not None:
                progress(index, len(chosen), path.name, report.results[start:])
    return report


def _check_file(
    p: Plan, problem: Problem, forward: list[np.ndarray], grads: training.Gradients, report: Report
) -> None:
    kind, dtype = problem.kind, problem.dtype
    found = False
    for name, ordering, device in variants(p, kind):
        found = True
        model = build(problem, name, ordering, device)
        r = new_result("forward", kind, name, ordering, device, dtype, "golden")
        report.results.append(judge(r, forward_arrays(model, problem, name, device), forward, forward_names(problem)))
        r = new_result("backward", kind, name, ordering, device, dtype, "golden")
        try:
            got = training.loss_and_grads(
                name, model, problem.x, problem.states, problem.loss_weights, None if device == "cpu" else device
            )
        except UnsupportedConfigError as e:
            r.note = str(e)
            report.results.append(r)
            continue
        report.results.append(judge(r, gradient_arrays(got), gradient_arrays(grads), gradient_names(problem)))
    if not found:
        note = f"no selected backend has {kind}"
        report.results.append(Result("forward", kind, "-", "-", "-", dtype, "golden", status=SKIP, note=note))

"""The parity matrix: cell types x backends x orderings x devices x dtypes, three checks.

* ``forward``: outputs at every step and final states, against the NumPy reference.
* ``backward``: gradients of ``L = sum(y * w_y) + sum(final_states * w_s)`` with respect to the
  inputs, the initial states and every canonical weight, against TensorFlow (torch on CPU where
  TensorFlow is missing).
* ``training``: one SGD step and one Adam step from the same weights; the updates of the
  canonical weights are compared with the reference backend's, and parameters a backend keeps
  frozen (torch's ``bias_hh``) must not move.
* ``masked``: the call with ``mask=`` (the problem's right-padded lengths, Keras's semantics):
  outputs and final states against the NumPy reference's masked call (rows ``masked``), the same
  call on a batch of :data:`WIDE` copies of the problem's rows in a fixed shuffled order, in the
  backend's inference scope (rows ``masked:wide``: above 8 rows, without autograd, where ``"cpu"``
  sorts the batch and packs its real steps), and the
  gradients of the same loss against the gradient reference's (rows ``masked:grad``).

References always run ``order="timestep"`` on the CPU in the row's dtype; a reference is not
compared with itself.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rnn_xframework import cells, registry
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.parity import training
from rnn_xframework.parity.problem import Problem, Sizes, build, cell_kinds, orderings_for, random_problem
from rnn_xframework.parity.report import (
    DEVICES,
    DTYPES,
    FAIL,
    PASS,
    SKIP,
    TOLERANCES,
    ProgressFn,
    Report,
    Result,
    compare,
)
from rnn_xframework.parity.training import Gradients, Optimizer

CHECKS = ("forward", "backward", "training", "masked")
# Exactly representable in float32, so Keras (which keeps hyper-parameters in float32) and torch
# (Python floats) use the very same numbers, in float32 and in float64.
LEARNING_RATE = 2.0**-8
BETA_1 = float(np.float32(0.9))
BETA_2 = float(np.float32(0.999))


@dataclass(frozen=True)
class Config:
    """What to run. ``None`` means: everything available here."""

    sizes: Sizes = field(default_factory=Sizes)
    backends: Sequence[str] | None = None
    devices: Sequence[str] | None = None
    dtypes: Sequence[str] = DTYPES
    cells: Sequence[str] | None = None
    orderings: Sequence[str] | None = None
    checks: Sequence[str] = CHECKS
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """A validated :class:`Config`: every name canonical and available."""

    sizes: Sizes
    backends: list[str]
    devices: list[str]
    dtypes: list[str]
    cells: list[str]
    orderings: list[str] | None
    checks: list[str]
    seed: int


def _choose(what: str, asked: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    if asked is None:
        return list(known)
    unknown = [a for a in asked if a not in known]
    if unknown or not asked:
        raise UnsupportedConfigError(f"unknown {what} {unknown or asked!r}; expected some of: {', '.join(known)}")
    return list(dict.fromkeys(asked))


def plan(config: Config) -> Plan:
    """Check every name in ``config`` (typed errors, nothing run yet) and fill in the defaults."""
    names = (
        registry.installed()
        if config.backends is None
        else list(dict.fromkeys(registry.canonical_name(b) for b in config.backends))
    )
    if not names:
        raise UnsupportedConfigError("no backend selected")
    seen = {b: registry.get(b).devices() for b in names}  # raises BackendUnavailableError
    available = [d for d in DEVICES if any(d in ds for ds in seen.values())]
    devices = available if config.devices is None else _choose("device", config.devices, DEVICES)
    for d in devices:
        if d not in available:
            where = "; ".join(f"{b}: {', '.join(ds)}" for b, ds in seen.items())
            hint = " (torch.cuda.is_available() is False)" if d == "cuda" and "torch" in names else ""
            raise UnsupportedConfigError(f"device {d!r} is not available here{hint}; the backends see: {where}")
    all_orderings = list(dict.fromkeys(o for b in names for o in orderings_for(b)))
    return Plan(
        sizes=config.sizes,
        backends=names,
        devices=devices,
        dtypes=_choose("dtype", config.dtypes, DTYPES),
        cells=_choose("cell type", config.cells, cell_kinds(names)),
        orderings=None if config.orderings is None else _choose("ordering", config.orderings, all_orderings),
        checks=_choose("check", config.checks, CHECKS),
        seed=config.seed,
    )


def references(role: str) -> list[str]:
    """Installed backends that can serve as the ``role`` (``"forward"``, ``"gradient"``) reference,
    preferred first (each backend class states its rank)."""
    ranked = [(getattr(registry.get(b), f"{role}_reference"), b) for b in registry.installed()]
    return [b for rank, b in sorted((r, b) for r, b in ranked if r is not None)]


def versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in dict.fromkeys(["numpy", *names]):
        for dist in registry.get(name).distributions:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                out[dist] = importlib.metadata.version(dist)
    return out


@contextlib.contextmanager
def strict_numerics(names: Sequence[str], devices: Sequence[str]) -> Iterator[list[str]]:
    """Each backend's reduced-precision switches off (TF32) for runs on an accelerator."""
    with contextlib.ExitStack() as stack:
        settings: list[str] = []
        if any(d != "cpu" for d in devices):
            for name in names:
                settings += stack.enter_context(registry.get(name).strict_numerics())
        yield [f"set: {s}" for s in settings]


def variants(p: Plan, kind: str) -> Iterator[tuple[str, str, str]]:
    """``(backend, ordering, device)`` for every backend that has ``kind``."""
    for name in p.backends:
        ops = registry.get(name)
        if not ops.supports(cells.get(kind)):
            continue
        for device in p.devices:
            if device in ops.devices():
                for ordering in orderings_for(name, device):
                    if p.orderings is None or ordering in p.orderings:
                        yield name, ordering, device


def _native(name: str, a: np.ndarray, device: str) -> object:
    return registry.get(name).from_numpy(a, None if device == "cpu" else device)


def forward_arrays(
    model: object, problem: Problem, name: str, device: str, mask: np.ndarray | None = None
) -> list[np.ndarray]:
    """``[y [batch, steps, units], final state per layer and tensor...]`` as NumPy (called with
    ``mask=`` when one is given)."""
    ops = registry.get(name)
    states = [[_native(name, s, device) for s in layer] for layer in problem.states]
    extra = {} if mask is None else {"mask": mask}
    y, final = model(_native(name, problem.x, device), states, **extra)  # type: ignore[operator]
    return [ops.to_numpy(y), *(ops.to_numpy(s) for layer in final for s in layer)]


WIDE = 4
"""``masked:wide`` runs the masked call on ``WIDE`` copies of each row (the tutorial's batch 4 -> 16)."""


def widened(problem: Problem) -> tuple[Problem, np.ndarray]:
    """The problem with its batch repeated :data:`WIDE` times and shuffled (a fixed permutation), and the
    permutation ``rows`` (``wide[i] == problem[rows[i]]``): each row's results are its own, so the
    reference's are ``expected[rows]``."""
    batch = problem.x.shape[0]
    rows = np.random.default_rng(0).permutation(np.repeat(np.arange(batch), WIDE))
    wide = replace(
        problem,
        x=problem.x[rows],
        states=[[s[rows] for s in layer] for layer in problem.states],
        mask=None if problem.mask is None else problem.mask[rows],
    )
    return wide, rows


def forward_names(problem: Problem) -> list[str]:
    return ["outputs", *(f"states[{i}][{j}]" for i, layer in enumerate(problem.states) for j in range(len(layer)))]


def gradient_arrays(grads: Gradients) -> list[np.ndarray]:
    return [grads.inputs, *(s for layer in grads.states for s in layer), *grads.weights]


def gradient_names(problem: Problem) -> list[str]:
    states = [f"d states[{i}][{j}]" for i, layer in enumerate(problem.states) for j in range(len(layer))]
    names = ["d inputs", *states]
    return names + [f"d weights[{k}]" for k in range(len(problem.weights))]


def optimizers(reference: Gradients) -> list[Optimizer]:
    """SGD, and Adam with ``epsilon = sqrt(1 - beta_2) * max|g|`` (see docs/parity.md): its first
    step is then ``-lr * g / (|g| + max|g|)``, which cannot amplify a gradient difference."""
    scale = max(float(np.max(np.abs(g))) for g in reference.weights)
    return [
        Optimizer("sgd", LEARNING_RATE),
        Optimizer("adam", LEARNING_RATE, BETA_1, BETA_2, epsilon=math.sqrt(1.0 - BETA_2) * scale),
    ]


def train(
    problem: Problem, name: str, ordering: str, device: str, opt: Optimizer, source: object
) -> tuple[list[np.ndarray], str]:
    """One step; returns the canonical weight updates and a note on the frozen parameters (``""``
    when there are none; starts with ``"moved"`` when one changed)."""
    model = build(problem, name, ordering, device, source)
    frozen = training.frozen_parameters(name, model)
    dev = None if device == "cpu" else device
    training.train_step(name, model, problem.x, problem.states, problem.loss_weights, opt, dev)
    after = training.frozen_parameters(name, model)
    moved = [k for k in frozen if not np.array_equal(frozen[k], after[k])]
    note = (
        f"moved: frozen {', '.join(moved)}" if moved else (f"{len(frozen)} frozen params unchanged" if frozen else "")
    )
    updates = [np.asarray(w, np.float64) - w0 for w, w0 in zip(model.get_weights(), problem.weights, strict=True)]
    return updates, note


def run(config: Config | None = None, progress: ProgressFn | None = None) -> Report:
    """Run the matrix; typed errors for a bad config, before anything runs.

    ``progress`` (see :data:`~rnn_xframework.parity.report.ProgressFn`) hears of each group (one
    cell type in one dtype) as it starts and ends; the command line draws its progress from it.
    """
    p = plan(config or Config())
    report = Report(title=f"rnn_xframework parity ({p.sizes.describe()})", versions=versions(p.backends))
    report.references.append("versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    groups = [(kind, dtype) for kind in p.cells for dtype in p.dtypes]
    with strict_numerics(p.backends, p.devices) as settings:
        report.settings += settings
        for index, (kind, dtype) in enumerate(groups):
            start = len(report.results)
            if progress is not None:
                progress(index, len(groups), f"{kind} {dtype}", None)
            try:
                _run_problem(p, random_problem(kind, p.sizes, dtype, p.seed), report)
            except KeyboardInterrupt as e:  # the finished groups' rows, marked as a part
                del report.results[start:]
                report.interrupted = True
                e.report = report  # type: ignore[attr-defined]
                e.progress = (index, len(groups))  # type: ignore[attr-defined]
                raise
            if progress is not None:
                progress(index, len(groups), f"{kind} {dtype}", report.results[start:])
    return report


def _first(role: str, kind: str) -> str | None:
    return next((b for b in references(role) if registry.get(b).supports(cells.get(kind))), None)


def new_result(check: str, kind: str, backend: str, ordering: str, device: str, dtype: str, reference: str) -> Result:
    """An unjudged row with the stated tolerance of its check, dtype and device."""
    tol = TOLERANCES[(dtype, device)]
    if check in ("forward", "masked", "masked:wide"):
        return Result(check, kind, backend, ordering, device, dtype, reference, metric="abs", tolerance=tol.forward)
    bound = tol.gradient if check in ("backward", "masked:grad") else tol.training
    return Result(check, kind, backend, ordering, device, dtype, reference, metric="rel", tolerance=bound)


def judge(
    result: Result, got: Sequence[np.ndarray], want: Sequence[np.ndarray], names: Sequence[str], note: str = ""
) -> Result:
    """Fill in the errors and the verdict of ``result``; a note starting ``"moved"`` fails it."""
    result.max_abs, result.max_rel, worst = compare(got, want, names)
    error = result.max_abs if result.metric == "abs" else result.max_rel
    ok = error <= result.tolerance and not note.startswith("moved")
    result.status = PASS if ok else FAIL
    result.note = "; ".join(n for n in (note, "" if ok else f"worst: {worst}") if n)
    return result


def _run_problem(p: Plan, problem: Problem, report: Report) -> None:
    kind, dtype = problem.kind, problem.dtype
    fwd_ref = _first("forward", kind)
    grad_ref = _first("gradient", kind) if {"backward", "training", "masked"} & set(p.checks) else None
    if fwd_ref is None:
        raise UnsupportedConfigError(f"no installed backend has {kind} to serve as the reference")
    line = f"references for {kind}/{dtype}: forward vs {fwd_ref}"
    report.references.append(line + (f", backward and training vs {grad_ref}" if grad_ref else "") + " (timestep, cpu)")
    source = build(problem, fwd_ref)
    expected = forward_arrays(source, problem, fwd_ref, "cpu")
    args = (problem.x, problem.states, problem.loss_weights)
    masked = "masked" in p.checks and problem.mask is not None
    expected_masked = forward_arrays(source, problem, fwd_ref, "cpu", problem.mask) if masked else []
    opts: list[Optimizer] = []
    if grad_ref is not None:
        ref_grads = training.loss_and_grads(grad_ref, build(problem, grad_ref, source=source), *args)
        opts = optimizers(ref_grads)
        ref_updates = {o.name: train(problem, grad_ref, "timestep", "cpu", o, source)[0] for o in opts}
    want_masked_grads: list[np.ndarray] = []  # the gradient reference's, of the masked call
    if masked and grad_ref is not None:
        ref_model = build(problem, grad_ref, source=source)
        want_masked_grads = gradient_arrays(training.loss_and_grads(grad_ref, ref_model, *args, mask=problem.mask))
    skipped: set[tuple[str, str]] = set()  # (backend, check) that said "not supported" once
    for name, ordering, device in variants(p, kind):
        is_ref = ordering == "timestep" and device == "cpu"
        if "forward" in p.checks and not (is_ref and name == fwd_ref):
            got = forward_arrays(build(problem, name, ordering, device, source), problem, name, device)
            r = new_result("forward", kind, name, ordering, device, dtype, fwd_ref)
            report.results.append(judge(r, got, expected, forward_names(problem)))
        if masked and not (is_ref and name == fwd_ref):
            model = build(problem, name, ordering, device, source)
            got = forward_arrays(model, problem, name, device, problem.mask)
            r = new_result("masked", kind, name, ordering, device, dtype, fwd_ref)
            report.results.append(judge(r, got, expected_masked, forward_names(problem)))
            wide, rows = widened(problem)
            with registry.get(name).inference():
                got = forward_arrays(model, wide, name, device, wide.mask)
            r = new_result("masked:wide", kind, name, ordering, device, dtype, fwd_ref)
            report.results.append(judge(r, got, [a[rows] for a in expected_masked], forward_names(problem)))
        if grad_ref is None or (is_ref and name == grad_ref):
            continue
        dev = None if device == "cpu" else device
        wanted = ["backward"] if "backward" in p.checks else []
        wanted += [f"train:{o.name}" for o in opts] if "training" in p.checks else []
        wanted += ["masked:grad"] if want_masked_grads else []
        for check in wanted:
            if (name, check) in skipped:
                continue
            r = new_result(check, kind, name, ordering, device, dtype, grad_ref)
            try:
                if check == "backward":
                    model = build(problem, name, ordering, device, source)
                    got = gradient_arrays(training.loss_and_grads(name, model, *args, dev))
                    report.results.append(judge(r, got, gradient_arrays(ref_grads), gradient_names(problem)))
                elif check == "masked:grad":
                    model = build(problem, name, ordering, device, source)
                    got = gradient_arrays(training.loss_and_grads(name, model, *args, dev, mask=problem.mask))
                    report.results.append(judge(r, got, want_masked_grads, gradient_names(problem)))
                else:
                    opt = next(o for o in opts if check == f"train:{o.name}")
                    updates, note = train(problem, name, ordering, device, opt, source)
                    names = [f"update of weights[{k}]" for k in range(len(updates))]
                    report.results.append(judge(r, updates, ref_updates[opt.name], names, note))
            except UnsupportedConfigError as e:
                skipped.add((name, check))
                r.ordering = r.device = "all"
                r.status, r.note = SKIP, str(e)
                report.results.append(r)

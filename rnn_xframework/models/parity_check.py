"""``xf.compare``: does a torch module compute what a Keras model computes, and train the same?

Forward: the max absolute and scale-relative error of every output on the same inputs (Keras
``training=False``, the module in ``eval()``). Training: ``steps`` identical SGD steps (learning
rate ``lr``) on the same batch and the same loss (the mean squared distance of each output to a
fixed target), on copies: the loss at each step, then every entry of the trained module's
``state_dict`` against the trained Keras model ported again (weights and moving statistics, in
PyTorch's layout): the max absolute difference, and that difference over the largest change the
steps made to any entry (a weight whose gradient is zero in exact arithmetic, such as a bias
before a BatchNormalization, moves by rounding noise only, so a per-tensor ratio says nothing).
A model with dropout trains in inference mode on both sides (dropout masks are random and differ between frameworks;
BatchNormalization then uses its moving statistics).
Printed as the parity suite's table (:mod:`rnn_xframework.parity.report`), returned as its
:class:`~rnn_xframework.parity.report.Report`. Neither object is changed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework.models.graph import Graph
from rnn_xframework.parity import report as rp


def probe(g: Graph, batch: int = 3, steps: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Inputs for ``g``: free sizes ``steps``; token inputs in range with right-padded zeros
    when an ``Embedding(mask_zero=True)`` reads them; ``Masking`` inputs padded with its value."""
    rng = np.random.default_rng(seed)
    out = []
    for inp in g.inputs:
        shape = (batch, *(steps if d is None else d for d in inp.shape))
        readers = [g.layers[n.layer] for n in g.nodes if inp.name in n.inputs]
        emb = [la for la in readers if la.kind == "Embedding"]
        if emb:
            x = rng.integers(1, min(la.config["input_dim"] for la in emb), shape)
            if any(la.config["mask_zero"] for la in emb) and len(shape) == 2 and shape[1] > 1:
                for row, length in enumerate(rng.integers(1, shape[1] + 1, batch)):
                    x[row, length:] = 0
            out.append(x.astype(inp.dtype if "int" in inp.dtype else "int64"))
            continue
        x = rng.normal(size=shape).astype(g.dtype())
        masking = [la for la in readers if la.kind == "Masking"]
        if masking and len(shape) == 3 and shape[1] > 1:
            for row, length in enumerate(rng.integers(1, shape[1] + 1, batch)):
                x[row, length:] = masking[0].config["mask_value"]
        out.append(x)
    return out


def _random(g: Graph) -> bool:
    for layer in g._all_layers():
        if layer.kind in ("Dropout", "SpatialDropout1D") and layer.config["rate"] > 0:
            return True
        for cell in layer.config.get("cells", []):
            if cell["config"].get("dropout", 0) or cell["config"].get("recurrent_dropout", 0):
                return True
    return False


def _listed(y: Any) -> list[Any]:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _keras_train(
    model: Any, xs: list[Any], targets: list[np.ndarray], steps: int, lr: float, training: bool
) -> list[float]:
    import tensorflow as tf

    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            ys = _listed(model(xs if len(xs) > 1 else xs[0], training=training))
            loss = tf.add_n([tf.reduce_mean(tf.square(y - t)) for y, t in zip(ys, targets, strict=True)])
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads, strict=True):
            if g is not None:
                v.assign_sub(lr * tf.convert_to_tensor(g))
        losses.append(float(loss))
    return losses


def _torch_train(
    module: Any, xs: list[Any], targets: list[np.ndarray], steps: int, lr: float, training: bool
) -> list[float]:
    import torch

    from rnn_xframework import frameworks

    frameworks.check_torch_order("xf.compare")  # torch.optim loads triton: it must precede TensorFlow
    module.train(training)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        ys = _listed(module(*xs))
        loss = sum(((y - torch.from_numpy(t)) ** 2).mean() for y, t in zip(ys, targets, strict=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _reset(obj: Any) -> None:
    if hasattr(obj, "reset_states"):
        obj.reset_states()


def compare(
    keras_model: Any,
    torch_module: Any,
    inputs: Sequence[Any] | None,
    *,
    steps: int = 1,
    lr: float = 0.1,
    show: bool = True,
    masks: str | None = None,
) -> rp.Report:
    """See the module docstring. ``inputs``: NumPy arrays (or tensors) in the model's input order
    (default: :func:`probe`); ``steps``: SGD steps (0: forward only)."""
    import keras
    import torch

    from rnn_xframework.models import keras_reader, torch_code

    g = keras_reader.read(keras_model)
    keras_model = keras_reader.loaded(keras_model)
    arrays = [
        np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
        for x in (inputs if inputs is not None else probe(g))
    ]
    dtype = g.dtype()
    masks = masks or getattr(torch_module, "_port_masks", "right-padded")  # as to_torch made it
    before = torch_code.emit(g, masks)
    native = "native" if all(before.native.values()) else "library layers"
    common = {
        "cell": g.name,
        "backend": "torch",
        "ordering": native,
        "device": "cpu",
        "dtype": dtype,
        "reference": "keras",
    }
    tol = rp.TOLERANCES[(dtype, "cpu")]
    xs_t = [torch.from_numpy(a) for a in arrays]
    results: list[rp.Result] = []

    _reset(keras_model)
    _reset(torch_module)
    want = [np.asarray(y) for y in _listed(keras_model(arrays if len(arrays) > 1 else arrays[0], training=False))]
    was_training = torch_module.training
    torch_module.eval()
    with torch.no_grad():
        got = [y.detach().cpu().numpy() for y in _listed(torch_module(*xs_t))]
    torch_module.train(was_training)
    _reset(keras_model)
    _reset(torch_module)
    for i, (gv, wv) in enumerate(zip(got, want, strict=True)):
        max_abs, max_rel, _ = rp.compare([gv], [wv], [f"output {i}"])
        results.append(_row("forward", f"output {i} {tuple(wv.shape)}", max_abs, max_rel, "abs", tol.forward, common))

    trainable = sum(int(np.prod(p.shape)) for p in torch_module.parameters() if p.requires_grad)
    settings = [f"trainable parameters: keras {g.parameter_count()}, torch {trainable}"]
    if trainable != g.parameter_count():
        results.append(
            _row("params", f"{trainable} != {g.parameter_count()}", float("inf"), float("inf"), "abs", 0.0, common)
        )
    if steps > 0 and trainable == 0:
        results.append(rp.Result("training", **common, note="no trainable weights"))
    elif steps > 0 and keras.backend.backend() == "tensorflow":
        training = not _random(g)
        settings.append(
            f"{steps} SGD step(s), lr {lr}, "
            + ("training mode" if training else "inference mode (the model has dropout)")
        )
        rng = np.random.default_rng(1)
        targets = [rng.normal(size=w.shape).astype(w.dtype) for w in want]
        saved = [np.array(w) for w in keras_model.get_weights()]
        module = copy.deepcopy(torch_module)
        try:
            k_loss = _keras_train(keras_model, arrays, targets, steps, lr, training)
            t_loss = _torch_train(module, xs_t, targets, steps, lr, training)
            trained = torch_code.emit(keras_reader.read(keras_model), masks).state
        finally:
            keras_model.set_weights(saved)
            _reset(keras_model)
        max_abs, max_rel, _ = rp.compare(t_loss, k_loss, [f"step {i}" for i in range(steps)])
        results.append(_row("loss", f"{steps} step(s)", max_abs, max_rel, "rel", tol.training, common))
        state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items() if v.is_floating_point()}
        names = sorted(k for k in trained if k in state)
        if sorted(state) != sorted(k for k in trained if np.issubdtype(trained[k].dtype, np.floating)):
            results.append(
                _row("weights", "state_dict keys differ", float("inf"), float("inf"), "rel", tol.training, common)
            )
        else:
            max_abs, _, _ = rp.compare([state[k] for k in names], [trained[k] for k in names], names)
            moved = max(float(np.max(np.abs(trained[k] - before.state[k]), initial=0.0)) for k in names)
            max_rel = max_abs / moved if moved > 0 else (0.0 if max_abs == 0 else float("inf"))
            note = f"after {steps} step(s); rel: / largest update {moved:.1e}"
            results.append(_row("weights", note, max_abs, max_rel, "rel", tol.training, common))
    elif steps > 0:
        results.append(
            rp.Result("training", **common, note=f"needs Keras on TensorFlow, runs on {keras.backend.backend()}")
        )
    report = rp.Report(f"xf.compare: {g.name} (Keras) vs {type(torch_module).__name__} (torch)", results, settings)
    if show:
        rp.print_report(report)
    return report


def _row(
    check: str, note: str, max_abs: float, max_rel: float, metric: str, tolerance: float, common: dict[str, str]
) -> rp.Result:
    err = max_abs if metric == "abs" else max_rel
    status = rp.PASS if err <= tolerance else rp.FAIL
    return rp.Result(
        check, **common, max_abs=max_abs, max_rel=max_rel, metric=metric, tolerance=tolerance, status=status, note=note
    )

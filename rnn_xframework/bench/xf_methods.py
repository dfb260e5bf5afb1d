"""The library's own methods, registered one line each next to the framework peers.

Each builds ``layers.RNN([Cell(units), Cell(units)], return_sequences=True)`` (``Cell`` the
workload's cell type: SimpleRNN, LSTM or GRU)
on its backend (Keras-style initialization) and runs it uncompiled (``eager``) or through
``xf.compile(rnn, method)``. The compile (tracing, scripting, XLA, Inductor) happens in the
first call, which the harness reports as ``compile_s``. Frameworks are imported lazily, inside
the worker subprocess.

A bidirectional workload is two ``layers.Bidirectional(layers.RNN([Cell(units)],
return_sequences=True))`` in a row (``nn.LSTM(num_layers=2, bidirectional=True)``'s structure),
each compiled. A masked one passes ``mask=`` (the workload's lengths) to every call, with
``zero_output_for_mask=True`` (zeros in the padding, as PyTorch's packed output); a compiled
method that refuses it (:class:`~rnn_xframework.errors.UnsupportedConfigError`) gets an
``unsupported`` row, as does ``xf.compile`` refusing a ``Bidirectional``.
"""

from __future__ import annotations

from typing import Any

from rnn_xframework.bench import tf_peers, torch_peers
from rnn_xframework.bench.framework_setup import quiet_tensorflow
from rnn_xframework.bench.methods import ALL_CELLS, Runner, register
from rnn_xframework.bench.workloads import LAYERS, Workload


def _rnn(backend: str, w: Workload, device: str) -> Any:
    from rnn_xframework import layers

    kw = {"device": device} if backend == "torch" else {}
    cells = [getattr(layers, w.cell)(w.units, backend=backend, **kw) for _ in range(LAYERS)]
    rnn = layers.RNN(cells, return_sequences=True, zero_output_for_mask=w.masked)
    rnn.build((None, None, w.features))
    return rnn


def network(backend: str, w: Workload, device: str) -> list[Any]:
    """The layers run one after the other for ``w``: ``[RNN]`` of two cells, or two built
    ``Bidirectional`` of one cell each for a bidirectional workload."""
    from rnn_xframework import layers

    if not w.bidirectional:
        return [_rnn(backend, w, device)]
    kw = {"device": device} if backend == "torch" else {}
    sizes = [w.features, *[2 * w.units] * (LAYERS - 1)]
    return [
        layers.Bidirectional(
            layers.RNN([getattr(layers, w.cell)(w.units, backend=backend, **kw)], return_sequences=True),
            input_size=size,
        )
        for size in sizes
    ]


def _compiled(layer: Any, method: str) -> Any:
    import rnn_xframework as xf

    if method == "eager":
        return layer
    return xf.compile(layer, method)


def chain(fast: list[Any], mask: Any) -> Any:
    """A function of ``x``: ``x`` through the (compiled) layers in turn, each given ``mask`` unless
    it is ``None`` (one unmasked layer: that layer itself, no wrapper in the timed call)."""
    if len(fast) == 1 and mask is None:
        return fast[0]

    def forward(x: Any) -> Any:
        for layer in fast:
            x = layer(x) if mask is None else layer(x, mask=mask)
        return x

    return forward


def _torch(method: str) -> Any:
    def setup(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
        x = torch_peers._input(w, grad, device)
        mask = torch_peers.mask(w, device) if w.masked else None
        net = network("torch", w, device)
        fast = [_compiled(layer, method) for layer in net]
        params = [p for layer in net for p in layer.parameters() if p.requires_grad]
        forward = chain(fast, mask)
        return torch_peers._finish(lambda: forward(x), x, params, grad, device)

    setup.__doc__ = f"``xf.compile(rnn, {method!r})`` on torch" if method != "eager" else "uncompiled torch RNN"
    return setup


def _tf(method: str) -> Any:
    def setup(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
        quiet_tensorflow()
        import tensorflow as tf

        with tf.device(tf_peers._device_name(device)):
            x = tf_peers._input(w)
            mask = tf_peers.mask(w) if w.masked else None
            net = network("tensorflow", w, device)
        fast = [_compiled(layer, method) for layer in net]
        weights = [v for layer in net for v in layer.trainable_variables]
        return tf_peers._compile(chain(fast, mask), weights, x, grad, "eager", device)

    setup.__doc__ = f"``xf.compile(rnn, {method!r})`` on TensorFlow" if method != "eager" else "uncompiled TF RNN"
    return setup


def _torch_cell_loop(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The port users first write: the tutorial's loop with the library's uncompiled torch cells
    (``out0, h0 = cell0(xt, h0); out1, h1 = cell1(out0, h1)``), against ``torch RNNCell loop``."""
    import torch

    x = torch_peers._input(w, grad, device)
    cell0, cell1 = _rnn("torch", w, device).cells

    def forward() -> torch.Tensor:
        h0, h1 = cell0.get_initial_state(w.batch), cell1.get_initial_state(w.batch)
        outs = []
        for xt in x.unbind(1):
            out0, h0 = cell0(xt, h0)
            out1, h1 = cell1(out0, h1)
            outs.append(out1)
        return torch.stack(outs, 1)

    params = [p for c in (cell0, cell1) for p in c.parameters() if p.requires_grad]
    return torch_peers._finish(forward, x, params, grad, device)


def _tf_cell_loop(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The same with the library's TensorFlow cells, against ``keras cell loop eager``."""
    from rnn_xframework import layers

    return tf_peers.cell_loop(w, grad, device, "eager", lambda units: layers.SimpleRNNCell(units, backend="tensorflow"))


DEVICES = ("cpu", "cuda")
ANY = {"cells": ALL_CELLS, "masks": True, "bidirectional": True}
"""Every cell type and variant: a compiled method that refuses one reports it per row."""
register("xf torch cell loop", "torch", _torch_cell_loop, devices=DEVICES)
register("xf tf cell loop", "tensorflow", _tf_cell_loop, devices=DEVICES)
register("xf torch eager", "torch", _torch("eager"), devices=DEVICES, **ANY)
register("xf torch torchscript", "torch", _torch("torchscript"), devices=DEVICES, **ANY)
register("xf torch inductor", "torch", _torch("inductor"), devices=DEVICES, **ANY)
register("xf torch triton", "torch", _torch("triton"), devices=("cuda",), **ANY)
register("xf torch cudagraph", "torch", _torch("cudagraph"), devices=("cuda",), **ANY)
register("xf torch auto", "torch", _torch("auto"), devices=DEVICES, **ANY)
register("xf tf eager", "tensorflow", _tf("eager"), devices=DEVICES, **ANY)
register("xf tf tf.function", "tensorflow", _tf("tf.function"), devices=DEVICES, **ANY)
register("xf tf xla", "tensorflow", _tf("xla"), devices=DEVICES, **ANY)
register("xf tf auto", "tensorflow", _tf("auto"), devices=DEVICES, **ANY)

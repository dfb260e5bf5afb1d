"""The TensorFlow graph loops behind ``xf.compile(rnn, "tf.function" | "xla")``, written for
tracing: each layer's input projected in one product, then only the recurrent product and the
cell's spec step per time step (:func:`cell_step`), unrolled or in a ``tf.while_loop``; XLA's
inference loop projects each step as it reads it instead (:func:`layer_major` ``per_step``). In a
training call with dropout each cell's masks (:class:`Dropped`) enter as tensors: the inputs are
multiplied before the projection and the state before the recurrent product, as Keras's cells do.
:mod:`~rnn_xframework.backends.tensorflow.compile.function` builds the graphs and the compiled object on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from rnn_xframework import cells, layouts
from rnn_xframework.backends.tensorflow.ops import STEP_OPS


class Weights(NamedTuple):
    """One cell's weights as the graph reads them: its variables, or tensors of their values."""

    kernel: Any
    recurrent_kernel: Any
    bias: Any  # None without use_bias


def weights_of(cell: Any) -> Weights:
    return Weights(cell.kernel, cell.recurrent_kernel, cell.bias)


class Dropped(NamedTuple):
    """One cell's dropout masks in a training call, as its ``get_dropout_mask`` /
    ``get_recurrent_dropout_mask`` give them (Keras's count: none, one, or one per gate)."""

    inputs: list[Any]  # [batch, in] each
    recurrent: list[Any]  # [batch, units] each


NO_DROPOUT = Dropped([], [])


def project(cell: Any, w: Weights, x: tf.Tensor, masks: Sequence[Any] = ()) -> tf.Tensor:
    """``x [(time,) batch, in] @ kernel + input bias`` -> ``[(time,) batch, G*units]`` (GRU
    ``reset_after``: bias row 0), one product over every step. With input dropout ``masks``
    (``[batch, in]``, the same at every step): ``x`` times the one mask, or gate block ``g``'s
    product on ``x * masks[g]`` (as :func:`rnn_xframework.cells.run_step`)."""

    def product(x: tf.Tensor, kernel: Any) -> tf.Tensor:
        if x.shape.rank == 2:
            return tf.matmul(x, kernel)
        flat = tf.matmul(tf.reshape(x, [-1, x.shape[2]]), kernel)
        return tf.reshape(flat, [x.shape[0], -1, kernel.shape[1]])

    if len(masks) < 2:
        xp = product(x if not masks else x * masks[0], w.kernel)
    else:
        blocks = tf.split(w.kernel, len(masks), axis=1)
        xp = tf.concat([product(x * m, k) for m, k in zip(masks, blocks, strict=True)], -1)
    if w.bias is None:
        return xp
    return xp + layouts.get(cell.layout_name).bias_parts(w.bias)[0]


def cell_step(
    cell: Any, w: Weights, xp: tf.Tensor, state: list[tf.Tensor], masks: Sequence[Any] = ()
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The cell's spec step (:mod:`rnn_xframework.cells`) on a projected input ``xp`` (input bias
    included); the recurrent product and bias read ``w``, on the state times its recurrent
    dropout ``masks`` (:func:`rnn_xframework.cells.dropped_recurrent`)."""
    spec = cells.spec_of(cell)
    b_rec = None if w.bias is None else layouts.get(cell.layout_name).bias_parts(w.bias)[1]
    weights = cells.StepWeights(w.kernel, w.recurrent_kernel, None, b_rec)
    recurrent = cells.dropped_recurrent(STEP_OPS, weights, cell.units, spec.n_gates, masks)
    return spec.step(STEP_OPS, cell.portable_config(), xp, recurrent, state)


Step = Callable[[Any, Any], tuple[tf.Tensor, Any]]


def run_steps(n: int, step: Step, state: Any, unroll: bool) -> tuple[tf.Tensor, Any]:
    """``state`` through ``step(t, state) -> (out [batch, units], state)`` for ``t < n``.

    Unrolled in the graph (plain ``tf.function`` runs that fastest) or as one ``tf.while_loop``
    (XLA compiles it in a fraction of the time, and it runs faster). Returns the outputs
    ``[n, batch, units]`` and the final state.
    """
    if unroll:
        outs = []
        for t in range(n):
            out, state = step(t, state)
            outs.append(out)
        return tf.stack(outs, 0), state
    out0, state0 = step(0, state)
    if n == 1:  # no loop: a while loop of one iteration breaks XLA's gradient (size-1 stacks)
        return out0[None], state0
    # out0 gave the output's shape; the loop runs every step, step 0 included (its ops above are
    # unused then, and pruned)
    outs = tf.TensorArray(out0.dtype, size=n, element_shape=out0.shape)

    def body(t: tf.Tensor, state: Any, outs: tf.TensorArray) -> tuple[Any, ...]:
        out, state = step(t, state)
        return t + 1, state, outs.write(t, out)

    # maximum_iterations: XLA needs fixed list sizes for the gradient's stacks
    _, state, outs = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), state, outs), maximum_iterations=n)
    return outs.stack(), state


Layers = list[tuple[Any, Weights]]


def hold_step(step: Step, keep: Any, zero_output: bool) -> Step:
    """``step`` with Keras's mask (``keep[t]`` ``[batch, 1]`` bool, true = real step), on the carry
    ``(state, previous output)``: at a masked step the state is kept and the output repeats the
    previous one (zeros before the first real step), or is zeros with ``zero_output``. A selection
    (``tf.where``), never a blend, as the uncompiled RNN's :func:`rnn_xframework.orderings.hold`."""

    def masked(t: Any, carry: Any) -> tuple[tf.Tensor, Any]:
        state, previous = carry
        out, new = step(t, state)
        k = keep[t]
        new = tf.nest.map_structure(lambda n, o: tf.where(k, n, o), new, state)
        out = tf.where(k, out, tf.zeros_like(out) if zero_output else previous)
        return out, (new, out)

    return masked


def run_masked(n: int, step: Step, state: Any, unroll: bool, keep: Any, zero_output: bool, units: int) -> Any:
    """:func:`run_steps`, through :func:`hold_step` when ``keep`` (``[batch, time]`` bool, true =
    real) is given."""
    if keep is None:
        return run_steps(n, step, state, unroll)
    first = tf.nest.flatten(state)[0]
    batch = first.shape[0] if first.shape[0] is not None else tf.shape(first)[0]  # static where known
    previous = tf.zeros([batch, units], first.dtype)
    outs, (state, _) = run_steps(n, hold_step(step, mask_steps(keep, unroll), zero_output), (state, previous), unroll)
    return outs, state


class _Columns:
    """``keep [batch, time]`` read a step at a time inside a ``tf.while_loop``: ``columns[t]`` ``[batch, 1]``."""

    def __init__(self, keep: tf.Tensor) -> None:
        self.keep = keep

    def __getitem__(self, t: Any) -> tf.Tensor:
        return tf.gather(self.keep, t, axis=1)[:, None]


def mask_steps(keep: tf.Tensor, unroll: bool) -> Any:
    """``keep [batch, time]`` (bool) indexed by step as ``[batch, 1]`` columns: a list from one
    ``unstack`` when unrolled, else :class:`_Columns`. Never transposed: TensorFlow's oneDNN graph
    pass logs an error to stderr for a bool transpose ("oneDNN supports DT_BOOL only on platforms
    with AVX-512"), and grappler moves a transpose of the mask cast to floats onto the bool."""
    return [k[:, None] for k in tf.unstack(keep, num=keep.shape[1], axis=1)] if unroll else _Columns(keep)


class _Steps:
    """``seq [time, ...]`` read a step at a time inside a ``tf.while_loop``: ``steps[t]``.

    From a ``TensorArray`` unstacked once: under XLA that runs W1 about 25% faster than slicing
    ``seq[t]`` with the loop's tensor index (measured, docs/performance.md)."""

    def __init__(self, seq: tf.Tensor) -> None:
        self.array = tf.TensorArray(seq.dtype, size=seq.shape[0], element_shape=seq.shape[1:]).unstack(seq)

    def __getitem__(self, t: Any) -> tf.Tensor:
        return self.array.read(t)


def steps_of(xp: tf.Tensor, unroll: bool) -> Any:
    """``xp [time, ...]`` indexed by step: a list from one ``unstack`` when unrolled (its gradient is
    one ``stack``; a slice per step would make a full-size zero gradient per step), else a
    :class:`_Steps` that the while loop reads with its tensor index."""
    return tf.unstack(xp, num=xp.shape[0]) if unroll else _Steps(xp)


def summed_step(cell: Any, w: Weights, xs: Any) -> Step:
    """The step of a cell whose spec sums its recurrent product with the input projection
    (:attr:`rnn_xframework.cells.CellSpec.sums_recurrent`) on ``xs[t]`` ``[batch, in]``: one
    product, ``[x_t, h] @ [kernel; recurrent_kernel]`` plus both biases, then the spec's step with
    that sum and a ``recurrent`` that adds nothing. Results agree with :func:`cell_step` within
    float rounding."""
    spec, config = cells.spec_of(cell), cell.portable_config()
    kernel = tf.concat([w.kernel, w.recurrent_kernel], 0)
    bias = None
    if w.bias is not None:
        b_in, b_rec = layouts.get(cell.layout_name).bias_parts(w.bias)
        bias = b_in if b_rec is None else b_in + b_rec

    def step(t: Any, state: list[Any]) -> tuple[tf.Tensor, list[Any]]:
        z = tf.matmul(tf.concat([xs[t], state[0]], 1), kernel)
        return spec.step(STEP_OPS, config, z if bias is None else z + bias, _nothing, state)

    return step


def _nothing(h: Any, start: int, stop: int) -> float:
    """The recurrent product of :func:`summed_step`'s step: already in the input projection."""
    return 0.0


def layer_major(
    layers: Layers,
    seq: tf.Tensor,
    states: list[Any],
    unroll: bool,
    keep: Any = None,
    zero_output: bool = False,
    drops: Sequence[Dropped] | None = None,
    per_step: bool = False,
) -> tuple[tf.Tensor, list[Any]]:
    """Each layer over the whole ``seq [time, batch, in]``, its input projected in one product
    (with ``keep``, masked: :func:`hold_step`; with ``drops``, one :class:`Dropped` per layer).

    ``per_step`` (the XLA inference loop; no dropout): nothing precomputed, each step's input
    projected as it is read, in :func:`summed_step`'s one product where the cell's spec allows.
    XLA's CPU products are slow on a whole-sequence projection and fast on small per-step ones
    (docs/performance.md)."""
    steps = seq.shape[0]
    new_states = []
    for (cell, w), state, d in zip(layers, states, drops or [NO_DROPOUT] * len(layers), strict=True):
        if per_step and cells.spec_of(cell).sums_recurrent:
            step = summed_step(cell, w, steps_of(seq, unroll))
        else:
            xs = steps_of(seq if per_step else project(cell, w, seq, d.inputs), unroll)

            def step(t: Any, s: list[Any], cell: Any = cell, w: Weights = w, xs: Any = xs, d: Dropped = d) -> Any:
                xp = project(cell, w, xs[t], d.inputs) if per_step else xs[t]
                return cell_step(cell, w, xp, s, d.recurrent)

        seq, state = run_masked(steps, step, state, unroll, keep, zero_output, cell.units)
        new_states.append(state)
    return seq, new_states


def timestep_major(
    layers: Layers,
    seq: tf.Tensor,
    states: list[Any],
    unroll: bool,
    keep: Any = None,
    zero_output: bool = False,
    drops: Sequence[Dropped] | None = None,
) -> tuple[tf.Tensor, list[Any]]:
    """One loop over time through every layer; only the first layer's projection is precomputed
    (with ``keep``, masked: :func:`hold_step` on every layer's state and the top output; with
    ``drops``, one :class:`Dropped` per layer).

    Half the loop iterations of :func:`layer_major` for two layers: faster where per-step
    overhead, not matrix products, dominates (small batch and units).
    """
    drops = list(drops or [NO_DROPOUT] * len(layers))
    first, w0 = layers[0]
    xp = steps_of(project(first, w0, seq, drops[0].inputs), unroll)

    def step(t: Any, states: list[Any]) -> tuple[tf.Tensor, list[Any]]:
        out, new = cell_step(first, w0, xp[t], states[0], drops[0].recurrent)
        new_states = [new]
        for (cell, w), state, d in zip(layers[1:], states[1:], drops[1:], strict=True):
            out, new = cell_step(cell, w, project(cell, w, out, d.inputs), state, d.recurrent)
            new_states.append(new)
        return out, new_states

    return run_masked(seq.shape[0], step, states, unroll, keep, zero_output, layers[-1][0].units)

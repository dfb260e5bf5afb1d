"""``xf.compile(rnn, "cpu")``: SimpleRNN, LSTM and GRU layers whose whole time loop is one native call.

Each layer projects its whole input sequence in one GEMM (``xp = x W_ih^T + b``, a
PyTorch op, so autograd reaches ``weight_ih`` and the biases as usual), then runs the
recurrence in :mod:`~rnn_xframework.backends.torch.compile.cpu_build`'s C loop: forward and
a hand-written backward (BPTT) wrapped in one ``torch.autograd.Function`` per layer
(:mod:`~rnn_xframework.backends.torch.compile.cpu_recurrences`), whose
gradients reach the cells' own ``weight_hh`` / ``bias_hh``. Layers hand each other time-major
contiguous sequences (no copy between layers). A SimpleRNN layer's recurrence is
``h_t = act(xp_t + h_{t-1} W_hh^T)`` (tanh or relu; written over ``xp``), its
backward ``dz_t = (dy_t + dh) act'``, ``dh = dz_t W_hh``. Cell types without a ``cpu`` recurrence
in :data:`~rnn_xframework.backends.torch.kinds.KINDS` run their
:mod:`~rnn_xframework.backends.torch.compile.script_loops` layer.

Two LSTM layers of a call autograd does not record, up to 8 rows, run in one C call on two threads: two
layers in a row pipelined (:meth:`CpuLSTMLayer.pipelined`; each layer projects its input step by step
there, on its own thread, instead of one GEMM), a ``Bidirectional``'s two directions side by side
(:meth:`CpuLoop.run_both`). Weights up to W1's size reach the C loop transposed from a per-thread cache
(:func:`~rnn_xframework.backends.torch.compile.cpu_scratch.transposed`), checked against their bytes.

Exact for what it accepts: ``nn.RNN``'s tanh and relu, PyTorch's LSTM and GRU gates (sigmoid,
tanh), both GRU forms (``reset_after=True``, PyTorch's, and ``reset_after=False``, which
``nn.GRU`` lacks), with or without bias, float32 and float64, on the CPU; results agree with the
uncompiled RNN within float rounding (tests/test_compile_cpu.py: 1e-5 / 1e-12). The backward is
once-differentiable (no double backward). ``"auto"`` picks this method for a CPU stack of LSTM /
GRU / SimpleRNN cells where the kernel builds (:data:`AUTO_RECURRENCES`;
:meth:`~rnn_xframework.backends.torch.TorchBackend.auto_method`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile import cpu_build, cpu_masked, cpu_scratch, script_loops
from rnn_xframework.backends.torch.compile import cpu_recurrences as rec
from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN
from rnn_xframework.backends.torch.compile.cpu_recurrences import Active, Lengths, Packed
from rnn_xframework.compiled import check_built
from rnn_xframework.errors import UnsupportedConfigError


def _time_major_projection(
    seq: Tensor, weight: Tensor, bias: Tensor | None, recording: bool = True, slot: str | None = None
) -> Tensor:
    """``seq`` (batch-first, any strides; a time-major contiguous sequence seen batch-first costs
    no copy) projected time-major: ``[time, batch, G*units]`` contiguous, one GEMM; a tensor of its
    own to autograd (``_unsafe_view``, as ``torch.matmul`` returns), which an in-place Function may
    overwrite without the copies autograd makes for a view's base. A call autograd does not
    record (``recording`` false) makes its time-major copy in a
    :mod:`~rnn_xframework.backends.torch.compile.cpu_scratch` buffer, and its projection too where
    ``slot`` names one (a projection dead when the layer returns)."""
    steps, batch = seq.shape[1], seq.shape[0]
    if recording:
        flat = _time_major_rows(seq)
        out = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
        return torch.ops.aten._unsafe_view(out, (steps, batch, weight.shape[0]))
    xp = _packed_projection(_time_major_scratch(seq).view(steps * batch, seq.shape[2]), weight, bias, slot)
    return xp.view(steps, batch, weight.shape[0])


def _time_major_rows(seq: Tensor) -> Tensor:
    """``seq [batch, time, in]`` (any strides) as time-major rows ``[time * batch, in]``: a view of a
    time-major contiguous sequence seen batch-first, else a copy (autograd records either)."""
    tm = seq.transpose(0, 1)
    return tm.reshape(tm.shape[0] * tm.shape[1], tm.shape[2])


def _time_major_scratch(seq: Tensor) -> Tensor:
    """``seq [batch, time, in]`` as a time-major contiguous ``[time, batch, in]``: a view where it is one,
    else a copy into the scratch buffer ``time-major`` (a call autograd does not record)."""
    tm = seq.transpose(0, 1)
    return tm if tm.is_contiguous() else cpu_scratch.buffer("time-major", tuple(tm.shape), tm).copy_(tm)


def _packed_projection(seq: Tensor, weight: Tensor, bias: Tensor | None, slot: str | None) -> Tensor:
    """``seq [N, in]`` (e.g. packed: :class:`~rnn_xframework.backends.torch.compile.cpu_recurrences.Packed`)
    projected: ``[N, G*units]``, one GEMM, into the scratch buffer ``slot`` (``None``: a fresh tensor); a
    call autograd does not record (:mod:`~rnn_xframework.backends.torch.compile.cpu_scratch`)."""
    out = rec.empty(seq, (seq.shape[0], weight.shape[0]), slot)
    return torch.mm(seq, weight.t(), out=out) if bias is None else torch.addmm(bias, seq, weight.t(), out=out)


Mid = str | None
"""A layer call's ``mid``: ``None``, or the :mod:`~rnn_xframework.backends.torch.compile.cpu_scratch` slot
that a call autograd does not record writes ``y`` into, where the caller only reads it as the next
layer's input (:class:`CpuLoop`'s layers below the last); the final ``h`` is then a copy."""


def _last(y: Tensor, mid: Mid) -> Tensor:
    """The final ``h`` of a time-major ``y``: its last step, copied where ``y`` is a scratch buffer."""
    return y[-1] if mid is None else y[-1].clone()


ONEDNN_MIN_BATCH = 8
"""A float32 LSTM layer with a batch above this runs oneDNN's LSTM primitive (``aten::mkldnn_rnn_layer``,
``nn.LSTM``'s own, bit for bit) where autograd does not record the call, else the C loop. 8 is ``cpu_mm.h``'s
``SMALL_ROWS``: up to it the C loop's own product wins (W1: 0.14 ms a layer against 0.4-0.5); above it oneDNN's
forward wins or ties (W2 47.2 against 50.4 ms, W3 706 against 708), while the C loop's forward and BPTT beat
oneDNN's forward and PyTorch's backward (W2 198 against 215 ms). In one process, interleaved (docs/performance.md)."""


def _onednn_lstm(c: nn.Module, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """One LSTM layer through ``aten::mkldnn_rnn_layer`` (time-major, PyTorch's gate order), a call
    autograd does not record. Same results as ``nn.LSTM`` on the CPU, bit for bit."""
    tm = _time_major_scratch(seq)
    hid = c.weight_hh.shape[1]
    zeros = c.weight_hh.new_zeros(4 * hid)
    has_bias = c.bias_ih is not None
    out = torch.ops.aten.mkldnn_rnn_layer(
        tm, c.weight_ih.contiguous(), c.weight_hh.contiguous(), c.bias_ih if has_bias else zeros,
        c.bias_hh if has_bias else zeros,
        state[0].contiguous(), state[1].contiguous(), False, [], 2, hid, 1, has_bias, False, False, False,
    )  # fmt: skip
    return out[0].transpose(0, 1), [out[1], out[2]]


class CpuLSTMLayer(nn.Module):
    """An LSTM layer (PyTorch's gate order and parameters) over the native recurrence."""

    takes_active = True  # runs right-padded masked calls (cpu_masked.py)

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(
        self, seq: Tensor, state: list[Tensor], active: Active = None, lengths: Lengths = None, mid: Mid = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``seq [batch, time, in]`` (any strides), ``state [h, c]`` -> ``(y [batch, time, units], [h, c])``;
        ``active`` / ``lengths``: see :data:`Active` / :data:`Lengths` (oneDNN takes neither: the C loop
        runs those calls); ``mid``: :data:`Mid`."""
        c, bias = self.cell, self.bias()
        recording = rec.recording(lengths, seq, *state, c.weight_ih, c.weight_hh, bias)
        if (
            active is None
            and lengths is None
            and seq.dtype == torch.float32
            and seq.shape[0] > ONEDNN_MIN_BATCH
            and torch._C._get_mkldnn_enabled()
            and not recording
        ):
            return _onednn_lstm(c, seq, state)
        h0, c0 = state[0].contiguous(), state[1].contiguous()
        if recording:
            y, c_last = rec.LSTMRecurrence.apply(_time_major_rows(seq), c.weight_ih, bias, c.weight_hh, h0, c0, active)
            return y.transpose(0, 1), [y[-1], c_last]
        xp = _time_major_projection(seq, c.weight_ih, bias, False, "xp")
        y, c_last = rec.lstm_forward(xp, c.weight_hh, h0, c0, False, active, lengths, out=mid)[:2]
        return y.transpose(0, 1), [_last(y, mid), c_last]

    def pairs_with(self, other: nn.Module, seq: Tensor, state: list[Tensor], other_state: list[Tensor]) -> bool:
        """Whether this layer and ``other``, another LSTM layer, run in one C call on two threads for this call
        (:meth:`pipelined`, ``other`` the layer above; :meth:`CpuLoop.run_both`, ``other`` independent): float32
        or float64, a batch of at most :data:`~rnn_xframework.backends.torch.compile.cpu_recurrences.PIPELINE_MAX_BATCH`
        rows, torch on two threads or more, and a call autograd does not record."""
        if not isinstance(other, CpuLSTMLayer) or seq.shape[0] > rec.PIPELINE_MAX_BATCH or torch.get_num_threads() < 2:
            return False
        if seq.dtype not in (torch.float32, torch.float64):
            return False
        c, u = self.cell, other.cell
        tensors = (seq, *state, *other_state, c.weight_ih, c.weight_hh, u.weight_ih, u.weight_hh)
        biases = tuple(b for b in (c.bias_ih, c.bias_hh, u.bias_ih, u.bias_hh) if b is not None)
        return not rec.recording(None, *tensors, *biases)

    def bias(self) -> Tensor | None:
        """Both biases summed (the projection's), or ``None`` without bias."""
        c = self.cell
        return None if c.bias_ih is None else c.bias_ih + c.bias_hh

    def pipelined(
        self, upper: CpuLSTMLayer, seq: Tensor, state: list[Tensor], upper_state: list[Tensor], lengths: Lengths = None
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """This layer and ``upper`` in one call, pipelined (where :meth:`pairs_with`):
        ``seq [batch, time, in]`` -> ``(y [batch, time, upper units], [h, c], upper's [h, c])``;
        ``lengths``: :data:`Lengths` (a right-padded masked call's rows in their own order)."""
        c, u = self.cell, upper.cell
        y, low, high, _ = rec.lstm_pair_forward(
            _time_major_scratch(seq), c.weight_ih, self.bias(), c.weight_hh, u.weight_ih, upper.bias(), u.weight_hh,
            state, upper_state, lengths=lengths,
        )  # fmt: skip
        return y.transpose(0, 1), low, high

    def packed(self, seq: Tensor, state: list[Tensor], rows: Packed) -> tuple[Tensor, list[Tensor]]:
        """``seq [N, in]`` packed (:class:`Packed`), ``state [h, c]`` (rows sorted longest first) ->
        ``(y, [h, c])``: ``y [N, units]`` packed where ``rows.out``, else ``[batch, time, units]``. A call
        autograd does not record."""
        c = self.cell
        xp = _packed_projection(seq, c.weight_ih, self.bias(), "xp")
        h0 = state[0].contiguous()
        y, c_last = rec.lstm_forward(xp, c.weight_hh, h0, state[1].contiguous(), save=False, packed=rows)[:2]
        seq, h = rows.layer_out(y, h0)
        return seq, [h, c_last]


class CpuGRULayer(nn.Module):
    """A GRU layer (PyTorch's gate order ``r, z, n`` and parameters) over the native recurrence;
    ``reset_after=False`` takes the reset gate before the candidate's recurrent product."""

    takes_active = True

    def __init__(self, cell: nn.Module, reset_after: bool) -> None:
        super().__init__()
        self.cell = cell
        self.reset_after = reset_after

    def forward(
        self, seq: Tensor, state: list[Tensor], active: Active = None, lengths: Lengths = None, mid: Mid = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``seq [batch, time, in]``, ``state [h]`` -> ``(y [batch, time, units], [h])``; ``active`` /
        ``lengths``: :data:`Active` / :data:`Lengths`; ``mid``: :data:`Mid`."""
        c = self.cell
        b = c.bias_hh if c.bias_hh is not None else c.weight_hh.new_zeros(c.weight_hh.shape[0])
        recording = rec.recording(lengths, seq, *state, c.weight_ih, c.weight_hh, c.bias_ih, b)
        h0 = state[0].contiguous()
        if recording:
            x = _time_major_rows(seq)
            y = rec.GRURecurrence.apply(x, c.weight_ih, c.bias_ih, c.weight_hh, b, h0, self.reset_after, active)
            return y.transpose(0, 1), [y[-1]]
        xp = _time_major_projection(seq, c.weight_ih, c.bias_ih, False, "xp")
        y = rec.gru_forward(xp, c.weight_hh, b, h0, self.reset_after, False, active, lengths, out=mid)[0]
        return y.transpose(0, 1), [_last(y, mid)]

    def packed(self, seq: Tensor, state: list[Tensor], rows: Packed) -> tuple[Tensor, list[Tensor]]:
        """As :meth:`CpuLSTMLayer.packed`, ``state [h]``."""
        c = self.cell
        xp = _packed_projection(seq, c.weight_ih, c.bias_ih, "xp")
        b = c.bias_hh if c.bias_hh is not None else c.weight_hh.new_zeros(c.weight_hh.shape[0])
        h0 = state[0].contiguous()
        y = rec.gru_forward(xp, c.weight_hh, b, h0, self.reset_after, False, packed=rows)[0]
        seq, h = rows.layer_out(y, h0)
        return seq, [h]


class CpuSimpleRNNLayer(nn.Module):
    """A SimpleRNN layer (``nn.RNNCell``'s parameters, tanh or relu) over the native recurrence:
    ``h_t = act(x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T)``."""

    takes_active = True

    def __init__(self, cell: nn.Module, relu: bool) -> None:
        super().__init__()
        self.cell = cell
        self.relu = relu

    def forward(
        self, seq: Tensor, state: list[Tensor], active: Active = None, lengths: Lengths = None, mid: Mid = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``seq [batch, time, in]``, ``state [h]`` -> ``(y [batch, time, units], [h])``; ``active`` /
        ``lengths``: :data:`Active` / :data:`Lengths`; ``mid``: :data:`Mid` (``y`` is written over the
        projection: the projection goes there)."""
        c = self.cell
        bias = None if c.bias_ih is None else c.bias_ih + c.bias_hh
        recording = rec.recording(lengths, seq, *state, c.weight_ih, c.weight_hh, bias)
        xp = _time_major_projection(seq, c.weight_ih, bias, recording, mid)
        h0 = state[0].contiguous()
        if recording:
            y, h_last = rec.RNNRecurrence.apply(xp, c.weight_hh, h0, self.relu, active)
            return y.transpose(0, 1), [h_last]
        y = rec.rnn_forward(xp, c.weight_hh, h0, self.relu, active, lengths)
        return y.transpose(0, 1), [_last(y, mid)]

    def packed(self, seq: Tensor, state: list[Tensor], rows: Packed) -> tuple[Tensor, list[Tensor]]:
        """As :meth:`CpuLSTMLayer.packed`, ``state [h]``."""
        c = self.cell
        bias = None if c.bias_ih is None else c.bias_ih + c.bias_hh
        h0 = state[0].contiguous()
        xp = _packed_projection(seq, c.weight_ih, bias, rows.slot if rows.out else "xp")  # packed y over xp
        y = rec.rnn_forward(xp, c.weight_hh, h0, self.relu, packed=rows)
        seq, h = rows.layer_out(y, h0)
        return seq, [h]


def supports_cell(cell: Any) -> bool:
    """Whether the kernel computes this built torch cell's step: a cell type whose torch row
    (:data:`~rnn_xframework.backends.torch.kinds.KINDS`) names a ``cpu`` recurrence (its
    parameters are then in that row's ``torch.nn`` cell's gate order), with that cell's activations."""
    row = kinds.get(cell.cell_kind)
    if row is None or row.cpu is None:
        return False
    return all(cell.config[k] in allowed for k, allowed in row.supports.items())


AUTO_RECURRENCES = ("lstm", "gru", "rnn")
"""The recurrences for which ``"auto"`` picks this method (:func:`auto_picks`): all three. Measured on a
quiet 2-core Xeon, in one process, interleaved, float32, two-layer stacks (docs/performance.md), the C
loop beats ``"torchscript"`` for SimpleRNN at W1 (0.26 vs 0.43 ms forward, 0.88 vs 1.65 ms with
backward) and matches or beats it at W2 (12.9 vs 13.2 ms, 35.0 vs 39.3 ms)."""


def auto_picks(cell: Any) -> bool:
    """Whether ``"auto"`` runs this built torch cell on the kernel: :func:`supports_cell`, and its
    recurrence is one of :data:`AUTO_RECURRENCES`."""
    return supports_cell(cell) and kinds.get(cell.cell_kind).cpu in AUTO_RECURRENCES


def layer_for(cell: Any) -> nn.Module:
    """The layer of a built torch cell: its row's ``cpu`` recurrence where :func:`supports_cell`,
    else the script loop's layer (same results)."""
    if not supports_cell(cell):
        return script_loops.layer_for(cell, inplace=False)
    recurrence = kinds.get(cell.cell_kind).cpu
    if recurrence == "lstm":
        return CpuLSTMLayer(cell.cell)
    if recurrence == "gru":
        return CpuGRULayer(cell.cell, bool(cell.config.get("reset_after", True)))
    return CpuSimpleRNNLayer(cell.cell, cell.config["activation"] == "relu")


class CpuLoop(nn.Module):
    """``(x [batch, time, in], states) -> (y, states)``, layer by layer, as
    :class:`~rnn_xframework.backends.torch.compile.script_loops.FastLoop`. An empty batch or
    sequence, or a device other than the CPU, runs the script loop's layers (same results)."""

    def __init__(self, rnn: Any) -> None:
        super().__init__()
        self.cells = nn.ModuleList([layer_for(c) for c in rnn.cells])
        self.plain = nn.ModuleList([script_loops.layer_for(c, inplace=False) for c in rnn.cells])
        self.return_sequences = rnn.return_sequences
        self.go_backwards = rnn.go_backwards

    def forward(self, x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        seq = x.flip(1) if self.go_backwards else x
        kernel = x.shape[0] > 0 and x.shape[1] > 0 and x.device.type == "cpu"
        new_states: list[list[Tensor]] = []
        layers = self.cells if kernel else self.plain
        with cpu_scratch.session():
            i = 0
            while i < len(layers):
                layer, state = layers[i], states[i]
                upper = layers[i + 1] if kernel and i + 1 < len(layers) else None
                if (
                    upper is not None
                    and isinstance(layer, CpuLSTMLayer)
                    and layer.pairs_with(upper, seq, state, states[i + 1])
                ):
                    seq, state, upper_state = layer.pipelined(upper, seq, state, states[i + 1])
                    new_states += [state, upper_state]
                    i += 2
                    continue
                if kernel and i < len(states) - 1 and getattr(layer, "takes_active", False):  # y: next layer's input
                    seq, state = layer(seq, state, mid=f"out{i % 2}")
                else:
                    seq, state = layer(seq, state)
                new_states.append(state)
                i += 1
        y = seq if self.return_sequences else seq[:, -1]
        return y, new_states

    def run_both(
        self, other: CpuLoop, x: Tensor, states: list[list[Tensor]], other_states: list[list[Tensor]]
    ) -> tuple[tuple[Tensor, list[list[Tensor]]], tuple[Tensor, list[list[Tensor]]]]:
        """``(self(x, states), other(x, other_states))``, a ``Bidirectional``'s directions: one C call on two threads
        (``xf_lstm_fwd_both``) where each is one LSTM layer and :meth:`CpuLSTMLayer.pairs_with`, else in turn."""
        a, b = self.cells, other.cells
        if not (len(a) == len(b) == 1 and isinstance(a[0], CpuLSTMLayer) and x.device.type == "cpu"):
            return self(x, states), other(x, other_states)
        if not (x.shape[0] > 0 and x.shape[1] > 0 and a[0].pairs_with(b[0], x, states[0], other_states[0])):
            return self(x, states), other(x, other_states)
        out = []
        with cpu_scratch.session():
            parts = []
            for loop, layer, slot, state in ((self, a[0], "xp", states[0]), (other, b[0], "xp-other", other_states[0])):
                seq = x.flip(1) if loop.go_backwards else x
                xp = _time_major_projection(seq, layer.cell.weight_ih, layer.bias(), False, slot)
                parts.append((xp, layer.cell.weight_hh, *state))
            ran_a, ran_b, _ = rec.lstm_forward_both(parts[0], parts[1])
        for loop, (y, c_last) in ((self, ran_a), (other, ran_b)):
            seq = y.transpose(0, 1)
            out.append((seq if loop.return_sequences else seq[:, -1], [[y[-1], c_last]]))
        return out[0], out[1]


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN` over :class:`CpuLoop`;
    ``torch.jit.save`` on it writes the TorchScript form (same results)."""
    check_built(rnn)
    cpu_build.library()  # refuses here, with the reason, where the kernel cannot be built
    if any(c.device.type != "cpu" for c in rnn.cells):
        raise UnsupportedConfigError(
            f"xf.compile(rnn, 'cpu'): the kernel runs on the CPU, the RNN is on {rnn.cells[0].device}; "
            "use xf.compile(rnn, 'torchscript') (or 'auto')"
        )
    from rnn_xframework.backends.torch.compile import torchscript

    loop = CpuLoop(rnn)
    return CompiledRNN(
        rnn,
        loop,
        "cpu",
        export=lambda: torchscript.script(torchscript.scriptable(rnn)),
        # right-padded masks in the C loop; other masks and dropout in training: the scripted masked loop
        masked=cpu_masked.CpuMaskedLoop(loop, torchscript.masked(rnn), bool(rnn.zero_output_for_mask)),
    )

"""The recurrent layers of the torch emitter (:mod:`~rnn_xframework.models.torch_code`):
``SimpleRNN`` / ``LSTM`` / ``GRU`` / ``RNN`` and ``Bidirectional``.

PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``, ``bidirectional=True`` for
a ``Bidirectional``) wherever they compute what Keras computes: one cell, no Keras dropout, no
``go_backwards``; a mask through packed sequences (right-padded; Keras's repeat-the-last-output
at masked steps restored by ``unpack``). Otherwise the library's torch ``layers.RNN`` (Keras
dropout with one mask per sequence, ``go_backwards``, stacked cells, masks with gaps), called
with ``training=self.training``. ``stateful=True`` keeps the final states on the module
(``<layer>_state``, detached) for the next call; ``reset_states()`` clears them.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from rnn_xframework import cells, layouts
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.models.graph import Layer, Node


def _native(kind: str) -> Any:
    """The torch backend's row for ``kind`` (:data:`~rnn_xframework.backends.torch.kinds.KINDS`), or ``None``."""
    return _kinds().get(kind)


def _kinds() -> Any:
    """The torch backend's per-type table, imported on use (importing this module loads no framework)."""
    from rnn_xframework.backends.torch import kinds

    return kinds


def _why_not_native(layer: Layer, masked: bool, masks: str) -> str | None:
    c = layer.config
    if len(c["cells"]) != 1:
        return "stacked cells"
    kind, config = c["cells"][0]["kind"], c["cells"][0]["config"]
    if _native(kind) is None:
        return f"{kind} has no torch.nn module"
    try:
        _kinds().check(kind, config)
    except UnsupportedConfigError as e:
        return str(e)
    if config.get("dropout", 0) or config.get("recurrent_dropout", 0):
        return "Keras dropout"
    if c.get("go_backwards"):
        return "go_backwards"
    if masked and masks == "any":
        return "masks with gaps (masks='any')"
    return None


def _flat_masked(e: Any, layer: Layer) -> bool:
    return any(n.mask for n in e.g.uses(layer.name))


def _native_state(kind: str, weights: list[np.ndarray], suffix: str) -> dict[str, np.ndarray]:
    return {f"{k}_l0{suffix}": v for k, v in layouts.get(kind).to_torch(weights).items()}


def _native_ctor(e: Any, kind: str, config: dict[str, Any], input_size: int, bidirectional: bool) -> str:
    row = _native(kind)
    extra = "".join(f", {k}={v!r}" for k, v in row.kwargs(config).items() if (k, v) != ("nonlinearity", "tanh"))
    bias = "" if config["use_bias"] else ", bias=False"
    both = ", bidirectional=True" if bidirectional else ""
    return f"nn.{row.module.__name__}({input_size}, {config['units']}{bias}{extra}, batch_first=True{both}{e.dt})"


def _freeze_hh(e: Any, layer: Layer, kind: str, config: dict[str, Any], suffixes: tuple[str, ...]) -> None:
    if config["use_bias"] and layouts.get(kind).bias_rows == 1:  # Keras has one bias: bias_hh stays zero
        for s in suffixes:
            e.freeze(layer, f"bias_hh_l0{s}")


def rnn_init(e: Any, layer: Layer) -> None:
    why = _why_not_native(layer, _flat_masked(e, layer), e.masks)
    ported = rnn_cells(layer)
    input_size = ported[0][2][0].shape[0]
    if why is None:
        kind, config, weights = ported[0]
        e.module(layer, _native_ctor(e, kind, config, input_size, False), _native_state(kind, weights, ""))
        _freeze_hh(e, layer, kind, config, ("",))
    else:
        _library(e, layer, ported, input_size)
    if layer.config.get("stateful"):
        e.code.stateful.append(layer.name)
        e.code.init.append(f"self.{layer.name}_state: list[torch.Tensor] | None = None")


def _cell_ctor(kind: str, config: dict[str, Any], dtype: str) -> str:
    defaults = {p.name: p.default for p in cells.get(kind).signature().parameters.values()}
    args = [str(config["units"])]
    args += [f"{k}={v!r}" for k, v in config.items() if k != "units" and defaults.get(k, inspect.Parameter.empty) != v]
    if dtype != "float32":
        args.append(f"dtype={dtype!r}")
    return f"layers.{kind}({', '.join(args)}, backend='torch')"


def _rnn_ctor(e: Any, layer: Layer, ported: list[Any], return_state: bool, input_size: int | None) -> str:
    cells_ = ", ".join(_cell_ctor(k, c, e.g.dtype()) for k, c, _ in ported)
    flags = f"return_sequences={layer.config['return_sequences']}, return_state={return_state}"
    if layer.config.get("go_backwards"):
        flags += ", go_backwards=True"
    if layer.config.get("zero_output_for_mask") and input_size is not None:  # a Bidirectional sets its own
        flags += ", zero_output_for_mask=True"
    return f"layers.RNN([{cells_}], {flags}" + ("" if input_size is None else f", input_size={input_size}") + ")"


def _library_module(e: Any, layer: Layer, ctor: str, weights: list[np.ndarray]) -> None:
    """``self.<layer> = <ctor>``, its state_dict read from the very expression, with ``weights``."""
    from rnn_xframework import layers

    e.code.uses_library = True
    module = eval(ctor, {"layers": layers})
    module.set_weights(weights)
    e.module(layer, ctor, {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}, native=False)


def _library(e: Any, layer: Layer, ported: list[Any], input_size: int) -> None:
    ctor = _rnn_ctor(e, layer, ported, True, input_size)
    _library_module(e, layer, ctor, [w for _, _, ws in ported for w in ws])


def rnn_call(e: Any, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    m = e.first_mask(node) if node.mask else None
    n, c = layer.name, layer.config
    kinds = [cell["kind"] for cell in c["cells"]]
    counts = [len(cells.get(k).states) for k in kinds]
    states = node.outputs[1:] if c["return_state"] else [f"{y}_s{i}" for i in range(sum(counts))]
    if c.get("stateful") and node.initial_state:
        raise UnsupportedConfigError(f"to_torch: {layer.keras_name} is stateful and given initial_state=")
    if e.code.native[n]:
        _native_call(e, layer, node, x, y, m, kinds[0], states)
    else:
        groups, at = [], 0
        for k in counts:
            groups.append(states[at : at + k])
            at += k
        if node.initial_state:
            init, at = [], 0
            for k in counts:
                init.append("[" + ", ".join(node.initial_state[at : at + k]) + "]")
                at += k
            initial = "[" + ", ".join(init) + "]"
        else:
            initial = f"self.{n}_state" if c.get("stateful") else "None"
        mask = f", mask={m}" if m else ""
        initial = "" if initial == "None" else f", initial_state={initial}"
        keep = c["return_state"] or c.get("stateful")
        target = f"{y}, {y}_states" if keep else f"{y}, _"
        e.add(f"{target} = self.{n}({x}{initial}, training=self.training{mask})")
        if c["return_state"]:
            _unpack_states(e, f"{y}_states", groups)
        if c.get("stateful"):
            e.add(f"self.{n}_state = [[s.detach() for s in layer_states] for layer_states in {y}_states]")
    e.mask[y] = e.first_mask(node) if c["return_sequences"] else None
    for s in node.outputs[1:]:
        e.mask[s] = None


def _initial(node: Node, lstm: bool, halves: int = 1) -> str:
    """``nn.LSTM``'s ``(h0, c0)`` / ``h0`` from Keras's initial states (``[h, c]`` per direction)."""
    s = node.initial_state
    per = len(s) // halves
    parts = [s[i * per : (i + 1) * per] for i in range(halves)]
    h = "torch.stack([" + ", ".join(p[0] for p in parts) + "])"
    if not lstm:
        return h
    return f"({h}, torch.stack([{', '.join(p[1] for p in parts)}]))"


def _native_call(e: Any, layer: Layer, node: Node, x: str, y: str, m: str | None, kind: str, states: list[str]) -> None:
    n, c, lstm = layer.name, layer.config, cells.get(kind).n_states == 2  # nn.LSTM: (h, c)
    hs = [f"{y}_h", f"{y}_c"] if lstm else [f"{y}_h"]
    target = f"{y}, ({hs[0]}, {hs[1]})" if lstm else f"{y}, {hs[0]}"
    if not (c["return_state"] or c.get("stateful")):
        target = f"{y}, _"
    if node.initial_state:
        init = ", " + _initial(node, lstm)
    elif c.get("stateful"):
        init = f", (self.{n}_state[0], self.{n}_state[1])" if lstm else f", self.{n}_state[0]"
        zeros = f"torch.zeros(1, {x}.shape[0], {c['cells'][0]['config']['units']}, dtype={x}.dtype)"
        e.add(f"if self.{n}_state is None:")
        e.add(f"    self.{n}_state = [{', '.join([zeros] * len(hs))}]")
    else:
        init = ""
    if m is None:
        e.add(f"{target} = self.{n}({x}{init})")
    else:
        kept = hs if c["return_state"] or c.get("stateful") else []
        _packed_call(e, n, x, y, m, target, init, y, not c.get("zero_output_for_mask"), kept, hs)
    if not c["return_sequences"]:
        e.add(f"{y} = {y}[:, -1]")
    if c.get("stateful"):
        e.add(f"self.{n}_state = [{', '.join(f'{h}.detach()' for h in hs)}]")
    if c["return_state"]:
        e.add(f"{', '.join(states)} = {', '.join(f'{h}[0]' for h in hs)}")


def _packed_call(
    e: Any, n: str, x: str, y: str, m: str, target: str, init: str, out: str, hold: bool, kept: list[str], hs: list[str]
) -> None:
    """The call of PyTorch's ``self.{n}`` on the sequences packed by the mask ``m``: ``out``
    unpacked to the full length (``hold``: padded steps repeat the last output, as Keras's
    ``zero_output_for_mask=False``), and each state in ``kept`` of a row with no step left at its
    initial value, as in Keras."""
    e.code.helpers.update({"mask_lengths", "pack", "unpack", "keep_empty"})
    e.add(f"{y}_lengths = mask_lengths({m})")
    e.add(f"{target} = self.{n}(pack({x}, {y}_lengths){init})")
    e.add(f"{out} = unpack({out}, {y}_lengths, {x}.shape[1], {hold})")
    for h, old in zip(kept, _olds(init, hs)[: len(kept)], strict=True):
        e.add(f"{h} = keep_empty({y}_lengths, {h}, {old})")


def _olds(init: str, hs: list[str]) -> list[str]:
    if not init:
        return [f"torch.zeros_like({h})" for h in hs]
    expr = init[2:]
    if len(hs) == 2:
        return [f"{expr}[0]", f"{expr}[1]"]
    return [expr]


# --- Bidirectional ------------------------------------------------------------------------------------
def bidirectional_init(e: Any, layer: Layer) -> None:
    fwd, bwd = layer.inner["forward"], layer.inner["backward"]
    masked = _flat_masked(e, layer)
    why = _why_not_native(fwd, masked, e.masks) or _why_not_native(
        Layer(bwd.name, "LSTM", {**bwd.config, "go_backwards": False}, bwd.weights), masked, e.masks
    )
    same = [{**c["config"]} for c in fwd.config["cells"]] == [{**c["config"]} for c in bwd.config["cells"]]
    if why is None and not bwd.config["go_backwards"]:
        why = "a backward layer that does not go backwards"
    if why is None and not same:
        why = "directions with different settings"
    if why is None and fwd.config.get("stateful"):
        why = "stateful directions"
    if why is not None:  # the library's torch Bidirectional over two library RNNs
        if fwd.config.get("stateful") or bwd.config.get("stateful"):
            raise UnsupportedConfigError(f"to_torch: {layer.keras_name} (Bidirectional) has stateful directions")
        fw_cells, bw_cells = rnn_cells(fwd), rnn_cells(bwd)
        merge = layer.config["merge_mode"]
        state = layer.config["return_state"]
        ctor = (
            f"layers.Bidirectional({_rnn_ctor(e, fwd, fw_cells, state, None)}, merge_mode={merge!r}, "
            f"backward_layer={_rnn_ctor(e, bwd, bw_cells, state, None)}, input_size={fw_cells[0][2][0].shape[0]})"
        )
        _library_module(e, layer, ctor, [w for _, _, ws in fw_cells + bw_cells for w in ws])
        return
    (kind, config, fw), (_, _, bw) = rnn_cells(fwd)[0], rnn_cells(bwd)[0]
    state = {**_native_state(kind, fw, ""), **_native_state(kind, bw, "_reverse")}
    e.module(layer, _native_ctor(e, kind, config, fw[0].shape[0], True), state)
    _freeze_hh(e, layer, kind, config, ("", "_reverse"))
    if not layer.trainable or not fwd.trainable:
        e.code.init.append(f"self.{layer.name}.requires_grad_(False)")


def _unpack_states(e: Any, states: str, groups: list[list[str]]) -> None:
    """``h, c = states[0]`` per layer: the library returns one list of states per layer."""
    for i, group in enumerate(groups):
        e.add(f"{group[0]} = {states}[{i}][0]" if len(group) == 1 else f"{', '.join(group)} = {states}[{i}]")


def _library_bidirectional_call(e: Any, layer: Layer, node: Node) -> None:
    c, n, x = layer.config, layer.name, node.inputs[0]
    outs = node.outputs[: 2 if c["merge_mode"] is None else 1]
    m = e.first_mask(node) if node.mask else None
    mask = f", mask={m}" if m else ""
    initial = f", initial_state=[{', '.join(node.initial_state)}]" if node.initial_state else ""
    y = outs[0] if len(outs) == 1 else "[" + ", ".join(outs) + "]"
    call = f"self.{n}({x}{initial}, training=self.training{mask})"
    if c["return_state"]:
        e.add(f"{y}, {outs[0]}_states = {call}")
        counts = [
            len(cells.get(k["kind"]).states) for d in ("forward", "backward") for k in layer.inner[d].config["cells"]
        ]
        names, groups = node.outputs[len(outs) :], []
        for k in counts:
            groups.append(names[:k])
            names = names[k:]
        _unpack_states(e, f"{outs[0]}_states", groups)
    else:
        e.add(f"{y} = {call}")
    mask_out = e.first_mask(node) if c["return_sequences"] else None
    for i, t in enumerate(node.outputs):
        e.mask[t] = mask_out if i < len(outs) else None


def bidirectional_call(e: Any, layer: Layer, node: Node) -> None:
    if not e.code.native[layer.name]:
        _library_bidirectional_call(e, layer, node)
        return
    fwd = layer.inner["forward"]
    kind = fwd.config["cells"][0]["kind"]
    units = fwd.config["cells"][0]["config"]["units"]
    lstm, c, n, x = cells.get(kind).n_states == 2, layer.config, layer.name, node.inputs[0]
    merge = c["merge_mode"]
    outs = node.outputs[: 2 if merge is None else 1]
    y = outs[0]
    seq = f"{y}_seq"
    hs = [f"{y}_h", f"{y}_c"] if lstm else [f"{y}_h"]
    target = f"{seq}, ({hs[0]}, {hs[1]})" if lstm else f"{seq}, {hs[0]}"
    if c["return_sequences"] and not c["return_state"]:
        target = f"{seq}, _"
    elif lstm and not c["return_state"]:
        target = f"{seq}, ({hs[0]}, _)"
    init = ", " + _initial(node, lstm, 2) if node.initial_state else ""
    m = e.first_mask(node) if node.mask else None
    if m is None:
        e.add(f"{target} = self.{n}({x}{init})")
    else:
        used = hs if c["return_state"] else [] if c["return_sequences"] else hs[:1]
        _packed_call(e, n, x, y, m, target, init, seq, False, used, hs)
    if c["return_sequences"]:
        a, b = f"{seq}[..., :{units}]", f"{seq}[..., {units}:]"
    else:
        a, b = f"{hs[0]}[0]", f"{hs[0]}[1]"
    if merge is None:
        e.add(f"{outs[0]}, {outs[1]} = {a}, {b}")
    elif merge == "concat":
        e.add(f"{y} = {seq}" if c["return_sequences"] else f"{y} = torch.cat([{a}, {b}], dim=-1)")
    else:
        expr = {"sum": f"{a} + {b}", "mul": f"{a} * {b}", "ave": f"({a} + {b}) / 2"}[merge]
        e.add(f"{y} = {expr}")
    if c["return_state"]:
        states = node.outputs[len(outs) :]
        per = [f"{h}[{d}]" for d in (0, 1) for h in hs]
        e.add(f"{', '.join(states)} = {', '.join(per)}")
    mask = e.first_mask(node) if c["return_sequences"] else None
    for i, t in enumerate(node.outputs):
        e.mask[t] = mask if i < len(outs) else None


def rnn_cells(layer: Layer) -> list[tuple[str, dict[str, Any], list[np.ndarray]]]:
    """``(cell kind, make_cell arguments, canonical weights)`` of each cell of a recurrent layer."""
    out = []
    for i, c in enumerate(layer.config["cells"]):
        names = layouts.get(c["kind"]).names(c["config"]["use_bias"])
        out.append((c["kind"], c["config"], [layer.weights[f"{i}.{n}"] for n in names]))
    return out


EMITTERS = {
    **{kind: (rnn_init, rnn_call) for kind in ("SimpleRNN", "LSTM", "GRU", "RNN")},
    "Bidirectional": (bidirectional_init, bidirectional_call),
}
"""The recurrent kinds of the emitter table (:data:`rnn_xframework.models.torch_code.EMITTERS`)."""

"""``mask=`` on a ``torch.jit.script``-ed library ``RNN`` and ``Bidirectional`` (issue 20): the
scripted module runs the masked loop of ``masked_loops.py`` over the same layers as its fast loop
and computes what the uncompiled module computes with that mask (Keras's semantics: states kept,
outputs held or zeroed per ``zero_output_for_mask``), for SimpleRNN, LSTM and GRU (both
``reset_after`` forms) stacks, every flag, both dtypes, general and right-padded masks, NaN in
the padding, and autograd; its ``state_dict`` stays the RNN's. Saved, it runs with a mask where
the library is not installed (tests/test_torch_script.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import TOL
from helpers import KINDS, make_cells, max_err, random_cell_states, random_cell_weights

from rnn_xframework import layers

torch = pytest.importorskip("torch")

BATCH, STEPS, FEATURES, UNITS = 3, 5, 4, 6
# a general mask (holes, a row starting masked, a row all masked) and a right-padded one (lengths
# 4, 2, 3: every row real for 2 steps, none at the last: the masked loop's two shortcuts)
GENERAL = np.array([[1, 1, 0, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
RIGHT_PADDED = np.arange(STEPS)[None, :] < np.array([4, 2, 3])[:, None]
MASKS = {"general": GENERAL, "right-padded": RIGHT_PADDED}
EDGES = {**MASKS, "all real": np.ones((BATCH, STEPS), bool), "none real": np.zeros((BATCH, STEPS), bool)}


def script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


def built(kind, dtype, rng, reset_after=True, **kw):
    """A built two-layer torch RNN of ``kind`` with random non-zero weights."""
    cells = make_cells("torch", kind, 2, UNITS, dtype, **({} if reset_after else {"reset_after": False}))
    rnn = layers.RNN(cells, **kw)
    rnn.build((None, None, FEATURES))
    rnn.set_weights(random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, dtype, reset_after=reset_after))
    return rnn


def tensors(out):
    """Every tensor of an output structure, in order (``(y, [[h, c], ...])``, ``[y, y_rev]``)."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensors(o)]
    return [out]


def assert_same(got, want, dtype):
    got, want = tensors(got), tensors(want)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    for g, w in zip(got, want, strict=True):
        assert max_err(g.detach(), w.detach()) <= TOL[dtype]


def as_tensor(mask):
    return torch.from_numpy(mask)


def torch_states(rng, kind, n_layers, dtype):
    return [
        [torch.from_numpy(s) for s in layer] for layer in random_cell_states(rng, kind, n_layers, BATCH, UNITS, dtype)
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_scripted_rnn_takes_a_mask(rng, dtype, kind, mask):
    """Before the scripted RNN took masks it raised here ("the scripted RNN takes no mask; call the
    uncompiled RNN")."""
    rnn = built(kind, dtype, rng, return_sequences=True, return_state=True)
    scripted = script(rnn)
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = torch_states(rng, kind, 2, dtype)
    m = as_tensor(MASKS[mask])
    assert_same(scripted(x, states, mask=m), rnn(x, states, mask=m), dtype)
    assert_same(scripted(x, states), rnn(x, states), dtype)  # an unmasked call after: the fast loop


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "flags",  # return_sequences, return_state, go_backwards, zero_output_for_mask, time_major
    [
        (False, False, False, False, False),
        (True, False, True, True, False),
        (True, True, True, False, True),
        (False, True, False, True, True),
        (True, False, False, False, False),
    ],
)
def test_scripted_masked_flags(rng, kind, flags):
    seq, state, back, zero, time_major = flags
    rnn = built(
        kind,
        "float64",
        rng,
        return_sequences=seq,
        return_state=state,
        go_backwards=back,
        zero_output_for_mask=zero,
        time_major=time_major,
    )
    x = torch.from_numpy(rng.normal(size=(STEPS, BATCH, FEATURES) if time_major else (BATCH, STEPS, FEATURES)))
    m = as_tensor(GENERAL)  # the mask stays [batch, time]
    assert_same(script(rnn)(x, mask=m), rnn(x, mask=m), "float64")


def loss_and_grads(model, rnn, x, states, mask, seed):
    """The parity suite's weighted loss of ``(y, states)`` and its gradients: inputs, every initial
    state, every trainable parameter of ``rnn`` (shared with the scripted module)."""
    gen = np.random.default_rng(seed)
    xt = torch.from_numpy(x).requires_grad_()
    st = [[torch.from_numpy(s).requires_grad_() for s in layer] for layer in states]
    y, final = model(xt, st, mask=mask)
    loss = (y * torch.from_numpy(gen.uniform(-1, 1, tuple(y.shape)))).sum()
    for s in (s for layer in final for s in layer):
        loss = loss + (s * torch.from_numpy(gen.uniform(-1, 1, tuple(s.shape)))).sum()
    params = [p for p in rnn.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [xt, *(s for layer in st for s in layer), *params])
    return float(loss.detach()), [g.numpy() for g in grads]


def assert_same_gradients(got, want):
    assert abs(got[0] - want[0]) <= TOL["float64"] * max(1.0, abs(want[0]))
    assert len(got[1]) == len(want[1]) > 0
    for g, w in zip(got[1], want[1], strict=True):
        assert np.isfinite(g).all() and max_err(g, w) <= TOL["float64"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", sorted(EDGES))
def test_scripted_masked_gradients_match(rng, kind, mask):
    """Autograd through the scripted masked loop, called three times (TorchScript's profiling
    executor optimizes the graph from the second call on): the eager module's gradients."""
    rnn = built(kind, "float64", rng, return_sequences=True, return_state=True)
    scripted = script(rnn)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    states = random_cell_states(rng, kind, 2, BATCH, UNITS, "float64")
    m = as_tensor(EDGES[mask])
    want = loss_and_grads(rnn, rnn, x, states, m, seed=7)
    for _ in range(3):
        assert_same_gradients(loss_and_grads(scripted, rnn, x, states, m, seed=7), want)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_nan_in_scripted_masked_padding_never_leaks(rng, kind):
    """NaN/inf in the padding: outputs and states as with zeros there, every gradient finite and
    equal to the zero-padded eager one."""
    rnn = built(kind, "float64", rng, return_sequences=True, return_state=True)
    scripted = script(rnn)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    clean = np.where(GENERAL[:, :, None], x, 0.0)
    bad = clean.copy()
    for i, (r, t) in enumerate(zip(*np.nonzero(~GENERAL), strict=True)):
        bad[r, t] = (np.nan, np.inf, -np.inf)[i % 3]
    m = as_tensor(GENERAL)
    got = scripted(torch.from_numpy(bad), mask=m)
    assert all(torch.isfinite(t).all() for t in tensors(got))
    assert_same(got, rnn(torch.from_numpy(clean), mask=m), "float64")
    states = random_cell_states(rng, kind, 2, BATCH, UNITS, "float64")
    want = loss_and_grads(rnn, rnn, clean, states, m, seed=3)
    assert_same_gradients(loss_and_grads(scripted, rnn, bad, states, m, seed=3), want)


@pytest.mark.parametrize("mask", sorted(EDGES))
def test_scripted_gru_reset_before_takes_a_mask(rng, mask):
    """Keras's ``GRUCell(reset_after=False)`` (the library's own torch cell): outputs, states and
    gradients of the scripted masked loop against the eager module."""
    rnn = built("GRUCell", "float64", rng, reset_after=False, return_sequences=True, return_state=True)
    scripted = script(rnn)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    states = random_cell_states(rng, "GRUCell", 2, BATCH, UNITS, "float64")
    m = as_tensor(EDGES[mask])
    assert_same(scripted(torch.from_numpy(x), mask=m), rnn(torch.from_numpy(x), mask=m), "float64")
    want = loss_and_grads(rnn, rnn, x, states, m, seed=5)
    assert_same_gradients(loss_and_grads(scripted, rnn, x, states, m, seed=5), want)


@pytest.mark.parametrize("kind", KINDS)
def test_scripted_mask_dtypes_and_shape(rng, kind):
    """A mask of any dtype (nonzero = a real step, as the uncompiled RNN reads it); a wrong shape
    raises naming the expected and the given shape."""
    rnn = built(kind, "float32", rng, return_sequences=True)
    scripted = script(rnn)
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32"))
    want = rnn(x, mask=as_tensor(GENERAL))
    for dtype in (torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64):
        assert max_err(scripted(x, mask=as_tensor(GENERAL).to(dtype)).detach(), want.detach()) <= TOL["float32"]
    scaled = as_tensor(GENERAL).to(torch.float32) * 0.5  # nonzero, not one
    assert max_err(scripted(x, mask=scaled).detach(), want.detach()) <= TOL["float32"]
    shape = r"RNN mask: expected shape \[3, 5\] \(batch, time\), got "
    with pytest.raises(torch.jit.Error, match=shape + r"\[3, 6\]"):
        scripted(x, mask=torch.ones(BATCH, STEPS + 1, dtype=torch.bool))
    with pytest.raises(torch.jit.Error, match=shape + r"\[5, 3\]"):
        scripted(x, mask=torch.ones(STEPS, BATCH, dtype=torch.bool))
    with pytest.raises(torch.jit.Error, match=shape + r"\[5\]"):
        scripted(x, mask=torch.ones(STEPS, dtype=torch.bool))


@pytest.mark.parametrize("kind", KINDS)
def test_scripted_masked_rnn_keeps_the_rnns_checkpoint_and_parameters(rng, kind):
    """One registration of each cell: the scripted module's ``state_dict`` keys are exactly the
    RNN's, ``load_state_dict`` round-trips strictly both ways, and the parameters are shared (new
    weights on the RNN show in the scripted masked call)."""
    rnn = built(kind, "float64", rng, return_sequences=True)
    scripted = script(rnn)
    assert list(scripted.state_dict()) == list(rnn.state_dict())
    assert len(list(scripted.parameters())) == len(list(rnn.parameters()))
    x, m = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES))), as_tensor(GENERAL)
    other = built(kind, "float64", np.random.default_rng(99), return_sequences=True)
    scripted.load_state_dict(other.state_dict(), strict=True)  # into the RNN's own parameters
    assert max_err(rnn(x, mask=m).detach(), other(x, mask=m).detach()) <= TOL["float64"]
    assert max_err(scripted(x, mask=m).detach(), other(x, mask=m).detach()) <= TOL["float64"]
    rnn.set_weights(random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, "float64"))
    assert max_err(scripted(x, mask=m).detach(), rnn(x, mask=m).detach()) <= TOL["float64"]
    other.load_state_dict(scripted.state_dict(), strict=True)
    assert max_err(other(x, mask=m).detach(), rnn(x, mask=m).detach()) <= TOL["float64"]


def test_scripted_masked_call_in_training_with_dropout_is_refused(rng):
    """The scripted module cannot draw Keras's dropout masks: in training mode with dropout it
    refuses, with a mask as without one; ``.eval()`` runs the masked loop."""
    cells = [layers.LSTMCell(UNITS, dropout=0.5, backend="torch", input_size=FEATURES)]
    rnn = layers.RNN(cells, return_sequences=True)
    scripted = script(rnn)
    x, m = torch.randn(BATCH, STEPS, FEATURES), as_tensor(GENERAL)
    with pytest.raises(torch.jit.Error, match="no dropout"):
        scripted(x, mask=m)
    scripted.eval()
    assert max_err(scripted(x, mask=m).detach(), rnn.eval()(x, mask=m).detach()) <= TOL["float32"]


def test_scripted_registered_cell_without_a_masked_loop_refuses_a_mask(mgu, rng):
    """A registered type (``MGUCell``) has no masked layer: its scripted RNN runs without a mask
    and refuses one, saying what to do."""
    stack = [layers.make_cell("MGUCell", backend="torch", units=UNITS, dtype="float64") for _ in range(2)]
    rnn = layers.RNN(stack, return_sequences=True)
    rnn.build((None, None, FEATURES))
    scripted = script(rnn)
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)))
    assert max_err(scripted(x).detach(), rnn(x).detach()) <= TOL["float64"]
    with pytest.raises(torch.jit.Error, match=r"takes no mask.*call the uncompiled RNN"):
        scripted(x, mask=as_tensor(GENERAL))


class Tagger(torch.nn.Module):
    """A user model passing a padding mask to the RNN, as code for Keras-style RNNs does."""

    def __init__(self, kind):
        super().__init__()
        cell = getattr(layers, kind)
        self.rnn = layers.RNN(
            [cell(UNITS, backend="torch", input_size=FEATURES), cell(UNITS, backend="torch")], return_sequences=True
        )
        self.head = torch.nn.Linear(UNITS, 2)

    def forward(self, x, mask: torch.Tensor):
        return self.head(self.rnn(x, mask=mask))


@pytest.mark.parametrize("kind", KINDS)
def test_a_user_model_passing_a_mask_scripts(kind):
    model = Tagger(kind).double()
    x, m = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64), as_tensor(RIGHT_PADDED)
    want = model(x, m)
    scripted = script(model)
    assert max_err(scripted(x, m).detach(), want.detach()) <= TOL["float64"]
    assert sorted(scripted.state_dict()) == sorted(model.state_dict())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("merge_mode", ["concat", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_scripted_bidirectional_takes_a_mask(rng, kind, merge_mode, return_sequences):
    """Both directions' scripted loops get the mask (the backward one reversed with its sequence);
    outputs, final states and gradients as the eager ``Bidirectional``'s, its checkpoint keys."""
    inner = layers.RNN(
        make_cells("torch", kind, 2, UNITS, "float64"), return_sequences=return_sequences, return_state=True
    )
    bi = layers.Bidirectional(inner, merge_mode=merge_mode, input_size=FEATURES).double()
    scripted = script(bi)
    assert list(scripted.state_dict()) == list(bi.state_dict())
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)))
    states = torch_states(rng, kind, 4, "float64")
    m = as_tensor(GENERAL)
    assert_same(scripted(x, states, mask=m), bi(x, states, mask=m), "float64")
    assert_same(scripted(x, mask=m.to(torch.int64)), bi(x, mask=m), "float64")
    params = [p for p in bi.parameters() if p.requires_grad]
    grads = []
    for model in (bi, scripted, scripted):
        xt = x.clone().requires_grad_()
        out = tensors(model(xt, mask=m))
        loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum() for t in out)
        grads.append(torch.autograd.grad(loss, [xt, *params]))
    for got in grads[1:]:
        for g, w in zip(got, grads[0], strict=True):
            assert max_err(g, w) <= TOL["float64"]

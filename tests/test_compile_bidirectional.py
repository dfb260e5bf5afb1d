"""``xf.compile`` of a ``Bidirectional``: both RNNs compiled with one method, merged as the
uncompiled layer merges, on torch and TensorFlow; outputs, states and (torch) gradients against
the uncompiled ``Bidirectional``; pickling as its recipe; the typed refusals."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, max_err, native, numpy

import rnn_xframework as xf
from rnn_xframework import layers

BATCH, STEPS, FEATURES, UNITS = 3, 6, 4, 5
METHODS = {"torch": ["torchscript", "auto"], "tensorflow": ["tf.function", "xla", "auto"]}
CASES = [(f, m) for f, ms in METHODS.items() for m in ms]


def flat(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flat(o)]
    return [out]


def make(framework, kind, dtype, merge_mode, return_sequences=True, return_state=False):
    rnn = getattr(layers, kind.removesuffix("Cell"))(
        UNITS, return_sequences=return_sequences, return_state=return_state, backend=framework, dtype=dtype
    )
    return layers.Bidirectional(rnn, merge_mode=merge_mode, input_size=FEATURES)


@pytest.mark.parametrize("return_state", [False, True], ids=["output", "state"])
@pytest.mark.parametrize("merge_mode", ["concat", None])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("framework", "method"), CASES)
def test_compiled_bidirectional_matches_the_uncompiled(framework, method, kind, merge_mode, return_state, dtype, rng):
    require(framework)
    check(framework, method, kind, merge_mode, return_state, dtype, rng)


@pytest.mark.parametrize("merge_mode", ["sum", "ave", "mul"])
@pytest.mark.parametrize(("framework", "method"), CASES)
def test_compiled_bidirectional_merges_as_the_uncompiled(framework, method, merge_mode, rng):
    require(framework)
    check(framework, method, "LSTMCell", merge_mode, True, "float64", rng)


def check(framework, method, kind, merge_mode, return_state, dtype, rng):
    bi = make(framework, kind, dtype, merge_mode, return_state=return_state)
    fast = xf.compile(bi, method)
    assert fast.source is bi and fast.method == (method if method != "auto" else fast.forward_layer.method)
    assert fast.forward_layer.method == fast.backward_layer.method == fast.method
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    want, got = flat(bi(native(framework, x))), flat(fast(native(framework, x)))
    assert len(got) == len(want) == (1 if merge_mode else 2) + 2 * return_state * (2 if kind == "LSTMCell" else 1)
    for g, w in zip(got, want, strict=True):
        assert max_err(numpy(framework, g), numpy(framework, w)) <= TOL[dtype]


@pytest.mark.parametrize(("framework", "method"), CASES)
def test_compiled_bidirectional_last_output_and_initial_state(framework, method, rng):
    require(framework)
    bi = make(framework, "LSTMCell", "float64", "concat", return_sequences=False)
    fast = xf.compile(bi, method)
    x = native(framework, rng.normal(size=(BATCH, STEPS, FEATURES)))
    state = [[native(framework, rng.normal(size=(BATCH, UNITS))) for _ in range(2)] for _ in range(2)]
    got, want = fast(x, initial_state=state), bi(x, initial_state=state)
    assert numpy(framework, got).shape == (BATCH, 2 * UNITS)
    assert max_err(numpy(framework, got), numpy(framework, want)) <= TOL["float64"]


def test_compiled_bidirectional_trains_on_torch(rng):
    """The compiled object's parameters are the source's (no copy, no second owner); gradients
    through it match the uncompiled layer's."""
    require("torch")
    import torch

    bi = make("torch", "GRUCell", "float64", "concat")
    fast = xf.compile(bi, "torchscript")
    assert [id(p) for p in fast.parameters()] == [id(p) for p in bi.parameters()]
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES))).requires_grad_(True)
    params = [x, *(p for p in bi.parameters() if p.requires_grad)]
    want = torch.autograd.grad(bi(x).square().sum(), params)
    got = torch.autograd.grad(fast(x).square().sum(), params)
    for g, w in zip(got, want, strict=True):
        assert max_err(g, w) <= 1e-11


@pytest.mark.parametrize(("framework", "method"), CASES)
def test_compiled_bidirectional_pickles_as_its_recipe(framework, method, rng):
    require(framework)
    bi = make(framework, "SimpleRNNCell", "float64", "sum")
    fast = xf.compile(bi, method)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    for again in (pickle.loads(pickle.dumps(fast)), copy.deepcopy(fast)):
        assert type(again) is type(fast) and again.method == fast.method
        assert again.forward_layer.source is again.source.forward_layer  # one set of parameters
        got = numpy(framework, again(native(framework, x)))
        assert max_err(got, numpy(framework, fast(native(framework, x)))) <= TOL["float64"]


def test_compiled_bidirectional_refusals(rng):
    require("torch")
    bi = make("torch", "LSTMCell", "float32", "concat")
    fast = xf.compile(bi, "torchscript")
    with pytest.raises(xf.FrameworkMismatchError, match="takes a tensorflow RNN"):
        xf.compile(bi, "xla")
    with pytest.raises(xf.FrameworkMismatchError):
        xf.compile(fast, "torchscript")  # compiled already
    with pytest.raises(xf.UnsupportedConfigError, match="unknown compile method"):
        xf.compile(bi, "fastest")
    np.testing.assert_array_equal(fast.get_weights()[0], bi.get_weights()[0])

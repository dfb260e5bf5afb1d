"""TorchScript as PyTorch users deploy it: a model holding the library's torch RNN goes through
``torch.jit.script`` as one holding ``nn.LSTM`` does, and ``torch.jit.save`` of
``xf.compile(rnn, "torchscript")`` writes a file that runs where this library is not installed."""

import subprocess
import sys
import textwrap
import warnings

import pytest
from conftest import TOL
from helpers import KINDS, max_err

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")


def script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


class Model(torch.nn.Module):
    def __init__(self, kind, **rnn_kw):
        super().__init__()
        cells = [getattr(layers, kind)(6, backend="torch"), getattr(layers, kind)(5, backend="torch")]
        self.rnn = layers.RNN(cells, **rnn_kw)
        self.head = torch.nn.Linear(5, 1)

    def forward(self, x):
        return self.head(self.rnn(x))


class StateModel(torch.nn.Module):
    """Passes states in and reads them out, as code written for nn.LSTM does."""

    def __init__(self, kind):
        super().__init__()
        self.rnn = layers.RNN([getattr(layers, kind)(4, backend="torch")], return_state=True)

    def forward(self, x, h0: list[list[torch.Tensor]]):
        y, states = self.rnn(x, h0)
        return y + states[0][0]


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_a_user_model_holding_the_rnn_scripts(kind, time_major):
    torch.manual_seed(0)
    model = Model(kind, return_sequences=True, time_major=time_major)
    x = torch.randn(7, 2, 3) if time_major else torch.randn(2, 7, 3)
    want = model(x)  # built by this call
    keys = sorted(model.state_dict())
    scripted = script(model)  # on the old code: "Unknown type annotation: 'Any'"
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert max_err(scripted(x).detach(), want.detach()) <= TOL["float32"]
    assert sorted(scripted.state_dict()) == keys  # the same checkpoint keys as the eager model
    # it trains: the scripted model's gradients reach the shared parameters
    opt = torch.optim.SGD(scripted.parameters(), lr=0.1)
    before = [w.copy() for w in model.rnn.get_weights()]  # the Python API stays on model.rnn
    scripted(x).pow(2).sum().backward()
    opt.step()
    assert all(max_err(a, b) > 0 for a, b in zip(model.rnn.get_weights(), before, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_states_in_and_out_under_script(kind):
    model = StateModel(kind)
    x = torch.randn(2, 5, 3)
    h0 = [[torch.randn(2, 4) for _ in range(2 if kind == "LSTMCell" else 1)]]
    want = model(x, h0)  # built by this call
    assert max_err(script(model)(x, h0).detach(), want.detach()) <= TOL["float32"]


def test_scripting_an_unbuilt_rnn_says_what_to_do():
    model = torch.nn.Sequential(layers.LSTM(4, backend="torch"))
    with pytest.raises(xf.UnsupportedConfigError, match="not built"):
        script(model)


LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["rnn_xframework"] = None  # importing it now raises: the library is not installed
    import torch
    m = torch.jit.load(sys.argv[1])
    err = 0.0
    for x, mask, want in torch.load(sys.argv[2]):  # (input, mask or None, expected output) per call
        y = m(x) if mask is None else m(x, mask=mask)
        err = max(err, float((y - want).abs().max()))
    print(err)
    """
)


def run_without_library(tmp_path, saved, x, want, mask=None, masked_want=None):
    """The largest error of the saved module's outputs, loaded where the library cannot be
    imported: on ``x``, and with ``mask`` where given."""
    calls = [(x, None, want)] + ([] if mask is None else [(x, mask, masked_want)])
    torch.save(calls, tmp_path / "io.pt")
    (tmp_path / "load.py").write_text(LOAD)
    # -I: isolated mode, so neither the working directory nor PYTHONPATH puts the package on the path
    out = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(saved), str(tmp_path / "io.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


MASK = torch.tensor([[True, True, False, True, True], [True, True, True, False, False]])  # a gap, right padding


@pytest.mark.parametrize("kind", KINDS)
def test_jit_save_of_the_compiled_rnn_runs_without_the_library(kind, tmp_path):
    """With and without a mask (the saved scripted RNN holds the masked loop too)."""
    rnn = layers.RNN(
        [getattr(layers, kind)(6, backend="torch", input_size=3), getattr(layers, kind)(6, backend="torch")],
        return_sequences=True,
    )
    fast = xf.compile(rnn, "torchscript")
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        want, masked = rnn(x), rnn(x, mask=MASK)
    path = tmp_path / "rnn.pt"
    torch.jit.save(fast, str(path))
    assert run_without_library(tmp_path, path, x, want, MASK, masked) <= TOL["float32"]


def test_jit_save_of_a_scripted_bidirectional_runs_without_the_library(tmp_path):
    bi = layers.Bidirectional(layers.LSTM(4, return_sequences=True, backend="torch"), input_size=3)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        want, masked = bi(x), bi(x, mask=MASK.to(torch.int64))  # nonzero = a real step
    path = tmp_path / "bi.pt"
    torch.jit.save(script(bi), str(path))
    assert run_without_library(tmp_path, path, x, want, MASK.to(torch.int64), masked) <= TOL["float32"]


def test_jit_save_of_a_scripted_user_model_runs_without_the_library(tmp_path):
    model = Model("GRUCell", time_major=True)
    x = torch.randn(5, 2, 3)
    model(x)
    with torch.no_grad():
        want = model(x)
    path = tmp_path / "model.pt"
    torch.jit.save(script(model), str(path))
    assert run_without_library(tmp_path, path, x, want) <= TOL["float32"]


def test_jit_save_refuses_what_is_not_torchscript(tmp_path):
    rnn = layers.RNN(layers.SimpleRNNCell(4, backend="torch", input_size=3))
    with pytest.raises(xf.UnsupportedConfigError, match="torchscript"):
        torch.jit.save(xf.compile(rnn, "inductor"), str(tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


THREADED_COMPILE = """
import threading, sys
import torch
import rnn_xframework as xf
from rnn_xframework import layers

kind = sys.argv[1]  # one type: the threads script the same classes at once
rnns = []
for k in range(8):
    rnn = layers.RNN([getattr(layers, kind)(4, backend="torch"), getattr(layers, kind)(3, backend="torch")])
    rnn.build((None, None, 2))
    rnns.append(rnn)
x = torch.randn(2, 3, 2)
barrier = threading.Barrier(8)
errors, wrong = [], []

def work(rnn):
    barrier.wait()
    try:
        fast = xf.compile(rnn, "torchscript")
        with torch.no_grad():
            if (fast(x) - rnn(x)).abs().max() > 1e-5:
                wrong.append(1)
    except Exception as e:
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")

threads = [threading.Thread(target=work, args=(r,)) for r in rnns]
for t in threads: t.start()
for t in threads: t.join()
print("ERRORS", len(errors), errors[:2], "WRONG", len(wrong))
"""


@pytest.mark.parametrize("kind", KINDS)  # three fresh processes, one a type
def test_compile_from_8_threads_in_a_fresh_process(kind):
    """Issue 18: 3-7 of 8 threads failed with ``RuntimeError: Can't redefine method: forward on
    class ...`` (TorchScript's class compilation is not thread-safe; a fresh process has nothing
    compiled yet). Scripting is serialized by a lock, so every thread gets a working object."""
    out = subprocess.run([sys.executable, "-c", THREADED_COMPILE, kind], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1:] == ["ERRORS 0 [] WRONG 0"], out.stdout + out.stderr[-2000:]

"""The examples run (quick mode) in a subprocess, as a user would run them; the torch ones also
in a process that imported TensorFlow first (any import order works: rnn_xframework.frameworks).
The two port examples import Keras above torch themselves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, tensorflow_first: bool = False) -> str:
    """``python *args``; with ``tensorflow_first`` the script runs (as ``__main__``) in a process
    that has imported TensorFlow already."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if tensorflow_first:
        code = f"import runpy, sys, tensorflow\nsys.argv = {list(args)!r}\n"
        code += "runpy.run_path(sys.argv[0], run_name='__main__')"
        args = ("-c", code)
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize(
    "backend, tensorflow_first",
    [("torch", False), ("tensorflow", False), ("numpy", False), ("torch", True)],
    ids=["torch", "tensorflow", "numpy", "torch-after-tensorflow"],
)
def test_tutorial_example(backend, tensorflow_first):
    if backend != "numpy":
        require(backend)
    if tensorflow_first:
        require("tensorflow")
    out = run(str(EXAMPLES / "tutorial.py"), "--backend", backend, tensorflow_first=tensorflow_first)
    assert "one step: (4, 64) (4, 64)" in out
    assert "orderings agree: max abs difference 0.0" in out
    assert "layers.RNN matches the loops: True" in out


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_lstm_gru_example(backend):
    require(backend)
    out = run(str(EXAMPLES / "lstm_gru.py"), "--backend", backend, "--quick")
    assert "LSTMCell: last output (2, 4), h (2, 4), c (2, 4)" in out
    assert out.count("Sequential-style") == 2


@pytest.mark.parametrize("tensorflow_first", [False, True], ids=["alone", "after-tensorflow"])
def test_sentiment_example_trains(tensorflow_first):
    """Trains with torch.optim; after TensorFlow that loads triton, which must not abort."""
    require("torch")
    pytest.importorskip("rich")
    if tensorflow_first:
        require("tensorflow")
    out = run(str(EXAMPLES / "sentiment_torch.py"), "--quick", tensorflow_first=tensorflow_first)
    assert "test accuracy" in out and "chance 0.5" in out


def test_keras_to_torch_example():
    """Keras fit -> xf.from_keras(..., backend="torch") -> same logits -> fine-tuned in torch."""
    require("torch"), require("tensorflow")
    out = run(str(EXAMPLES / "keras_to_torch.py"), "--quick")
    assert "ported: max |torch - keras| logits" in out and "(tolerance 1e-5)" in out
    assert "LSTM weights moved by up to" in out


def test_torch_to_keras_example():
    """PyTorch checkpoint -> xf.from_torch(..., backend="tensorflow") -> xf.to_keras -> .keras file."""
    require("torch"), require("tensorflow")
    out = run(str(EXAMPLES / "torch_to_keras.py"), "--quick")
    assert "ported: max |keras - torch| logits" in out and "(tolerance 1e-5)" in out
    assert "saved and loaded classifier.keras with layers" in out and "'LSTM', 'GRU'" in out


@pytest.mark.parametrize(
    ("script", "native"),
    [("sentiment_keras_port.py", "simple_rnn=rnn_xframework.RNN"), ("bidirectional_keras_port.py", "torch.nn.LSTM")],
)
def test_keras_model_ported_in_one_line(script, native):
    """A whole Keras model -> xf.to_torch(model, check=True) -> trained a few steps in PyTorch."""
    require("torch"), require("tensorflow")
    out = run(str(EXAMPLES / script), "--quick")
    assert "ported: embedding=" in out and native in out
    assert "trained 5 steps in PyTorch" in out

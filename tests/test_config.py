import threading

import pytest

import rnn_xframework as xf
from rnn_xframework import config


@pytest.fixture(autouse=True)
def clean_default(monkeypatch):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    xf.set_backend(None)
    yield
    xf.set_backend(None)


def test_fallback_is_torch():
    assert xf.get_backend() == "torch"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, "tf")
    assert xf.get_backend() == "tensorflow"


def test_misspelled_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, "torhc")
    with pytest.raises(xf.errors.UnknownBackendError) as e:
        xf.layers.SimpleRNNCell(3)
    message = str(e.value)
    assert "RNN_XFRAMEWORK_BACKEND='torhc'" in message and "unset it" in message, message


def test_set_backend_beats_environment_and_argument_beats_both(monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, "tensorflow")
    xf.set_backend("numpy")
    assert xf.get_backend() == "numpy"
    assert xf.layers.SimpleRNNCell(3).backend == "numpy"
    assert config.resolve("pytorch") == "torch"


def test_use_backend_is_scoped_to_the_thread():
    seen = {}
    with xf.use_backend("numpy"):
        worker = threading.Thread(target=lambda: seen.setdefault("other", xf.get_backend()))
        worker.start()
        worker.join()
        assert xf.get_backend() == "numpy"
    assert seen["other"] == "torch"
    assert xf.get_backend() == "torch"


def test_unknown_names_are_rejected():
    with pytest.raises(xf.UnknownBackendError, match="jax"):
        xf.set_backend("jax")
    with pytest.raises(ValueError, match="expected one of"):
        xf.layers.SimpleRNNCell(3, backend="jax")

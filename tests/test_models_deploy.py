"""A ported model as a PyTorch user ships it: model.py + model.pt (xf.to_torch_source) matching the
live module and running where rnn_xframework, TensorFlow and Keras cannot be imported;
torch.save / torch.load, state_dict round trips, torch.export, TorchScript; the typed refusal of
layers outside the vocabulary; the ``rnn-xframework port`` command."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import TOL, require

require("torch"), require("tensorflow")

import keras  # noqa: E402
import torch  # noqa: E402
from port_models import build  # noqa: E402

import rnn_xframework as xf  # noqa: E402
from rnn_xframework.models import api, parity_check  # noqa: E402

L = keras.layers
ROOT = Path(__file__).resolve().parent.parent
NATIVE = ["sentiment", "encoder_decoder", "normalization", "convolution", "bidirectional_masked", "masked_merges"]
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("rnn_xframework", "tensorflow", "keras"):
                raise ImportError(f"{name} is blocked in this process")
    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, sys.argv[1])
    import numpy as np, torch
    import model
    m = model.load().eval()
    inputs = np.load(sys.argv[2])
    with torch.no_grad():
        out = m(*[torch.from_numpy(inputs[k]) for k in sorted(inputs)])
    out = out if isinstance(out, list) else [out]
    np.savez(sys.argv[3], *[o.numpy() for o in out])
    print("blocked:", [n for n in ("rnn_xframework", "tensorflow", "keras") if n in sys.modules])
    """
)


def _probe(model):
    return parity_check.probe(api.describe(model))


def _outputs(module, inputs):
    module.eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(x) for x in inputs])
    return [o.numpy() for o in (out if isinstance(out, list) else [out])]


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["rnn_library", "bidirectional_library", *NATIVE])
def test_source_matches_the_live_module(name, tmp_path):
    model = build(name)
    live = xf.to_torch(model)
    py, _ = xf.to_torch_source(model, tmp_path)
    written = _import(Path(py), f"ported_{name}").load()
    assert type(written).__name__ == api.describe(model).name
    assert list(written.state_dict()) == list(live.state_dict())
    inputs = _probe(model)
    assert _max_diff(_outputs(written, inputs), _outputs(live, inputs)) == 0.0
    assert xf.compare(model, written, inputs, steps=1, show=False).passed
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), py],
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout


@pytest.mark.parametrize("name", NATIVE)
def test_native_source_imports_only_torch(name, tmp_path):
    py, _ = xf.to_torch_source(build(name), tmp_path)
    tree = ast.parse(Path(py).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "pathlib", "typing", "torch"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sentiment", "bidirectional_masked"])
def test_source_runs_without_the_library_tensorflow_or_keras(name, tmp_path):
    model = build(name)
    xf.to_torch_source(model, tmp_path / "port")
    inputs = _probe(model)
    np.savez(tmp_path / "inputs.npz", **{f"x{i}": x for i, x in enumerate(inputs)})
    (tmp_path / "run.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [sys.executable, "-I", str(tmp_path / "run.py"), str(tmp_path / "port"), str(tmp_path / "inputs.npz")]
    out = subprocess.run([*args, str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "blocked: []" in out.stdout
    got = np.load(tmp_path / "out.npz")
    want = [
        np.asarray(y)
        for y in (lambda y: y if isinstance(y, list) else [y])(model(inputs if len(inputs) > 1 else inputs[0]))
    ]
    assert _max_diff([got[f"arr_{i}"] for i in range(len(want))], want) <= TOL["float32"]


def test_blocker_really_blocks(tmp_path):
    (tmp_path / "run.py").write_text(BLOCKER.split("import numpy")[0] + "import rnn_xframework\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "run.py"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert out.returncode != 0 and "is blocked in this process" in out.stderr


def test_torch_save_load_and_state_dict_round_trip(tmp_path):
    model = build("encoder_decoder")
    module = xf.to_torch(model)
    inputs = _probe(model)
    torch.save(module, tmp_path / "whole.pt")
    again = torch.load(tmp_path / "whole.pt", weights_only=False)
    assert _max_diff(_outputs(again, inputs), _outputs(module, inputs)) == 0.0
    other = build("encoder_decoder")
    for w in other.weights:
        w.assign(np.zeros(w.shape, w.dtype))  # a port with other weights ...
    fresh = xf.to_torch(other)
    fresh.load_state_dict(module.state_dict())  # ... takes the first one's
    assert _max_diff(_outputs(fresh, inputs), _outputs(module, inputs)) == 0.0


@pytest.mark.parametrize("name", ["rnn_stack", "bidirectional", "normalization", "convolution", "shared"])
def test_torch_export(name):
    model = build(name)
    module = xf.to_torch(model).eval()
    inputs = [torch.from_numpy(x) for x in _probe(model)]
    exported = torch.export.export(module, tuple(inputs))
    got = exported.module()(*inputs)
    got = got if isinstance(got, (list, tuple)) else [got]
    assert _max_diff([g.detach().numpy() for g in got], _outputs(module, [x.numpy() for x in inputs])) <= 1e-6


@pytest.mark.parametrize("name", ["rnn_stack", "sentiment", "normalization", "convolution"])
def test_torchscript_of_the_written_module(name, tmp_path):
    model = build(name)
    py, _ = xf.to_torch_source(model, tmp_path)
    written = _import(Path(py), f"scripted_{name}").load().eval()
    scripted = torch.jit.script(written)
    inputs = _probe(model)
    assert _max_diff(_outputs(scripted, inputs), _outputs(written, inputs)) <= 1e-6


class Custom(keras.layers.Layer):
    def call(self, x):
        return x * 2


def _unsupported_models():
    x = keras.Input((4, 3))
    yield (
        "lambda",
        keras.Model(x, L.Lambda(lambda t: t * 2, name="doubler")(x)),
        "'doubler' (keras.src.layers.core.lambda_layer.Lambda)",
    )
    yield "custom", keras.Model(x, Custom(name="mine")(x)), "'mine' (test_models_deploy.Custom)"
    yield "op", keras.Model(x, L.Dense(2)(keras.ops.add(x, 1.0))), "keras.src.ops.numpy.Add"
    yield "conv2d_outside", keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(2, 2, name="c2")]), "'c2'"


@pytest.mark.parametrize(
    ("label", "model", "named"), list(_unsupported_models()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_layers_outside_the_vocabulary_raise_the_typed_error(label, model, named, tmp_path):
    with pytest.raises(xf.UnsupportedConfigError, match="to_torch") as info:
        xf.to_torch(model)
    assert named in str(info.value)
    with pytest.raises(xf.UnsupportedConfigError):
        xf.to_torch_source(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_subclassed_model_says_what_to_do():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(xf.UnsupportedConfigError, match="subclassed"):
        xf.to_torch(sub)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "rnn_xframework", "port", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_cli_port(tmp_path):
    build("sentiment").save(tmp_path / "sentiment.keras")
    out = _cli(str(tmp_path / "sentiment.keras"), "-o", str(tmp_path / "port"), "--plain")
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "3 passed, 0 failed" in out.stdout
    assert (tmp_path / "port" / "model.py").exists() and (tmp_path / "port" / "model.pt").exists()
    unsupported = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(2, 2, name="c2")])
    unsupported.save(tmp_path / "conv.keras")
    out = _cli(str(tmp_path / "conv.keras"), "-o", str(tmp_path / "conv"))
    assert out.returncode == 2 and "'c2'" in out.stderr and not (tmp_path / "conv").exists()
    out = _cli(str(tmp_path / "missing.keras"), "-o", str(tmp_path / "x"))
    assert out.returncode == 2 and "no such file" in out.stderr

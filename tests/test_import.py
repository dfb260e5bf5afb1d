import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import rnn_xframework


def test_import_loads_no_framework() -> None:
    code = (
        "import sys, rnn_xframework as xf\n"
        "from rnn_xframework import layers, backends\n"
        "xf.get_backend(); backends.installed(); layers.SimpleRNNCell(3, backend='numpy')\n"
        "print(' '.join(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_marker_ships() -> None:
    assert (Path(rnn_xframework.__file__).parent / "py.typed").is_file()


PUBLIC_PACKAGES = ["rnn_xframework", "rnn_xframework.backends", "rnn_xframework.cells", "rnn_xframework.models"]


def test_backends_all_holds_no_private_name_and_no_module() -> None:
    from rnn_xframework import backends

    private = [n for n in backends.__all__ if n.startswith("_")]
    modules = [n for n in backends.__all__ if isinstance(getattr(backends, n), types.ModuleType)]
    assert (private, modules) == ([], [])


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_public_all_exports_no_private_name_and_no_foreign_module(package: str) -> None:
    module = importlib.import_module(package)
    private = [n for n in module.__all__ if n.startswith("_")]
    foreign = [
        n
        for n in module.__all__
        if isinstance(getattr(module, n), types.ModuleType)
        and not getattr(module, n).__name__.startswith("rnn_xframework.")
    ]
    assert (private, foreign) == ([], [])

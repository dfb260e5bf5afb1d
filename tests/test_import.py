import subprocess
import sys
from pathlib import Path

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

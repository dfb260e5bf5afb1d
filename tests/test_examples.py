import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["torch", "tensorflow", "numpy"])
def test_tutorial_example_runs(backend):
    if backend != "numpy":
        require(backend)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tutorial.py"), "--backend", backend],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "one step: (4, 64) (4, 64)" in out.stdout
    assert "orderings agree: max abs difference 0.0" in out.stdout
    assert "layers.RNN matches the loops: True" in out.stdout

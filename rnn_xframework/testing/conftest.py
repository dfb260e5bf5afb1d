"""Registers the ``cuda`` marker (for users running ``pytest --pyargs rnn_xframework.testing``
outside this repository); a CUDA row skips where its backend lists no ``"cuda"`` device."""

from __future__ import annotations

import pytest

from rnn_xframework.frameworks import load_triton

# Triton before TensorFlow (after it, the library loads it with RTLD_DEEPBIND): rnn_xframework.frameworks.
load_triton()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device seen by torch (skipped without one)")

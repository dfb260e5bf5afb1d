"""Registers the ``cuda`` marker and skips CUDA tests where torch sees no GPU (for users running
``pytest --pyargs rnn_xframework.testing`` outside this repository)."""

from __future__ import annotations

import importlib.util

import pytest

from rnn_xframework.frameworks import import_triton_first

# Triton before TensorFlow (a later triton load aborts the process): rnn_xframework.frameworks.
import_triton_first()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device seen by torch (skipped without one)")


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())

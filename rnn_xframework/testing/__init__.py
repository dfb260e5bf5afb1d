"""Parity tests that ship with the package: run them against your own frameworks and devices.

    pytest --pyargs rnn_xframework.testing            # every installed backend, CPU and CUDA
    pytest --pyargs rnn_xframework.testing -m cuda    # only the CUDA part

They check every installed backend against the golden vectors in :data:`GOLDEN_DIR` (recorded
with TensorFlow, so a machine without TensorFlow still compares with TensorFlow's numbers) and
run a small parity matrix. A framework that is not installed, or a device that is not there, is
skipped. Importing this package imports no framework.
"""

from __future__ import annotations

from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"
"""The shipped golden vectors (``<cell>-<dtype>.npz``), written by ``rnn-xframework parity golden --write``."""

__all__ = ["GOLDEN_DIR"]

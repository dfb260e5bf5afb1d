"""Registers the framework peers of the two-layer stacks (SimpleRNN, LSTM, GRU; bidirectional and
masked variants where a peer has them) and the GEMM peak.

Importing this module imports no framework: every ``setup`` function imports
torch / TensorFlow / NumPy when called, inside a worker subprocess.
The library's own methods are registered the same way, one line each, in
:mod:`rnn_xframework.bench.xf_methods` (imported at the end); more can come from a
module passed to the harness with ``--plugin``.
"""

from __future__ import annotations

from rnn_xframework.bench import numpy_peers, tf_peers, torch_peers
from rnn_xframework.bench.methods import ALL_CELLS, register, register_gemm

BASELINE = "torch nn.RNN"
"""Default baseline for the speedup column: ``nn.RNN``, or ``nn.LSTM`` / ``nn.GRU`` for those
workloads (cuDNN on CUDA), ``bidirectional=True`` for a bidirectional one, on a ``PackedSequence``
for a masked one."""
BOTH = {"masks": True, "bidirectional": True}
"""The variants a peer with both masks and both directions registers."""

# --- torch -----------------------------------------------------------------
register(BASELINE, "torch", torch_peers.setup_nn_rnn, devices=("cpu", "cuda"), cells=ALL_CELLS, **BOTH)
GRAPHED = {"devices": ("cuda",), "cells": ALL_CELLS, "bidirectional": True}
register("torch nn.RNN graphed", "torch", torch_peers.setup_nn_rnn_graphed, **GRAPHED)
register("torch RNNCell loop", "torch", torch_peers.setup_cell_loop, devices=("cpu", "cuda"))

# --- TensorFlow / Keras 3 ----------------------------------------------------
TF_DEVICES = ("cpu", "cuda")
LSTM, GRU = ("LSTMCell",), ("GRUCell",)
register("keras SimpleRNN eager", "tensorflow", tf_peers.setup_stack_eager, devices=TF_DEVICES, **BOTH)
register("keras SimpleRNN tf.function", "tensorflow", tf_peers.setup_stack_function, devices=TF_DEVICES, **BOTH)
register("keras SimpleRNN xla", "tensorflow", tf_peers.setup_stack_xla, devices=TF_DEVICES, **BOTH)
register("keras LSTM eager", "tensorflow", tf_peers.setup_stack_eager, devices=TF_DEVICES, cells=LSTM, **BOTH)
register("keras LSTM tf.function", "tensorflow", tf_peers.setup_stack_function, devices=TF_DEVICES, cells=LSTM, **BOTH)
register("keras LSTM xla", "tensorflow", tf_peers.setup_stack_xla, devices=TF_DEVICES, cells=LSTM, **BOTH)
register("keras GRU eager", "tensorflow", tf_peers.setup_stack_eager, devices=TF_DEVICES, cells=GRU, **BOTH)
register("keras GRU tf.function", "tensorflow", tf_peers.setup_stack_function, devices=TF_DEVICES, cells=GRU, **BOTH)
register("keras GRU xla", "tensorflow", tf_peers.setup_stack_xla, devices=TF_DEVICES, cells=GRU, **BOTH)
register(
    "keras cell loop tf.function",
    "tensorflow",
    tf_peers.setup_cell_loop_function,
    devices=TF_DEVICES,
)
register(
    "tutorial eager loop",
    "tensorflow",
    tf_peers.setup_tutorial_eager,
    devices=TF_DEVICES,
)
register(
    "keras cell loop eager",
    "tensorflow",
    tf_peers.setup_cell_loop_eager,
    devices=TF_DEVICES,
)

# --- NumPy -------------------------------------------------------------------
register(
    "numpy reference loop",
    "numpy",
    numpy_peers.setup_reference_loop,
    supports_grad=False,
)

# --- GEMM peak ---------------------------------------------------------------
register_gemm(
    "torch mm (MKL default)",
    "torch",
    torch_peers.setup_gemm_mm,
    devices=("cpu", "cuda"),
)
register_gemm("torch oneDNN (mkldnn linear)", "torch", torch_peers.setup_gemm_mkldnn)
register_gemm(
    "tf matmul tf.function",
    "tensorflow",
    tf_peers.setup_gemm_matmul,
    devices=TF_DEVICES,
)
register_gemm("numpy matmul", "numpy", numpy_peers.setup_gemm_matmul)

# --- the library's own methods (rnn_xframework.bench.xf_methods) --------------
from rnn_xframework.bench import xf_methods  # noqa: E402, F401  (registers on import)

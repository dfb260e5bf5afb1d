"""Benchmark suite for rnn_xframework: framework peers of a two-layer SimpleRNN.

Modules:

* :mod:`rnn_xframework.bench.workloads` -- workload shapes and the FLOP formula.
* :mod:`rnn_xframework.bench.methods`  -- the ``METHODS`` / ``GEMM_METHODS`` extension point.
* :mod:`rnn_xframework.bench.peers`     -- registers the framework peers (torch, Keras, NumPy, GEMM).
* :mod:`rnn_xframework.bench.timing`    -- warm-up, repeat and budget logic.
* :mod:`rnn_xframework.bench.worker`    -- one framework, one workload, one subprocess.
* :mod:`rnn_xframework.bench.tables`    -- rich tables, JSON and the optional plot.
* :mod:`rnn_xframework.bench.harness`   -- command line; spawns the workers and collects JSON.
* :mod:`rnn_xframework.bench.kernel_resources` -- the Triton kernels compiled for an H100 without
  a GPU: registers, spills, shared memory (``scripts/kernel_resources.py``).

None of these modules imports torch, TensorFlow or NumPy at import time.
"""

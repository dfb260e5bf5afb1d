"""Benchmark suite for rnn_xframework: framework peers of a two-layer SimpleRNN.

Modules:

* :mod:`benchmarks.workloads` -- workload shapes and the FLOP formula.
* :mod:`benchmarks.registry`  -- the ``METHODS`` / ``GEMM_METHODS`` extension point.
* :mod:`benchmarks.peers`     -- registers the framework peers (torch, Keras, NumPy, GEMM).
* :mod:`benchmarks.timing`    -- warm-up, repeat and budget logic.
* :mod:`benchmarks.worker`    -- one framework, one workload, one subprocess.
* :mod:`benchmarks.report`    -- rich tables, JSON and the optional plot.
* :mod:`benchmarks.harness`   -- command line; spawns the workers and collects JSON.

None of these modules imports torch, TensorFlow or NumPy at import time.
"""

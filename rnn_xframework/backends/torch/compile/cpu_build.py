"""The native kernel behind ``xf.compile(rnn, "cpu")``: ``cpu_cells.c`` built once per machine.

The C file (next to this module) runs the recurrence of one SimpleRNN, LSTM or GRU layer over a
whole sequence, forward and backward, float32 and float64: per step one product by the recurrent
kernel through the BLAS PyTorch itself runs on (``sgemm_`` / ``dgemm_`` from ``libtorch_cpu``,
MKL in PyTorch's x86 wheels), then the gates in one vectorized pass (glibc's vector
``expf`` / ``tanhf``, within a few ulp, where available). No per-step dispatch, no per-step
allocation: that is where PyTorch's own loops spend their time at small sizes. Every function
takes a last ``active`` argument: ``None`` (NULL), every row at every step, or an int32 ``[T]``
array, the number of leading rows (sorted by length, longest first) real at step ``t``; only
those are computed, the others take an identity step (``cpu_cells.c``'s ``hold_rows``). The forward
functions also take a last ``lengths``: NULL, or int32 ``[B]``, rows in any order, every row
computed and the rows past their length given their held state back (``hold_past``; calls that
save nothing for a backward).

Building takes about a second with the system C compiler (``$CC``, else ``cc``) and happens
once per machine, not per shape or process: the library is cached under
``$RNN_XFRAMEWORK_CACHE`` (default ``~/.cache/rnn_xframework``), keyed by the source, the
compiler command and the CPU's flags (it is built with ``-march=native``). Where no compiler,
no BLAS symbol or no cache directory is usable, :func:`library` raises
:class:`~rnn_xframework.errors.UnsupportedConfigError` with the reason, and ``"auto"`` keeps
``"torchscript"`` (:func:`available`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from rnn_xframework.errors import UnsupportedConfigError

SOURCE = Path(__file__).with_name("cpu_cells.c")
HEADERS = (Path(__file__).with_name("cpu_mm.h"),)  # included by SOURCE: part of the cache key
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-shared", "-fPIC")
OPENMP = ("-fopenmp", "-fopenmp-simd")
"""Tried in order: ``-fopenmp`` (the elementwise passes of large steps on the OpenMP threads of the
``libgomp.so.1`` that libtorch_cpu loaded -- PyTorch's Linux wheels ship GNU OpenMP, and the loader
reuses a library already loaded under that name: one runtime, one thread pool with MKL's products),
then, for a compiler without OpenMP (Apple's clang), ``-fopenmp-simd`` (the same vectorized loops,
one thread). A PyTorch on Intel's OpenMP would get a second runtime here (correct, more threads)."""
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where the built library is kept: ``$RNN_XFRAMEWORK_CACHE/cpu`` (default ``~/.cache/rnn_xframework``)."""
    root = os.environ.get("RNN_XFRAMEWORK_CACHE") or os.path.join("~", ".cache", "rnn_xframework")
    return Path(root).expanduser() / "cpu"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _torch_library() -> ctypes.CDLL:
    lib_dir = Path(torch.__file__).with_name("lib")
    names = {"darwin": "libtorch_cpu.dylib", "win32": "torch_cpu.dll"}
    return ctypes.CDLL(str(lib_dir / names.get(sys.platform, "libtorch_cpu.so")))


def _build(compiler: str) -> Path:
    source = b"\0".join(path.read_bytes() for path in (SOURCE, *HEADERS))
    key = hashlib.sha256(
        b"\0".join([source, compiler.encode(), " ".join(FLAGS + OPENMP).encode(), platform.machine().encode()])
        + _cpu_flags().encode()
    ).hexdigest()[:20]
    target = cache_dir() / f"cpu_cells-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # then an atomic rename: processes may race
    os.close(fd)
    try:
        for openmp in OPENMP:
            done = subprocess.run(
                [compiler, *FLAGS, openmp, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120
            )
            if done.returncode == 0:
                break
        if done.returncode != 0:
            raise UnsupportedConfigError(f"{compiler} failed to build {SOURCE.name}: {done.stderr.strip()[-800:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


P = ctypes.c_void_p
N = ctypes.c_int
L = ctypes.c_long
SIGNATURES = {  # backward, last: ``active`` (NULL, or int32 [T]: cpu_cells.c's hold_rows); forward, last: ``active``,
    # ``lengths`` (NULL, or int32 [B]: hold_past), ``packed`` (row0)
    "xf_lstm_fwd": [N, N, N, N, P, P, P, P, P, P, P, P, P, P, N],
    "xf_lstm_bwd": [N, N, N, P, P, P, P, P, P, P, P, P, P],
    "xf_gru_fwd": [N, N, N, N, N, P, P, P, P, P, P, P, P, P, P, N],
    "xf_gru_bwd": [N, N, N, N, P, P, P, P, P, P, P, P, P, P, P],
    "xf_rnn_fwd": [N, N, N, N, P, P, P, P, P, P, N],
    "xf_rnn_bwd": [N, N, N, N, P, P, P, P, P, P],
    "xf_zero_past": [N, N, N, N, L, L, P, P],  # zero_output_for_mask in place (calls autograd does not record)
    "xf_transposed": [N, N, P, P],  # (rows, cols, m, cache): cpu_scratch.transposed
}
PIPELINED = {  # two layers at once; each returns the threads that ran (int)
    "xf_lstm2_fwd": [N, N, N, N, N, N, *[P] * 17],  # a stack's two layers, pipelined; last: lengths
    "xf_lstm_fwd_both": [N, N, N, N, N, *[P] * 16],  # two independent layers (a Bidirectional's directions)
}


PARALLEL_MIN = 16384
"""Elements (rows x gate columns) from which a step's elementwise pass runs on the OpenMP threads
(``cpu_cells.c``'s ``PARALLEL_ROWS``): W2's steps (64 x 4 x 256 for LSTM) do, W1's (4 x 4 x 64) run on
one thread. The recurrence of one W2 layer, forward: LSTM 16.5 -> 13.2 ms, GRU 12.1 -> 9.4 ms, 2 threads."""


PACKED_GEMM = tuple(f"cblas_{t}gemm_{name}" for t in "sd" for name in ("pack_get_size", "pack", "compute"))
"""MKL's packed GEMM, where ``libtorch_cpu`` exports it (PyTorch's x86 wheels): a step's recurrent
matrix is packed once per call, not once per step (``cpu_cells.c``'s ``rec_open``)."""


def _packed_gemm(blas: ctypes.CDLL) -> list[ctypes.c_void_p | None]:
    """The :data:`PACKED_GEMM` functions as pointers; ``None`` for each of a type whose three
    functions are not all there (PyTorch's x86 wheels export the float32 ones only): that type's
    products go through ``sgemm_`` / ``dgemm_``."""
    out: list[ctypes.c_void_p | None] = []
    for names in (PACKED_GEMM[:3], PACKED_GEMM[3:]):
        try:
            out += [ctypes.cast(getattr(blas, name), P) for name in names]
        except AttributeError:
            out += [None] * len(names)
    return out


@functools.cache
def _load() -> ctypes.CDLL | str:
    """The loaded library, or why it cannot be had (a string; cached like the library)."""
    compiler = os.environ.get("CC") or "cc"
    try:
        blas = _torch_library()
        sgemm, dgemm = blas.sgemm_, blas.dgemm_
    except (OSError, AttributeError) as e:
        return f"this PyTorch exports no Fortran BLAS (sgemm_/dgemm_) from libtorch_cpu ({e})"
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except UnsupportedConfigError as e:
        return str(e)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot build or load {SOURCE.name} with {compiler!r} in {cache_dir()}: {e}"
    lib.xf_set_blas(ctypes.cast(sgemm, P), ctypes.cast(dgemm, P))
    lib.xf_set_packed(*_packed_gemm(blas))
    for name, args in SIGNATURES.items():
        for suffix in ("f", "d"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = args, None
    for name, args in PIPELINED.items():
        for suffix in ("f", "d"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = args, N
    lib.xf_right_padded.argtypes, lib.xf_right_padded.restype = [N, N, P, P], N  # (batch, steps, keep, lengths)
    lib.xf_set_parallel_min.argtypes, lib.xf_set_parallel_min.restype = [L], None
    lib.xf_openmp.argtypes, lib.xf_openmp.restype = [], N  # 1: built with OpenMP
    lib.xf_set_parallel_min(PARALLEL_MIN)
    return lib


def library() -> ctypes.CDLL:
    """The built kernel library (built on first use, about a second; then cached on disk).

    Raises:
        UnsupportedConfigError: why it is not available here (no compiler, no BLAS symbol, ...),
        with the fix: ``xf.compile(rnn, "torchscript")`` runs everywhere.
    """
    with _LOCK:
        lib = _load()
    if isinstance(lib, str):
        raise UnsupportedConfigError(f"xf.compile(rnn, 'cpu'): {lib}; use xf.compile(rnn, 'torchscript')")
    return lib


def available() -> bool:
    """Whether :func:`library` loads here (builds it if needed)."""
    with _LOCK:
        return not isinstance(_load(), str)


@functools.cache
def kernel(name: str, dtype: torch.dtype | None = None) -> ctypes._CFuncPtr:
    """``xf_<name>_f`` / ``_d`` for a float32 / float64 tensor, ``xf_<name>`` without a dtype; looked up
    once (a library that loaded stays loaded; a refusal of :func:`library` is raised, not kept)."""
    if dtype is None:
        return getattr(library(), f"xf_{name}")
    return getattr(library(), f"xf_{name}_{'f' if dtype == torch.float32 else 'd'}")

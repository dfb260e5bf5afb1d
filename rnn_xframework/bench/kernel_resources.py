"""The Triton kernels of ``xf.compile(rnn, "triton")`` compiled for an H100 (sm_90) on a machine
without a GPU, and the registers, spills and shared memory they use.

Triton's interpreter (``TRITON_INTERPRET=1``, ``tests/test_triton.py``) checks the kernels'
numbers but never runs Triton's compiler: a kernel that fails to compile for a GPU, spills
registers or asks for more shared memory than a block may have would show up only on a GPU. The
CPU build of triton compiles for a CUDA target (``ptxas``), here for the launches the library makes:

* :func:`launches` runs an ``xf.compile(rnn, "triton")`` RNN on ``meta`` tensors (no data) with
  :mod:`~rnn_xframework.backends.torch.compile.triton`'s launch replaced by a recorder, so each
  kernel, its constexprs, grid, arguments and compile options
  (:func:`~rnn_xframework.backends.torch.compile.triton.launch_options`) are the library's own.
* :func:`specialize` turns a launch into what Triton's JIT compiles for it, through the JIT's own
  binder (an int argument equal to 1 becomes a constant; 16-divisible ints and 16-byte-aligned
  pointers get hints), pointers placed as on a CUDA allocation (aligned, plus the view's offset).
* :func:`compile_config` compiles one for :data:`TARGET`; :func:`resources` reads the kernel.

The GPU machine of issue 9 runs triton 3.6; this compiles with the installed triton (3.9 in
CI), so it catches compile errors and resource overruns of the kernels as written, not what only
3.6 does. ``enable_fp_fusion`` is :data:`FP_FUSION`: the library's launches pass none, so they
get Triton's default, multiply-add contraction (FMA) on (3.6, 3.9; 3.10 announces the opposite).
Nothing here imports torch or triton at import time.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from rnn_xframework.bench.workloads import LAYERS, WORKLOADS

TARGET = ("cuda", 90, 32)
"""``GPUTarget(backend, arch, warp_size)``: an H100 (compute capability 9.0)."""
SHARED_LIMIT = 232_448
"""Bytes of shared memory one block may use on an H100 (issue 9: "has 232,448")."""
REGISTER_FILE = 65_536
"""32-bit registers per multiprocessor on an H100: ``registers per thread * threads`` must fit."""
MAX_REGISTERS = 255
"""Registers per thread ptxas may give a thread on sm_90 (beyond it, it spills)."""
FP_FUSION = True
"""What the library's launches get (they pass no ``enable_fp_fusion``: Triton's default)."""
POINTER_BASE = 1 << 20
"""Where :func:`specialize` places each tensor's storage: aligned as a CUDA allocation is."""

SIZES: dict[str, tuple[int, int, int, int]] = {
    **{name: (w.batch, w.steps, w.features, w.units) for name, w in WORKLOADS.items()},
    "odd": (3, 5, 7, 17),
    "128 units": (16, 8, 8, 128),
}
"""``name -> (batch, steps, features, units)``: issue 9's workloads, an odd size, and 128 units
(the widest SimpleRNN layer one float32 program holds, ``MAX_WEIGHT_ELEMENTS``)."""
CELLS: dict[str, tuple[str, dict[str, Any]]] = {  # the cell types with kernels: name -> (class, arguments)
    "SimpleRNN": ("SimpleRNNCell", {"activation": "tanh"}),
    "SimpleRNN relu": ("SimpleRNNCell", {"activation": "relu"}),
    "LSTM": ("LSTMCell", {}),
    "GRU": ("GRUCell", {}),
}
DTYPES = ("float32", "float64")
MODES: dict[str, tuple[int, bool, bool]] = {
    "inference": (LAYERS, False, False),
    "inference, 1 layer": (1, False, False),
    "training": (LAYERS, True, False),
    "masked training": (LAYERS, True, True),
}
"""``name -> (layers, autograd on, right-padded mask)``: a two-layer stack's inference (the
two-layer kernel where it fits, else one forward per layer without ``SAVE``), a single layer's
(the per-layer forward where the stack would take the two-layer kernel), training (forward with
``SAVE``, then the backward), and training on a right-padded batch (both with ``MASKED``)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One RNN and call: the sizes of :data:`SIZES`, a cell of :data:`CELLS`, a dtype, a mode."""

    size: str
    cell: str
    dtype: str
    mode: str

    def __str__(self) -> str:
        return f"{self.size} {self.cell} {self.dtype} {self.mode}"


def cases() -> list[Case]:
    """Every combination of :data:`SIZES`, :data:`CELLS`, :data:`DTYPES` and :data:`MODES`
    (a masked case whose layers are column-split launches no kernel: :func:`launches`)."""
    return [Case(s, c, d, m) for s in SIZES for c in CELLS for d in DTYPES for m in MODES]


@dataclasses.dataclass(frozen=True)
class Pointer:
    """A tensor argument as the JIT sees it: its dtype and address."""

    dtype: Any
    address: int

    def data_ptr(self) -> int:
        return self.address


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch as :mod:`~rnn_xframework.backends.torch.compile.triton` made it."""

    kernel: str
    grid: tuple[int, ...]
    args: tuple[Any, ...]  # Pointer | int
    meta: tuple[tuple[str, Any], ...]  # the constexprs
    options: tuple[tuple[str, Any], ...]  # launch_options: num_warps


@contextmanager
def _recording(into: list[Launch]) -> Iterator[None]:
    """Within: every kernel launch of ``triton_host`` is appended to ``into`` instead of run, its
    tensor check accepts ``meta`` tensors (the dtype check still applies), and a mask is right-padded."""
    import torch

    from rnn_xframework.backends.torch.compile import triton as triton_host
    from rnn_xframework.backends.torch.compile import triton_masked

    def pointer(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return Pointer(a.dtype, POINTER_BASE + a.storage_offset() * a.element_size())
        return a

    def record(name: str, like: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
        options = triton_host.launch_options(meta, like)
        into.append(Launch(name, grid, tuple(map(pointer, args)), tuple(meta.items()), tuple(options.items())))

    def check(x: Any) -> None:
        if x.dtype not in triton_host.DTYPES:
            triton_host.check_tensor(x)

    def lengths(keep: Any) -> Any:  # a meta mask has no values: taken as right-padded
        return torch.empty(keep.shape[0], dtype=torch.int32, device="meta")

    with (
        mock.patch.object(triton_host, "_launch", record),
        mock.patch.object(triton_host, "check_tensor", check),
        mock.patch.object(triton_masked, "right_padded_lengths", lengths),
    ):
        yield


def launches(case: Case) -> list[Launch]:
    """The kernel launches of one call (and, in training, its backward) of ``case``'s RNN."""
    import torch

    import rnn_xframework as xf
    from rnn_xframework import layers

    batch, steps, features, units = SIZES[case.size]
    n_layers, grad, masked = MODES[case.mode]
    kind, kw = CELLS[case.cell]
    cells = [getattr(layers, kind)(units, backend="torch", dtype=case.dtype, **kw) for _ in range(n_layers)]
    rnn = layers.RNN(cells, return_sequences=True)
    with torch.device("meta"):  # no weight initialization (QR of 512 x 512 blocks) to wait for
        rnn.build((None, None, features))
    rnn.to("meta")  # the cells' own record of their device too
    fast = xf.compile(rnn, "triton")
    if masked and not fast.masked_loop.runs_lengths:
        return []  # column-split layers: a masked call runs the scripted masked loop, no kernel
    x = torch.empty(batch, steps, features, dtype=getattr(torch, case.dtype), device="meta", requires_grad=grad)
    found: list[Launch] = []
    with _recording(found), torch.set_grad_enabled(grad):
        y = fast(x, mask=torch.ones(batch, steps, dtype=torch.bool, device="meta")) if masked else fast(x)
        if grad:
            y.sum().backward()
    return found


@dataclasses.dataclass(frozen=True)
class Config:
    """What Triton compiles for a launch (launches that share it share one kernel binary)."""

    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[Any, Any], ...]
    attrs: tuple[tuple[Any, Any], ...]
    options: tuple[tuple[str, Any], ...]

    def constant(self, name: str) -> Any:
        """The value compiled in for parameter ``name`` (a constexpr, or an int the JIT made constant)."""
        index = [n for n, _ in self.signature].index(name)
        return dict(self.constexprs)[(index,)]

    @property
    def dtype(self) -> str:
        """The element type of the kernel's tensors (``fp32``, ``fp64``)."""
        return next(t[1:] for _, t in self.signature if t.startswith("*"))

    def label(self) -> str:
        """The constexprs by name, the int arguments the JIT made constants, and the options."""
        names = [name for name, _ in self.signature]
        const = ", ".join(f"{names[path[0]]}={_show(v)}" for path, v in self.constexprs)
        return f"{const}; " + ", ".join(f"{k}={_show(v)}" for k, v in self.options)


def _show(v: Any) -> str:
    return str(int(v)) if isinstance(v, bool) else str(v)


def _target() -> Any:
    from triton.backends.compiler import GPUTarget

    return GPUTarget(*TARGET)


@functools.cache
def _jit(kernel: str) -> Any:
    """The kernel as ``triton.jit`` makes it for a GPU launch (``triton.jit`` itself would give
    the interpreter's wrapper where ``TRITON_INTERPRET=1`` is set)."""
    from triton.runtime.jit import JITFunction

    from rnn_xframework.backends.torch.compile import triton as triton_host

    return JITFunction(triton_host.kernel_function(kernel))


@functools.cache
def _binder(kernel: str) -> tuple[Any, Any, Any]:
    """``(JITFunction, backend, binder)``: what the JIT binds a launch's arguments with."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = _jit(kernel)
    backend = make_backend(_target())
    return fn, backend, create_function_from_signature(fn.signature, fn.params, backend)


def specialize(launch: Launch) -> Config:
    """The :class:`Config` Triton's JIT compiles for ``launch`` (its own binder and packing)."""
    fn, backend, binder = _binder(launch.kernel)
    kwargs = {**dict(launch.meta), **dict(launch.options), "enable_fp_fusion": FP_FUSION}
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return Config(
        launch.kernel,
        tuple(signature.items()),
        tuple(constexprs.items()),
        tuple((k, tuple(map(tuple, v))) for k, v in attrs.items()),
        launch.options,
    )


def compile_config(config: Config) -> Any:
    """The ``triton.compiler.CompiledKernel`` of ``config`` for :data:`TARGET` (raises what
    Triton's compiler raises: a compile error, ptxas's)."""
    import triton
    from triton.compiler import ASTSource

    fn = _jit(config.kernel)
    attrs = {k: list(map(list, v)) for k, v in config.attrs}
    src = ASTSource(fn, dict(config.signature), dict(config.constexprs), attrs)
    options = {**dict(config.options), "enable_fp_fusion": FP_FUSION}
    return triton.compile(src, target=_target(), options=options)


def distinct(pairs: Iterable[tuple[Case, Launch]]) -> dict[Config, list[Case]]:
    """Each distinct :class:`Config` of the launches, with the cases that use it (in order)."""
    found: dict[Config, list[Case]] = {}
    for case, launch in pairs:
        users = found.setdefault(specialize(launch), [])
        if case not in users:
            users.append(case)
    return found


def all_configs(selected: Iterable[Case] | None = None) -> dict[Config, list[Case]]:
    """:func:`distinct` over the launches of ``selected`` (every :func:`cases` by default)."""
    return distinct((case, launch) for case in (selected or cases()) for launch in launches(case))


def _tool(name: str) -> str:
    """The path of triton's ``ptxas`` (the one it compiles :data:`TARGET` with) or ``cuobjdump``."""
    if name == "ptxas":
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(TARGET[1]).path
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def toolchain_missing() -> str | None:
    """Why this machine cannot compile for :data:`TARGET` (no triton, no NVIDIA backend, no
    ptxas/cuobjdump), or ``None`` where it can."""
    try:
        import triton  # noqa: F401
        from triton.backends import backends
    except ImportError as e:
        return f"triton is not installed ({e})"
    if "nvidia" not in backends:
        return "triton has no NVIDIA backend"
    for tool in ("ptxas", "cuobjdump"):
        try:
            path = _tool(tool)
        except Exception as e:  # knobs raise when the binary is absent
            return f"triton's {tool} is missing ({e})"
        if not path or not Path(path).is_file():
            return f"triton's {tool} is missing"
    return None


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one compiled kernel uses, per thread and per block."""

    registers: int  # per thread (cuobjdump of the cubin Triton built)
    spill_stores: int | None  # bytes per thread (ptxas -v; None: not read)
    spill_loads: int | None
    stack: int  # bytes of stack frame per thread
    shared: int  # bytes of shared memory per block (Triton's launch asks for this much)
    num_warps: int
    ptx_bytes: int
    cubin_bytes: int

    @property
    def threads(self) -> int:
        return 32 * self.num_warps

    def problems(self) -> list[str]:
        """What would fail or slow a launch on an H100: shared memory over :data:`SHARED_LIMIT`,
        registers beyond the register file, spills (where read)."""
        found = []
        if self.shared > SHARED_LIMIT:
            found.append(f"shared memory {self.shared} bytes > {SHARED_LIMIT}")
        if self.registers * self.threads > REGISTER_FILE:
            found.append(f"{self.registers} registers x {self.threads} threads > {REGISTER_FILE}")
        if self.spill_stores or self.spill_loads:
            found.append(f"spills {self.spill_stores} bytes stored, {self.spill_loads} loaded per thread")
        return found


def cubin_usage(kernel: Any) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED`` (static), ``LOCAL`` of the kernel's cubin (cuobjdump)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(kernel.asm["cubin"])
        out = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
    line = next(x for x in out.splitlines() if "REG:" in x)
    return {k: int(v) for k, v in re.findall(r"([A-Z]+):(\d+)", line)}


def ptxas_report(kernel: Any) -> dict[str, int]:
    """``registers``, ``spill_stores``, ``spill_loads``, ``stack`` from ``ptxas -v`` on the
    kernel's PTX, with the options Triton passes (line info, register allocation level 2, FMA
    contraction as :data:`FP_FUSION`)."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        arch = sm_arch_from_capability(TARGET[1])
        cmd = [_tool("ptxas"), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}"]
        cmd += [] if FP_FUSION else ["--fmad=false"]
        log = subprocess.run([*cmd, str(ptx), "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True, check=True)
    text = log.stderr + log.stdout

    def number(pattern: str) -> int:
        m = re.search(pattern, text)
        if m is None:
            raise ValueError(f"ptxas -v printed no {pattern!r}:\n{text}")
        return int(m.group(1))

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack": number(r"(\d+) bytes stack frame"),
    }


def resources(kernel: Any, spills: bool = True) -> Resources:
    """The :class:`Resources` of a compiled kernel; ``spills=False`` skips the ``ptxas -v``
    rerun (spills then ``None``, the stack frame from the cubin)."""
    usage = cubin_usage(kernel)
    report = ptxas_report(kernel) if spills else {"spill_stores": None, "spill_loads": None, "stack": usage["STACK"]}
    if spills and report["registers"] != usage["REG"]:
        raise ValueError(f"ptxas -v rerun gave {report['registers']} registers, Triton's cubin {usage['REG']}")
    return Resources(
        registers=usage["REG"],
        spill_stores=report["spill_stores"],
        spill_loads=report["spill_loads"],
        stack=report["stack"],
        shared=kernel.metadata.shared,
        num_warps=kernel.metadata.num_warps,
        ptx_bytes=len(kernel.asm["ptx"].encode()),
        cubin_bytes=len(kernel.asm["cubin"]),
    )

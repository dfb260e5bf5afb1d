"""The extension point: registries of benchmark methods.

A *method* turns a workload into a zero-argument callable that runs one
forward (or forward + backward) pass. Registering one takes one line, from any
module that the harness is told to import with ``--plugin MODULE``::

    from rnn_xframework.bench.methods import register
    register("xf torch torchscript", "torch", my_setup)

``my_setup(workload, grad, device)`` must import its framework lazily (inside
the function), build random weights and inputs, make the first call, and
return ``(callable, compile_s)`` where ``compile_s`` is the wall time of that
first call (tracing, compilation, first-touch allocation). The harness never
times the first call again.

A method runs the workloads of its ``cells``, and the bidirectional / masked variants
(``workload.bidirectional``, ``workload.masked``: ``workload.lengths()``) only if registered with
``bidirectional=True`` / ``masks=True``. A setup that raises
:class:`~rnn_xframework.errors.UnsupportedConfigError` (a compiled method refusing ``mask=``) gets an
``unsupported`` row with the message, not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rnn_xframework.bench.workloads import Workload

Framework = Literal["torch", "tensorflow", "numpy"]
FRAMEWORKS: tuple[Framework, ...] = ("torch", "tensorflow", "numpy")

ALL_CELLS = ("SimpleRNNCell", "LSTMCell", "GRUCell")

Runner = Callable[[], object]
"""A zero-argument callable that performs one timed call."""

SetupFn = Callable[[Workload, bool, str], tuple[Runner, float]]
"""``setup(workload, grad, device) -> (runner, compile_s)``."""

GemmSetupFn = Callable[[int, str], tuple[Runner, float]]
"""``setup(n, device) -> (runner, compile_s)`` for an ``n x n`` fp32 matmul."""


@dataclass(frozen=True)
class Method:
    """A named way to run the two-layer RNN in one framework, for the cell types in ``cells``."""

    name: str
    framework: Framework
    setup: SetupFn
    supports_grad: bool = True
    devices: tuple[str, ...] = ("cpu",)
    description: str = ""
    cells: tuple[str, ...] = ("SimpleRNNCell",)
    masks: bool = False
    bidirectional: bool = False

    def runs(self, workload: Workload) -> bool:
        """Whether this method is planned for ``workload`` (its cell type and variant)."""
        return (
            workload.cell in self.cells
            and (self.masks or not workload.masked)
            and (self.bidirectional or not workload.bidirectional)
        )


@dataclass(frozen=True)
class GemmMethod:
    """A named way to run an fp32 square matmul, for the GEMM peak."""

    name: str
    framework: Framework
    setup: GemmSetupFn
    devices: tuple[str, ...] = ("cpu",)
    description: str = ""


METHODS: dict[str, Method] = {}
"""All registered RNN methods, in registration order."""

GEMM_METHODS: dict[str, GemmMethod] = {}
"""All registered GEMM-peak methods, in registration order."""


class DeviceUnavailableError(RuntimeError):
    """The requested device (e.g. ``cuda``) does not exist for this framework."""


def _check_new(name: str, framework: str, registry: dict[str, object]) -> None:
    if "," in name:
        raise ValueError(f"method names may not contain commas: {name!r}")
    if name in registry:
        raise ValueError(f"method {name!r} is already registered")
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")


class PlanError(ValueError):
    """A bad flag: reported as one line, exit status 2, before anything runs."""


def register(
    name: str,
    framework: Framework,
    setup: SetupFn,
    *,
    supports_grad: bool = True,
    devices: tuple[str, ...] = ("cpu",),
    description: str = "",
    cells: tuple[str, ...] = ("SimpleRNNCell",),
    masks: bool = False,
    bidirectional: bool = False,
) -> Method:
    """Add a method to :data:`METHODS` and return it."""
    _check_new(name, framework, METHODS)
    method = Method(name, framework, setup, supports_grad, devices, description, cells, masks, bidirectional)
    METHODS[name] = method
    return method


def register_gemm(
    name: str,
    framework: Framework,
    setup: GemmSetupFn,
    *,
    devices: tuple[str, ...] = ("cpu",),
    description: str = "",
) -> GemmMethod:
    """Add a GEMM-peak method to :data:`GEMM_METHODS` and return it."""
    _check_new(name, framework, GEMM_METHODS)
    method = GemmMethod(name, framework, setup, devices, description)
    GEMM_METHODS[name] = method
    return method

"""Shared fixtures: a ``backend`` fixture over every backend (clean skips when a framework is
missing), the CUDA marker, and framework set-up for two frameworks in one process."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rnn_xframework import cells, registry
from rnn_xframework.frameworks import load_triton

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch set up for correctness tests (any import order of the frameworks works).
if importlib.util.find_spec("torch") is not None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # correctness tests compare in true fp32
    torch.backends.cudnn.allow_tf32 = False
# Triton (installed with the kernel extra) loaded once, before any TensorFlow, the way every
# test process has run; the other orders run in fresh interpreters (test_frameworks.py).
load_triton()

BACKENDS = registry.names()
FRAMEWORK = {name: registry.framework(name) for name in BACKENDS}
# Stated tolerances (max abs difference), per dtype; never tuned per test.
TOL = {"float32": 1e-5, "float64": 1e-12}


def require(name: str) -> None:
    framework = FRAMEWORK[name]
    if framework is not None:
        pytest.importorskip(framework, reason=f"backend {name!r} needs {framework}")


# --- the generated-input campaign (issue 18) ---------------------------------------------------
# Every generated case (a Hypothesis example, or one variant of a generated file) calls
# count_case(category). A failing test adds one to its category's "silent wrong" (an
# AssertionError: a wrong answer, a changed object, an unexpected success) or "raw error" (any
# other exception escaping: not a typed rnn_xframework error where one was expected); a case
# that takes longer than HANG_SECONDS counts as a hang (one that never returns is stopped by CI's
# job timeout). pytest_terminal_summary prints the table.
HANG_SECONDS = 60.0
_CAMPAIGN: dict[str, dict[str, int]] = {}
_CURRENT: dict[str, object] = {"category": None, "started": None}


def _row(category: str) -> dict[str, int]:
    return _CAMPAIGN.setdefault(category, {"cases": 0, "silent wrong": 0, "raw error": 0, "hang": 0})


def _close_case() -> None:
    started, category = _CURRENT["started"], _CURRENT["category"]
    if started is not None and time.monotonic() - started > HANG_SECONDS:  # type: ignore[operator]
        _row(category)["hang"] += 1  # type: ignore[arg-type]
    _CURRENT["started"] = None


def count_case(category: str = "other") -> None:
    """Called once per generated case by the campaign's tests, at the start of the case."""
    _close_case()
    _row(category)["cases"] += 1
    _CURRENT["category"], _CURRENT["started"] = category, time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    yield
    if call.when != "call":
        return
    category = _CURRENT["category"]
    _close_case()
    _CURRENT["category"] = None
    if category is None or call.excinfo is None or call.excinfo.errisinstance(pytest.skip.Exception):
        return
    kind = "silent wrong" if call.excinfo.errisinstance(AssertionError) else "raw error"
    _row(category)[kind] += 1  # type: ignore[arg-type]


def campaign_table() -> list[str]:
    """The campaign's table as Markdown lines (empty when no generated case ran)."""
    if not _CAMPAIGN:
        return []
    cols = ["cases", "silent wrong", "raw error", "hang"]
    lines = ["| category | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    total = dict.fromkeys(cols, 0)
    for category in sorted(_CAMPAIGN):
        row = _CAMPAIGN[category]
        lines.append(f"| {category} | " + " | ".join(f"{row[c]:,}" for c in cols) + " |")
        for c in cols:
            total[c] += row[c]
    lines.append("| **total** | " + " | ".join(f"**{total[c]:,}**" for c in cols) + " |")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = campaign_table()
    if lines:
        cases = sum(row["cases"] for row in _CAMPAIGN.values())
        terminalreporter.write_sep("=", "generated-input campaign (issue 18)")
        terminalreporter.write_line(f"generated cases: {cases}")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Every test draws from generators seeded by its own id: Python's (Keras's default seeds),
    NumPy's global one and torch's. A test that checks that two random draws differ (two dropout
    masks) then passes or fails the same way on every run, instead of failing one run in 2^bits."""
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mgu() -> Iterator[cells.CellSpec]:
    """The ``MGUCell`` of tests/plugins/xf_mgu.py, registered through the public
    ``cells.register()`` for one test and unregistered after (other tests see the built-ins only)."""
    from plugins.xf_mgu import MGU

    cells.register(MGU)
    yield MGU
    cells.unregister(MGU.name)


SLOW_FILES = frozenset(
    {
        "rnn_xframework/testing/test_parity.py",  # the whole parity matrix and golden files, per backend
        "tests/test_bidirectional.py",
        "tests/test_compile_bidirectional.py",  # both RNNs compiled per case, TF's XLA among them
        "tests/test_tf_bidirectional_fused.py",  # an XLA compile (forward, backward, inference) per case
        "tests/test_compile_dropout.py",
        "tests/test_compile_masks.py",  # every method x cell type x ordering x dtype x mask form
        "tests/test_compile_methods.py",
        "tests/test_examples.py",  # each example in a subprocess
        "tests/test_frameworks.py",  # import orders, each in a fresh interpreter
        "tests/test_gpu_script.py",  # scripts/gpu_checks.py dry run in a subprocess
        "tests/test_keras_distribute.py",  # a MirroredStrategy over two CPU replicas
        "tests/test_main_job.py",  # the README's parity command in a subprocess
        "tests/test_models_deploy.py",
        "tests/test_models_port.py",
        "tests/test_properties.py",  # about 5,000 Hypothesis examples
        "tests/test_torch_ddp.py",  # two processes
        "tests/test_triton.py",  # the kernels in Triton's interpreter
        "tests/test_triton_compile.py",  # Triton's compiler for sm_90
    }
)
"""Files whose every test is ``slow``: left out of the quick subset, ``pytest -m "not slow"``.
Chosen by ``pytest FILE -m "not slow" --durations=0`` run one file at a time (README, "Tests and
CUDA"); CI runs everything."""
SLOW_TESTS = frozenset(
    {
        "tests/test_bench.py::test_bench_runs_every_kind_of_method_and_writes_json",
        "tests/test_cli_output.py::test_help_has_no_raw_markup_and_no_worker_flags",
        "tests/test_cli_output.py::test_parity_help_lists_every_accepted_ordering",
        "tests/test_cli_output.py::test_parity_prints_a_line_per_group_off_a_terminal",
        "tests/test_cli_output.py::test_parity_stderr_has_progress_and_nothing_else",
        "tests/test_compile.py::test_compile_errors",
        "tests/test_compile_bidirectional.py::test_compiled_bidirectional_matches_the_uncompiled",
        "tests/test_compile_bidirectional.py::test_compiled_bidirectional_pickles_as_its_recipe",
        "tests/test_compile_cpu.py::test_forward_matches_uncompiled",
        "tests/test_compile_cpu.py::test_gradients_match_uncompiled",
        "tests/test_custom_backend.py::test_convert_and_transfer_to_and_from_every_backend",
        "tests/test_custom_backend.py::test_the_shipped_parity_tests_take_a_registered_backend",
        "tests/test_errors.py::test_keras_on_another_backend_is_refused",
        "tests/test_fast_paths.py::test_torchscript_rule_picks_the_wavefront_for_small_stacks",
        "tests/test_fast_paths.py::test_xla_gated_inference_matches_the_tape_path",
        "tests/test_fast_paths.py::test_xla_inference_cache_follows_weights_shapes_and_scopes",
        "tests/test_fast_paths.py::test_xla_inference_matches_uncompiled",
        "tests/test_fast_paths.py::test_xla_under_a_tape_takes_the_differentiable_path",
        "tests/test_fused.py::test_to_torch_fused_matches_the_stack",
        "tests/test_keras_files.py::test_bit_flips_load_exactly_or_are_refused",
        "tests/test_keras_files.py::test_every_truncation_is_refused",
        "tests/test_keras_files.py::test_random_splices_load_exactly_or_are_refused",
        "tests/test_keras_saving.py::test_model_holding_a_library_layer_saves_and_loads",
        "tests/test_layers_dropout.py::test_dropout_parity_with_keras_using_the_same_masks",
        "tests/test_layers_dropout.py::test_stack_of_layers_matches_keras_sequential",
        "tests/test_parity.py::test_a_perturbed_weight_fails_every_check",
        "tests/test_parity.py::test_every_cell_type_at_the_chapter_sizes",
        "tests/test_parity.py::test_every_check_passes_on_torch_and_tensorflow",
        "tests/test_parity.py::test_golden_round_trip_and_a_corrupted_file_fails",
        "tests/test_parity.py::test_shipped_golden_checks_torch_and_numpy_forward",
        "tests/test_parity_cli.py::test_bad_flags_exit_2_with_one_line",
        "tests/test_parity_cli.py::test_golden_check_of_the_shipped_files",
        "tests/test_parity_cli.py::test_passing_run_exits_0_and_writes_json",
        "tests/test_pickle.py::test_compile_of_an_unbuilt_rnn_builds_on_the_first_call",
        "tests/test_pickle.py::test_compiled_rnns_round_trip_as_their_recipe",
        "tests/test_reliability.py::test_dropout_training_from_threads_draws_one_mask_per_call",
        "tests/test_reliability.py::test_inductor_compiles_more_than_8_shapes",
        "tests/test_reliability.py::test_keras_json_selecting_torch_is_refused",
        "tests/test_reliability.py::test_masked_padding_may_hold_nan_and_inf",
        "tests/test_reliability.py::test_tf_compiled_cache_stays_bounded_over_many_shapes",
        "tests/test_reliability.py::test_tf_compiled_graphs_go_with_the_last_object",
        "tests/test_reliability.py::test_xla_gradient_without_a_releasable_registry_runs_eagerly",
        "tests/test_reliability.py::test_xla_recompiles_are_counted_and_can_be_bounded",
        "tests/test_shared_cells.py::test_feedback_ported_to_torch_trains_like_keras",
        "tests/test_stacks.py::test_chapter_sequence_every_backend_matches_keras_itself",
        "tests/test_stacks.py::test_chapter_sequence_every_backend_matches_pytorch_itself",
        "tests/test_stacks.py::test_sequence_matches_reference",
        "tests/test_torch_lazy.py::test_an_optimizer_made_before_the_first_call_trains_the_rnn",
        "tests/test_torch_lazy.py::test_input_size_on_every_backend",
        "tests/test_torch_port.py::test_module_round_trip",
        "tests/test_torch_port.py::test_time_major_on_every_backend_and_compiled",
        "tests/test_torch_script.py::test_a_user_model_holding_the_rnn_scripts",
        "tests/test_torch_script.py::test_compile_from_8_threads_in_a_fresh_process",
        "tests/test_torch_script.py::test_jit_save_of_a_scripted_bidirectional_runs_without_the_library",
        "tests/test_torch_script.py::test_jit_save_of_a_scripted_user_model_runs_without_the_library",
        "tests/test_torch_script.py::test_jit_save_of_the_compiled_rnn_runs_without_the_library",
        "tests/test_transfer.py::test_transfer_between_backends_gives_same_outputs",
        "tests/test_weightfile.py::test_every_byte_with_a_bit_flipped",
        "tests/test_weightfile.py::test_mutations_on_framework_backends",
        "tests/test_weightfile.py::test_random_mutations_load_exactly_or_are_refused",
    }
)
"""Single tests (every parametrization) that are ``slow``, as :data:`SLOW_FILES`; a test may also
carry ``@pytest.mark.slow`` itself."""


def _mark_slow(items: list[pytest.Item], root: Path) -> None:
    for item in items:
        path = item.path.resolve().relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        name = getattr(item, "originalname", item.name)
        if path in SLOW_FILES or f"{path}::{name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _mark_slow(items, Path(__file__).resolve().parents[1])
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None and not has_cuda:  # a marker, not a path part
            item.add_marker(skip)

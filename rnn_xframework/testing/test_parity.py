"""Every installed backend on every device against TensorFlow's golden vectors, and a small
parity matrix (forward, backward, one SGD and one Adam step)."""

from __future__ import annotations

import pytest

from rnn_xframework import parity, registry
from rnn_xframework.parity.report import PASS
from rnn_xframework.testing import GOLDEN_DIR

# Keras's EagerTensor.__array__ under NumPy 2; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)]
SMALL = parity.Sizes(batch=2, steps=6, features=5, units=7, layers=2)


def _require(backend: str, device: str) -> None:
    framework = registry.framework(backend)
    if framework is not None:
        pytest.importorskip(framework, reason=f"backend {backend!r} needs {framework}")
    if device not in registry.get(backend).devices():
        pytest.skip(f"{backend} has no {device} device here")


def _assert_passed(report: parity.Report) -> None:
    failed = [r for r in report.results if not r.passed]
    assert not failed, parity.format_plain(report)
    assert any(r.status == PASS for r in report.results), parity.format_plain(report)


def test_golden_files_ship() -> None:
    names = [p.name for p in parity.golden_files(GOLDEN_DIR)]
    assert "SimpleRNNCell-float32.npz" in names and "SimpleRNNCell-float64.npz" in names


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", registry.names())
def test_golden(backend: str, device: str) -> None:
    """Forward (and, where the backend has gradients, backward) against the golden vectors."""
    _require(backend, device)
    _assert_passed(parity.check_golden(GOLDEN_DIR, [backend], [device]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", registry.names())
def test_matrix(backend: str, device: str) -> None:
    """The parity matrix on a small problem: this backend against the references available here."""
    _require(backend, device)
    _assert_passed(parity.run(parity.Config(sizes=SMALL, backends=[backend], devices=[device], checks=parity.CHECKS)))

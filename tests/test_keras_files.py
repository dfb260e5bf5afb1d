"""Damaged and hostile ``.keras`` files through ``xf.from_keras(path)`` (issue 18, item 4).

Every failure is a typed :class:`rnn_xframework.WeightsError` (or another ``RNNXError``) naming
the file; never Keras's, zipfile's or h5py's raw error, never a misleading "File not found".
Keras's safe mode holds: a file carrying code (a ``Lambda`` layer) is refused and its code never
runs. Generated variants (every truncation length in steps, bit flips over the whole file,
random splices) count toward the campaign table (tests/conftest.py).
"""

from __future__ import annotations

import os
import threading
import zipfile
import zlib

import numpy as np
import pytest
from conftest import count_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_weightfile import members_of, raw_zip, zeros_deflated

import rnn_xframework as xf

pytest.importorskip("tensorflow", reason="from_keras needs Keras (on TensorFlow)")
import keras

CATEGORY = "damaged .keras files via from_keras"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[np.ndarray]]:
    """The bytes of a small ``.keras`` model (LSTM -> Dense) and the LSTM's weights."""
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(2)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path_factory.mktemp("keras") / "good.keras"
    model.save(path)
    return path.read_bytes(), model.layers[0].get_weights()


_N = iter(range(10**9))


def outcome(tmp_path, data: bytes, weights: list[np.ndarray]) -> str:
    """Load ``data`` as a ``.keras`` file: ``"loaded"`` (then exactly the saved weights) or
    ``"refused"`` (a typed error naming the file). Anything else fails the test."""
    path = tmp_path / f"m{next(_N)}.keras"
    path.write_bytes(data)
    try:
        rnns = xf.from_keras(path, backend="numpy")
    except xf.RNNXError as e:
        assert str(path) in str(e), f"the error does not name the file: {e}"
        return "refused"
    finally:
        os.unlink(path)
    got = rnns["lstm"].get_weights()
    assert len(got) == len(weights) and all(np.array_equal(g, w) for g, w in zip(got, weights, strict=True))
    return "loaded"


def rebuilt(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    members = members_of(data)
    for name, content in replace.items():
        if content is None:
            members.pop(name, None)
        else:
            members[name] = content
    return raw_zip([{"name": n, "payload": c} for n, c in members.items()])


def bomb_entry(name: str, n: int) -> dict:
    """A member of ``n`` zero bytes, deflated, its sizes and CRC honest."""
    crc = 0
    for _ in range(n >> 20):
        crc = zlib.crc32(bytes(1 << 20), crc)
    return {"name": name, "payload": zeros_deflated(n), "method": 8, "crc": crc, "size": n}


def named_case(data: bytes, case: str) -> tuple[bytes, str]:
    """``(file bytes, pattern the message must match)`` of one named damage."""
    config = members_of(data)["config.json"]
    entries = [{"name": n, "payload": c} for n, c in members_of(data).items()]
    make, pattern = {
        "empty": (lambda: b"", "empty"),
        "truncated": (lambda: data[: len(data) // 2], "zip"),
        "not a zip": (lambda: b"hello, this is text\n" * 10, "zip"),
        "HDF5": (lambda: b"\x89HDF\r\n\x1a\n" + bytes(200), "HDF5"),
        "config not JSON": (lambda: rebuilt(data, {"config.json": b"{not json"}), "JSON"),
        "config a list": (lambda: rebuilt(data, {"config.json": b"[1, 2]"}), "configuration"),
        "config deeply nested": (lambda: rebuilt(data, {"config.json": b"[" * 100000 + b"]" * 100000}), "JSON"),
        "unknown class": (lambda: rebuilt(data, {"config.json": config.replace(b'"LSTM"', b'"NoSuchLayer"')}), "Keras"),
        "wrong layer class": (lambda: rebuilt(data, {"config.json": config.replace(b'"LSTM"', b'"GRU"')}), "Keras"),
        "no weights": (lambda: rebuilt(data, {"model.weights.h5": None}), "Keras"),
        "weights not HDF5": (lambda: rebuilt(data, {"model.weights.h5": b"garbage" * 100}), "Keras"),
        "no config": (lambda: rebuilt(data, {"config.json": None}), "config.json"),
        "config bomb": (lambda: raw_zip([*entries[:1], bomb_entry("config.json", 64 << 20)]), "config.json"),
        "weights bomb": (lambda: raw_zip([*entries[:2], bomb_entry("model.weights.h5", 256 << 20)]), "bytes"),
        "lying size": (lambda: raw_zip([*entries[:2], {**entries[2], "size": (1 << 32) - 1}]), "model.weights.h5"),
        "encrypted": (lambda: raw_zip([*entries[:2], {**entries[2], "flags": 1}]), "encrypted"),
        "bzip2": (lambda: raw_zip([*entries[:2], {**entries[2], "method": 12}]), "compression"),
        "bad CRC": (lambda: raw_zip([*entries[:2], {**entries[2], "crc": 1234}]), "CRC"),
        "member twice": (lambda: raw_zip([*entries, entries[1]]), "twice"),
    }[case]
    return make(), pattern


CASE_NAMES = [
    "empty",
    "truncated",
    "not a zip",
    "HDF5",
    "config not JSON",
    "config a list",
    "config deeply nested",
    "unknown class",
    "wrong layer class",
    "no weights",
    "weights not HDF5",
    "no config",
    "config bomb",
    "weights bomb",
    "lying size",
    "encrypted",
    "bzip2",
    "bad CRC",
    "member twice",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_damaged_keras_file_is_refused_by_name(good, tmp_path, case):
    """Issue 18: each of these raised a raw error (``BadZipFile``, ``ValueError``, ``TypeError``,
    a "File not found" for an empty file); now a ``WeightsError`` naming the file and the problem."""
    data, pattern = named_case(good[0], case)
    path = tmp_path / "m.keras"
    path.write_bytes(data)
    with pytest.raises(xf.WeightsError, match=pattern) as raised:
        xf.from_keras(path, backend="numpy")
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_keras_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "m.keras"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes on this platform")
        os.mkfifo(path)
    else:
        path.mkdir()
    errors = []

    def load():
        try:
            xf.from_keras(path, backend="numpy")
        except Exception as e:  # any outcome is recorded; a hang is the defect
            errors.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=30)
    if t.is_alive() and kind == "fifo":
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("from_keras blocked on a named pipe")
    assert len(errors) == 1 and isinstance(errors[0], xf.WeightsError), errors
    assert str(path) in str(errors[0]) and "regular file" in str(errors[0])


def test_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    """Safe mode holds: a ``.keras`` file whose ``Lambda`` writes a marker file when it runs is
    refused with a typed error naming the file, and the marker never appears."""
    marker = tmp_path / "payload-ran"
    code = f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"
    payload = eval(code)  # the hostile function, as a user's model would hold it
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.Lambda(payload), keras.layers.LSTM(2)])
    path = tmp_path / "hostile.keras"
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model above ran it once, here
    with pytest.raises(xf.WeightsError, match="safe mode") as raised:
        xf.from_keras(path, backend="numpy")
    assert str(path) in str(raised.value)
    assert not marker.exists(), "the Lambda's code ran while loading"
    keras.saving.load_model(path, safe_mode=False)  # the control: the payload does run without safe mode
    assert marker.exists()


def test_every_truncation_is_refused(good, tmp_path):
    data, weights = good
    for n in range(0, len(data), max(1, len(data) // 150)):
        count_case(CATEGORY)
        assert outcome(tmp_path, data[:n], weights) == "refused"


def test_bit_flips_load_exactly_or_are_refused(good, tmp_path):
    """One bit flipped per variant: every byte of the zip's headers and directory, and a sample
    of the members' data (the CRC-32 covers it). A flip either is refused by name or (fields
    nobody reads: times, "version made by") loads the saved weights exactly."""
    data, weights = good
    starts = {0, len(data) - 22}  # the first local header, the end record
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        for info in z.infolist():
            starts.add(info.header_offset)
        central = min(data.find(b"PK\x01\x02"), len(data))
    header_bytes = {i for s in starts for i in range(s, min(s + 64, len(data)))} | set(range(central, len(data)))
    positions = sorted(header_bytes | set(range(0, central, 97)))
    results = {"loaded": 0, "refused": 0}
    for k, pos in enumerate(positions):
        count_case(CATEGORY)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (k % 8)
        results[outcome(tmp_path, bytes(flipped), weights)] += 1
    assert results["refused"] > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts=st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 64), st.binary(max_size=8)), min_size=1, max_size=3)
)
def test_random_splices_load_exactly_or_are_refused(good, tmp_path, cuts):
    """Random deletions and insertions of a few bytes anywhere (Hypothesis)."""
    count_case(CATEGORY)
    data, weights = good
    out = bytearray(data)
    for at, length, insert in cuts:
        at %= len(out) + 1
        out[at : at + length] = insert
    outcome(tmp_path, bytes(out), weights)

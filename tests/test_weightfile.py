"""Weight files and weight writes when things go wrong.

* Every damaged file (truncated, bit-flipped, spliced, malformed ``__meta__``, undeclared or
  oversized members, zip bombs, absurd declared shapes) either loads exactly the saved weights or
  raises :class:`WeightsError` and leaves the object bit-exact.
* Loading never reads more than the sizes the file declares (``tracemalloc``).
* ``set_weights`` is all-or-nothing and takes every byte order alike on every backend.
* ``save_weights`` keeps the destination's mode (the umask's for a new file), writes through
  symlinks, and names and cleans its temporary files.
* Keras files (``.weights.h5``, ``.keras``) get a message that says what to do.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_xframework as xf
from rnn_xframework import layers, weightfile

# --- the saved file every mutation starts from -------------------------------------------------
INPUT_DIM = 5


def make_rnn(backend: str, seed: int | None, dtype: str = "float32") -> object:
    """LSTM(3) -> GRU(4) -> SimpleRNN(2), so every layout (and GRU's 2-row bias) is in the file.
    Built with seeded random weights, or unbuilt when ``seed`` is None."""
    cells = [
        layers.LSTMCell(3, backend=backend, dtype=dtype),
        layers.GRUCell(4, backend=backend, dtype=dtype),
        layers.SimpleRNNCell(2, backend=backend, dtype=dtype),
    ]
    rnn = layers.RNN(cells)
    if seed is not None:
        rnn.build((None, None, INPUT_DIM))
        rng = np.random.default_rng(seed)
        rnn.set_weights([rng.standard_normal(w.shape).astype(dtype) for w in rnn.get_weights()])
    return rnn


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Bit-exact: same count, shapes, dtypes and bytes."""
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[np.ndarray]]:
    """The bytes of a file ``save_weights`` wrote, and the weights in it."""
    source = make_rnn("numpy", seed=1)
    path = xf.save_weights(source, tmp_path_factory.mktemp("saved") / "model")
    with open(path, "rb") as f:
        return f.read(), source.get_weights()


def declared_bytes(weights: list[np.ndarray]) -> int:
    return sum(w.nbytes for w in weights)


# Peak memory of a load: the arrays it declares, a few copies of them (read buffer, the backup
# taken for all-or-nothing, the cell's own copy), plus a fixed allowance for the zip directory.
PEAK_FACTOR = 4
PEAK_SLACK = 2 << 20


def peak_bound(weights: list[np.ndarray]) -> int:
    return PEAK_FACTOR * declared_bytes(weights) + PEAK_SLACK


_TARGETS: dict[str, tuple[object, list[np.ndarray]]] = {}
_COUNTER = itertools.count()


def target_for(backend: str) -> tuple[object, list[np.ndarray]]:
    """One object per backend with weights other than the saved ones (reset after each load)."""
    if backend not in _TARGETS:
        target = make_rnn(backend, seed=2)
        _TARGETS[backend] = (target, target.get_weights())
    return _TARGETS[backend]


def try_load(path: os.PathLike[str], data: bytes, expected: list[np.ndarray], backend: str = "numpy") -> str:
    """Write ``data`` to ``path`` and load it into an object with other weights: either the
    load gives exactly ``expected`` or it raises WeightsError and changes nothing. Any other
    exception fails the test."""
    path = f"{path}.{next(_COUNTER)}.npz"  # a new file each time: overwriting one is slow on ext4
    with open(path, "wb") as f:
        f.write(data)
    target, before = target_for(backend)
    try:
        xf.load_weights(target, path)
    except xf.WeightsError as e:
        assert str(e), "a WeightsError must name the problem"
        assert same(target.get_weights(), before), f"a failed load changed the weights ({e})"
        return "refused"
    else:
        assert same(target.get_weights(), expected), "a load succeeded with weights other than the saved ones"
        return "loaded"
    finally:
        os.unlink(path)
        if not same(target.get_weights(), before):  # the next mutation starts from the same object
            target.set_weights(before)


def refused_by_name(tmp_path, data: bytes, expected: list[np.ndarray], pattern: str) -> None:
    """``data`` is refused (and changes nothing), with a message matching ``pattern``."""
    assert try_load(tmp_path / "m", data, expected) == "refused"
    path = tmp_path / "m.npz"
    path.write_bytes(data)
    with pytest.raises(xf.WeightsError, match=pattern):
        xf.load_weights(make_rnn("numpy", 2), path)


def traced_peak(fn) -> int:
    """Peak traced memory (bytes) while ``fn()`` runs; exceptions propagate."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- crafting files ----------------------------------------------------------------------------
def npy(descr: str, shape: tuple[int, ...], data: bytes = b"", fortran: bool = False) -> bytes:
    """A ``.npy`` (version 1.0) with a header saying anything, followed by ``data``."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


def members_of(data: bytes) -> dict[str, bytes]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def raw_zip(entries: list[dict]) -> bytes:
    """A zip written by hand so that any field can lie. Each entry: ``name``, ``payload`` (the
    bytes stored), and optionally ``method`` (0 stored, 8 deflated, ...), ``crc``, ``size``
    (declared uncompressed size), ``flags``."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e["name"].encode()
        payload = e["payload"]
        fields = (
            e.get("flags", 0),
            e.get("method", 0),
            0,
            0x21,
            e.get("crc", zlib.crc32(payload)),
            len(payload),
            e.get("size", len(payload)),
            len(name),
        )
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *fields, 0) + name + payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, *fields, 0, 0, 0, 0, 0, offset) + name
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + eocd)


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zeros_deflated(n: int) -> bytes:
    """Raw deflate of ``n`` zero bytes, made in chunks (never ``n`` bytes in memory)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(n >> 20)]
    return b"".join(parts) + c.compress(bytes(n & ((1 << 20) - 1))) + c.flush()


def with_members(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    """The saved file with members replaced (``None`` removes one), stored, valid CRCs."""
    members = members_of(data)
    for name, content in replace.items():
        if content is None:
            members.pop(name, None)
        else:
            members[name] = content
    return raw_zip([{"name": n, "payload": c} for n, c in members.items()])


def meta_of(data: bytes) -> dict:
    return json.loads(np.load(__import__("io").BytesIO(members_of(data)["__meta__.npy"])).tobytes())


def with_meta(data: bytes, meta: object) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return with_members(data, {"__meta__.npy": npy("|u1", (len(raw),), raw)})


# === 1. the fuzz: truncations, bit flips, splices ==============================================
def test_every_truncation_is_refused(saved, tmp_path):
    data, weights = saved
    path = tmp_path / "m.npz"
    results = [try_load(path, data[:n], weights) for n in range(len(data))]
    assert results == ["refused"] * len(data)
    assert try_load(path, data, weights) == "loaded"
    print(f"{len(data)} truncations refused")


def test_every_byte_with_a_bit_flipped(saved, tmp_path):
    data, weights = saved
    path = tmp_path / "m.npz"
    counts = {"loaded": 0, "refused": 0}
    for i in range(len(data)):
        for bit in (i % 8, (i * 5 + 3) % 8):
            mutated = bytearray(data)
            mutated[i] ^= 1 << bit
            counts[try_load(path, bytes(mutated), weights)] += 1
    # flips in fields the reader does not use (times, "version made by", ...) load exactly;
    # everything the reader uses is covered by a check or by the members' CRC-32
    assert counts["refused"] > len(data) and counts["loaded"] > 0
    print(f"bit flips: {counts}")


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 200)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op in ops:
        if not b:
            break
        i = op[1] % len(b)
        if op[0] == "flip":
            b[i] ^= 1 << op[2]
        elif op[0] == "set":
            b[i] = op[2]
        elif op[0] == "delete":
            del b[i : i + op[2]]
        elif op[0] == "insert":
            b[i:i] = op[2]
        elif op[0] == "truncate":
            del b[i:]
        else:  # copy a block over another (duplicated headers, misplaced directories)
            j, n = op[2] % len(b), op[3]
            b[j : j + n] = b[i : i + n]
    return bytes(b)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(MUTATION, min_size=1, max_size=4))
def test_random_mutations_load_exactly_or_are_refused(saved, tmp_path, ops):
    data, weights = saved
    try_load(tmp_path / "m.npz", mutate(data, ops), weights)


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_mutations_on_framework_backends(saved, tmp_path, backend):
    """The same contract when the object is a torch module or a Keras layer (a sample)."""
    require(backend)
    data, weights = saved
    path = tmp_path / "m.npz"
    results = [try_load(path, data[:n], weights, backend) for n in range(0, len(data), 97)]
    for i in range(0, len(data), 41):
        results.append(try_load(path, mutate(data, [("flip", i, i % 8)]), weights, backend))
    assert try_load(path, data, weights, backend) == "loaded"
    assert results.count("refused") > len(data) // 97


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_loads_stay_within_the_declared_sizes(saved, tmp_path, ops):
    data, weights = saved
    peak = traced_peak(lambda: try_load(tmp_path / "m.npz", mutate(data, ops), weights))
    assert peak <= peak_bound(weights)


# === 2. malformed __meta__ records =============================================================
def _cell(i: int):
    def edit(meta: dict, fn) -> dict:
        fn(meta["cells"][i])
        return meta

    return edit


def _set(key, value):
    return lambda m: {**m, key: value}


def _cell_set(key, value, i=0):
    def fn(m):
        m["cells"][i][key] = value
        return m

    return fn


def _cell_del(key, i=0):
    def fn(m):
        del m["cells"][i][key]
        return m

    return fn


DEEP = b"[" * 100_000 + b"]" * 100_000

MALFORMED_META = {
    "not JSON": (b"{not json", "JSON"),
    "not UTF-8": (b'{"format": "\xff\xfe"}', "UTF-8"),
    "nested 100000 deep": (DEEP, "nest"),
    "a list": (lambda m: [m], "JSON object"),
    "no format": (lambda m: {k: v for k, v in m.items() if k != "format"}, "format"),
    "other format": (_set("format", "keras.weights"), "format"),
    "version 2": (_set("version", 2), "version"),
    "version as text": (_set("version", "1"), "version"),
    "version true": (_set("version", True), "version"),
    "no cells": (lambda m: {k: v for k, v in m.items() if k != "cells"}, "cells"),
    "cells not a list": (_set("cells", {"0": 1}), "cells"),
    "no cell records": (_set("cells", []), "cells"),
    "cell not an object": (_set("cells", [5, 6, 7]), r"cells\[0\]"),
    "structure unknown": (_set("structure", "banana"), "structure"),
    "no kind": (_cell_del("kind"), "kind"),
    "kind unknown": (_cell_set("kind", "FooCell"), "FooCell"),
    "kind not text": (_cell_set("kind", ["LSTMCell"]), "kind"),
    "units as text": (_cell_set("units", "3"), "units"),
    "units true": (_cell_set("units", True), "units"),
    "units negative": (_cell_set("units", -3), "units"),
    "units 2**70": (_cell_set("units", 2**70), "units"),
    "units float": (_cell_set("units", 3.0), "units"),
    "use_bias as text": (_cell_set("use_bias", "yes"), "use_bias"),
    "no names": (_cell_del("names"), "names"),
    "names wrong": (_cell_set("names", ["kernel", "bias", "recurrent_kernel"]), "names"),
    "names not text": (_cell_set("names", [1, 2, 3]), "names"),
    "shapes not a list": (_cell_set("shapes", "abc"), "shapes"),
    "shape infinite": (_cell_set("shapes", [[1e400, 12], [3, 12], [12]]), "shape"),
    "shape negative": (_cell_set("shapes", [[-5, 12], [3, 12], [12]]), "shape"),
    "shape nested": (_cell_set("shapes", [[[[5]]], [3, 12], [12]]), "shape"),
    "shape wrong": (_cell_set("shapes", [[6, 12], [3, 12], [12]]), "shape"),
    "shape 2**40": (_cell_set("shapes", [[2**40, 12], [3, 12], [12]]), "shape"),
    "shapes short": (_cell_set("shapes", [[5, 12]]), "shape"),
    "no dtype": (_cell_del("dtype"), "dtype"),
    "dtype float128": (_cell_set("dtype", "float128"), "dtype"),
    "dtype object": (_cell_set("dtype", "object"), "dtype"),
}


@pytest.mark.parametrize("built", [True, False], ids=["built", "unbuilt"])
@pytest.mark.parametrize("case", list(MALFORMED_META))
def test_malformed_meta_is_refused_by_name(saved, tmp_path, case, built):
    data, _ = saved
    edit, pattern = MALFORMED_META[case]
    meta = edit if isinstance(edit, bytes) else edit(meta_of(data))
    path = tmp_path / "m.npz"
    path.write_bytes(with_meta(data, meta))
    target = make_rnn("numpy", seed=2 if built else None)
    before = target.get_weights()
    with pytest.raises(xf.WeightsError, match=pattern) as info:
        xf.load_weights(target, path)
    assert "m.npz" in str(info.value)
    assert same(target.get_weights(), before)
    assert built or all(c.input_dim is None for c in target.cells)


@pytest.mark.parametrize(
    "content,pattern",
    [
        (None, "__meta__"),
        (npy("<f8", (3,), bytes(24)), "__meta__"),
        (npy("|u1", (2, 2), bytes(4)), "__meta__"),
        (npy("|u1", (5 << 20,)), "__meta__"),  # declares 5 MiB of metadata
    ],
    ids=["missing", "float", "2-D", "oversized"],
)
def test_bad_meta_members_are_refused(saved, tmp_path, content, pattern):
    data, weights = saved
    refused_by_name(tmp_path, with_members(data, {"__meta__.npy": content}), weights, pattern)


def test_a_declared_shape_of_2_to_the_40_is_refused_without_allocating(saved, tmp_path):
    """The metadata and the member header agree on a (2**40, 12) kernel; the object is unbuilt,
    so only the file's sizes can refuse it. Today: a raw MemoryError."""
    data, weights = saved
    meta = meta_of(data)
    meta["cells"][0]["shapes"][0] = [2**40, 12]
    mutated = with_members(with_meta(data, meta), {"cells.0.kernel.npy": npy("<f4", (2**40, 12), bytes(5 * 12 * 4))})
    path = tmp_path / "m.npz"
    path.write_bytes(mutated)
    target = make_rnn("numpy", seed=None)
    errors = []

    def load():
        try:
            xf.load_weights(target, path)
        except xf.WeightsError as e:
            errors.append(str(e))

    assert traced_peak(load) <= peak_bound(weights)
    assert errors and "cells.0.kernel" in errors[0]
    assert all(c.input_dim is None for c in target.cells)


# === 3. members: undeclared, oversized, bombs, lying directories ==============================
BOMB = 64 << 20  # 64 MiB of zeros deflates to about 64 KiB


def test_an_undeclared_member_is_refused_before_it_is_read(saved, tmp_path):
    """Today this file loads, and reading it costs 64 MiB."""
    data, weights = saved
    members = members_of(data)
    header = npy("|u1", (BOMB,))  # a valid .npy of 64 MiB of zeros, deflated
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH) + zeros_deflated(BOMB)
    crc = zlib.crc32(header)
    for _ in range(BOMB >> 20):
        crc = zlib.crc32(bytes(1 << 20), crc)
    entries = [{"name": n, "payload": v} for n, v in members.items()]
    entries.append({"name": "extra.npy", "payload": payload, "method": 8, "crc": crc, "size": len(header) + BOMB})
    path = tmp_path / "m.npz"
    path.write_bytes(raw_zip(entries))
    assert path.stat().st_size < 1 << 20
    target = make_rnn("numpy", seed=2)
    before = target.get_weights()
    errors = []

    def load():
        try:
            xf.load_weights(target, path)
        except xf.WeightsError as e:
            errors.append(e)

    peak = traced_peak(load)
    assert errors and "extra.npy" in str(errors[0]), "an undeclared member must be refused by name"
    assert peak <= peak_bound(weights), f"peak {peak >> 20} MiB for {declared_bytes(weights)} declared bytes"
    assert same(target.get_weights(), before)


@pytest.mark.parametrize("honest_size", [True, False], ids=["directory-says-64MiB", "directory-says-small"])
def test_a_zip_bomb_in_a_declared_member_is_bounded(saved, tmp_path, honest_size):
    """``cells.0.kernel.npy`` whose deflated stream holds its real bytes followed by 64 MiB.
    Either the directory declares the full size (refused before reading: it is not the size the
    metadata declares) or it declares the right size (read stops there; the CRC covers it)."""
    data, weights = saved
    members = members_of(data)
    real = members["cells.0.kernel.npy"]
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(real) + c.flush(zlib.Z_FULL_FLUSH) + zeros_deflated(BOMB)
    entries = [{"name": n, "payload": v} for n, v in members.items() if n != "cells.0.kernel.npy"]
    bomb = {"name": "cells.0.kernel.npy", "payload": payload, "method": 8}
    if honest_size:
        bomb.update(size=len(real) + BOMB, crc=0)
    else:
        bomb.update(size=len(real), crc=zlib.crc32(real))
    path = tmp_path / "m.npz"
    path.write_bytes(raw_zip([bomb, *entries]))
    results = []
    peak = traced_peak(lambda: results.append(try_load(path, path.read_bytes(), weights)))
    assert peak <= peak_bound(weights) + 2 * len(payload)  # + the file's own bytes read by the test
    assert results == (["refused"] if honest_size else ["loaded"])


@pytest.mark.parametrize(
    "entry,pattern",
    [
        ({"size": 0xFFFF_FFF0}, r"cells\.0\.kernel"),  # directory declares ~4 GiB, stored
        ({"method": 12}, "compression"),  # bzip2: not what save_weights writes
        ({"method": 99}, "compression"),  # unknown method (today NotImplementedError)
        ({"flags": 1}, "encrypted"),
        ({"crc": 12345}, "CRC"),
    ],
    ids=["stored-4GiB", "bzip2", "method-99", "encrypted", "crc"],
)
def test_lying_directory_entries_are_refused(saved, tmp_path, entry, pattern):
    data, weights = saved
    entries = [{"name": n, "payload": v} for n, v in members_of(data).items()]
    for e in entries:
        if e["name"] == "cells.0.kernel.npy":
            e.update(entry)
    refused_by_name(tmp_path, raw_zip(entries), weights, pattern)


@pytest.mark.parametrize(
    "content,pattern",
    [
        (npy("<f4", (6, 12), bytes(6 * 12 * 4)), "shape"),  # header disagrees with the metadata
        (npy("<f8", (5, 12), bytes(5 * 12 * 8)), "dtype"),
        (npy("|O", (5, 12), bytes(5 * 12 * 8)), "dtype"),  # object arrays: pickles, never loaded
        (npy("<i4", (5, 12), bytes(5 * 12 * 4)), "dtype"),
        (npy("<f4", (5, 12), bytes(5 * 12 * 4 + 100)), r"cells\.0\.kernel"),  # trailing bytes
        (npy("<f4", (5, 12), bytes(5 * 12 * 4 - 4)), r"cells\.0\.kernel"),  # short
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'", r"cells\.0\.kernel"),  # header cut
        (b"\x93NUMPY\x03\x00" + bytes(20), r"cells\.0\.kernel"),
        (b"PK\x03\x04 not an array", r"cells\.0\.kernel"),
        (None, r"cells\.0\.kernel"),  # missing
    ],
    ids=["shape", "f8", "object", "int", "trailing", "short", "header-cut", "npy-v3", "not-npy", "missing"],
)
def test_bad_members_are_refused_by_name(saved, tmp_path, content, pattern):
    data, weights = saved
    refused_by_name(tmp_path, with_members(data, {"cells.0.kernel.npy": content}), weights, pattern)


def test_duplicate_member_names_are_refused(saved, tmp_path):
    data, weights = saved
    members = members_of(data)
    entries = [{"name": n, "payload": v} for n, v in members.items()]
    entries.append({"name": "cells.0.kernel.npy", "payload": npy("<f4", (5, 12), bytes(240))})
    refused_by_name(tmp_path, raw_zip(entries), weights, "twice")


def test_other_byte_orders_and_layouts_in_a_file_load_exactly(saved, tmp_path):
    """A hand-made file with big-endian and Fortran-ordered members holds the same numbers."""
    data, weights = saved
    members = members_of(data)
    k = weights[0]
    members["cells.0.kernel.npy"] = npy(">f4", k.shape, k.astype(">f4").tobytes())
    members["cells.0.recurrent_kernel.npy"] = npy("<f4", weights[1].shape, weights[1].T.tobytes(), fortran=True)
    path = tmp_path / "m.npz"
    assert try_load(path, raw_zip([{"name": n, "payload": v} for n, v in members.items()]), weights) == "loaded"


def test_a_deflated_file_loads(saved, tmp_path):
    """``np.savez_compressed``'s files are read too (sizes checked the same way)."""
    data, weights = saved
    entries = [
        {"name": n, "payload": deflated(v), "method": 8, "crc": zlib.crc32(v), "size": len(v)}
        for n, v in members_of(data).items()
    ]
    assert try_load(tmp_path / "m.npz", raw_zip(entries), weights) == "loaded"


def test_a_large_file_loads_within_the_declared_sizes(tmp_path):
    rng = np.random.default_rng(0)
    units = 256
    weights = [rng.standard_normal(s).astype("float32") for s in [(units, units), (units, units), (units,)] * 2]

    def rnn():  # set_weights on unbuilt cells builds them with these weights (no initializer run)
        return layers.RNN([layers.SimpleRNNCell(units, backend="numpy") for _ in range(2)])

    source, target = rnn(), rnn()
    source.set_weights(weights)
    target.set_weights([w + 1 for w in weights])
    path = xf.save_weights(source, tmp_path / "big")
    peak = traced_peak(lambda: xf.load_weights(target, path))
    assert same(target.get_weights(), weights)
    assert peak <= peak_bound(weights), f"peak {peak} for {declared_bytes(weights)} declared bytes"
    print(f"peak {peak} bytes for {declared_bytes(weights)} declared")


def deflated_zeros_kernel(data: bytes, rows: int) -> tuple[bytes, int]:
    """The saved file with ``cells.0.kernel`` declared (metadata and header agreeing) as
    ``(rows, 12)`` float32 zeros, deflated: a small file declaring ``rows * 48`` bytes."""
    meta = meta_of(data)
    meta["cells"][0]["shapes"][0] = [rows, 12]
    members = members_of(with_meta(data, meta))
    nbytes = rows * 12 * 4
    header = npy("<f4", (rows, 12))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH) + zeros_deflated(nbytes)
    crc = zlib.crc32(header)
    for _ in range(nbytes >> 20):
        crc = zlib.crc32(bytes(1 << 20), crc)
    crc = zlib.crc32(bytes(nbytes & ((1 << 20) - 1)), crc)
    entries = [{"name": n, "payload": v} for n, v in members.items() if n != "cells.0.kernel.npy"]
    entries.append(
        {"name": "cells.0.kernel.npy", "payload": payload, "method": 8, "crc": crc, "size": len(header) + nbytes}
    )
    return raw_zip(entries), nbytes


def test_an_unbuilt_object_does_not_let_a_small_file_choose_huge_sizes(saved, tmp_path):
    """Issue 18: a 383 KiB file of deflated zeros, loaded into an unbuilt object, took peak memory
    from 35 to 802 MiB. Declared sizes beyond 16 x the file (``max_bytes=``) are refused unread;
    the caller can opt in, and a built object's own sizes bound the load anyway."""
    data, weights = saved
    crafted, nbytes = deflated_zeros_kernel(data, 1 << 20)  # 48 MiB declared
    path = tmp_path / "m.npz"
    path.write_bytes(crafted)
    assert path.stat().st_size < 128 << 10
    target = make_rnn("numpy", seed=None)
    errors = []

    def load():
        try:
            xf.load_weights(target, path)
        except xf.WeightsError as e:
            errors.append(str(e))

    peak = traced_peak(load)
    assert errors and "max_bytes=" in errors[0] and str(path) in errors[0], errors
    assert peak <= peak_bound(weights), f"peak {peak >> 20} MiB"  # it read 48 MiB (and held 4 copies)
    assert all(c.input_dim is None for c in target.cells)
    for bad in (-1, 2.5, "1", True):
        with pytest.raises(xf.WeightsError, match="max_bytes"):
            xf.load_weights(target, path, max_bytes=bad)
    xf.load_weights(target, path, max_bytes=nbytes + (1 << 20))  # opted in: loads exactly
    assert target.cells[0].input_dim == 1 << 20 and not target.get_weights()[0].any()


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_file_that_is_not_regular_is_refused_at_once(tmp_path, kind):
    """Issue 18: ``load_weights`` on a named pipe blocked forever (``open`` waits for a writer).
    Only regular files are read; a pipe, a directory or a device is refused without waiting."""
    import threading

    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes on this platform")
        path = tmp_path / "pipe.npz"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path / "dir.npz"
        path.mkdir()
    else:
        path = "/dev/zero"
        if not os.path.exists(path):
            pytest.skip("no /dev/zero")
    errors = []
    target = make_rnn("numpy", seed=2)
    before = target.get_weights()

    def load():
        try:
            xf.load_weights(target, path)
        except Exception as e:  # any outcome is recorded; a hang is the defect
            errors.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(timeout=10)
    if t.is_alive() and kind == "fifo":  # the defect: unblock the reader so the thread ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=10)
        pytest.fail("load_weights blocked on a named pipe")
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], xf.WeightsError), errors
    assert str(path) in str(errors[0]) and "regular file" in str(errors[0])
    assert same(target.get_weights(), before)


# === 4. Keras files ============================================================================
HDF5 = b"\x89HDF\r\n\x1a\n"


def assert_keras_advice(error: xf.WeightsError, what: str) -> None:
    message = str(error)
    assert what in message and "allow_pickle" not in message
    assert "keras.saving.load_model" in message and "xf.from_keras" in message


def test_an_hdf5_file_is_named_with_advice(tmp_path):
    path = tmp_path / "m.weights.h5"
    path.write_bytes(HDF5 + bytes(2040))
    with pytest.raises(xf.WeightsError) as info:
        xf.load_weights(make_rnn("numpy", 2), path)
    assert_keras_advice(info.value, "HDF5")


def test_a_keras_archive_is_named_with_advice(tmp_path):
    path = tmp_path / "m.keras"
    entries = [
        {"name": "metadata.json", "payload": b'{"keras_version": "3.15.1"}'},
        {"name": "config.json", "payload": b'{"class_name": "Sequential"}'},
        {"name": "model.weights.h5", "payload": HDF5 + bytes(100)},
    ]
    path.write_bytes(raw_zip(entries))
    with pytest.raises(xf.WeightsError) as info:
        xf.load_weights(make_rnn("numpy", 2), path)
    assert_keras_advice(info.value, ".keras")


def test_real_keras_files_are_named_with_advice(tmp_path):
    require("tensorflow")
    pytest.importorskip("h5py")
    from rnn_xframework import backends

    backends.get("tensorflow")
    import keras

    model = keras.Sequential([keras.Input((None, INPUT_DIM)), keras.layers.LSTM(3)])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    for name, what in (("m.keras", ".keras"), ("m.weights.h5", "HDF5")):
        with pytest.raises(xf.WeightsError) as info:
            xf.load_weights(make_rnn("numpy", 2), tmp_path / name)
        assert_keras_advice(info.value, what)


# === 5. set_weights: all-or-nothing, every byte order alike ====================================
ORDERS = ["<f4", ">f4", "<f8", ">f8", "<f2", ">f2", "fortran", "reversed", np.dtype(np.longdouble).str]


def variant(w: np.ndarray, how: str) -> np.ndarray:
    if how == "fortran":
        return np.asfortranarray(w)
    if how == "reversed":  # negative strides
        return np.ascontiguousarray(w[::-1])[::-1]
    return w.astype(how)


@pytest.mark.parametrize("how", ORDERS)
@pytest.mark.parametrize("built", [True, False], ids=["built", "unbuilt"])
def test_set_weights_takes_every_byte_order_alike(backend, how, built):
    """Today a torch cell writes ``kernel`` from a ``>f4`` list, then raises a raw ValueError."""
    rnn = make_rnn(backend, seed=2 if built else None)
    weights = [w.astype("float32") for w in make_rnn("numpy", seed=3).get_weights()]
    given = [variant(w, how) for w in weights]
    rnn.set_weights(given)
    expected = [np.asarray(g).astype("float32") for g in given]
    assert same(rnn.get_weights(), expected)
    cell = layers.LSTMCell(3, backend=backend)
    cell.set_weights(given[:3])
    assert same(cell.get_weights(), expected[:3])


BAD_WEIGHT = {
    "int": lambda w: w.astype(np.int32),
    "complex": lambda w: w.astype(np.complex64),
    "object": lambda w: w.astype(object),
    "text": lambda w: "bias",
    "none": lambda w: None,
    "ragged": lambda w: [[1.0, 2.0], [3.0]],
    "bool": lambda w: w > 0,
    "shape": lambda w: w[..., :-1],
    "datetime": lambda w: np.zeros(w.shape, "datetime64[s]"),
}


@pytest.mark.parametrize("where", [0, -1], ids=["first", "last"])
@pytest.mark.parametrize("bad", list(BAD_WEIGHT))
@pytest.mark.parametrize("built", [True, False], ids=["built", "unbuilt"])
def test_a_bad_weight_changes_nothing(backend, bad, built, where):
    rnn = make_rnn(backend, seed=2 if built else None)
    before = rnn.get_weights()
    weights = [w.astype("float32") for w in make_rnn("numpy", seed=3).get_weights()]
    weights[where] = BAD_WEIGHT[bad](weights[where])
    with pytest.raises(xf.WeightsError):
        rnn.set_weights(weights)
    assert same(rnn.get_weights(), before)
    assert built or all(c.input_dim is None for c in rnn.cells)
    cell = rnn.cells[0 if where == 0 else 2]
    with pytest.raises(xf.WeightsError):
        cell.set_weights(weights[:3] if where == 0 else weights[-3:])
    assert same(rnn.get_weights(), before)


# === 6. saving: modes, symlinks, temporary files ================================================
TEMP = re.compile(r"^\.model\.npz\.rnnxf-tmp-\d+-[0-9a-f]+$")


def mode_of(path: os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_save_keeps_the_mode_of_an_existing_file(tmp_path, mode):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    path.chmod(mode)
    xf.save_weights(make_rnn("numpy", 1), path)
    assert mode_of(path) == mode


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_a_new_file_gets_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        xf.save_weights(make_rnn("numpy", 1), tmp_path / "model")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "model.npz") == 0o666 & ~umask


@pytest.mark.parametrize("dangling", [False, True], ids=["existing-target", "dangling"])
def test_save_writes_through_a_symlink(saved, tmp_path, dangling):
    _, weights = saved
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.npz"
    if not dangling:
        target.write_bytes(b"old")
        target.chmod(0o640)
    link = tmp_path / "model.npz"
    link.symlink_to(os.path.join("store", "real.npz"))
    assert xf.save_weights(make_rnn("numpy", 1), link) == str(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "real.npz")
    assert dangling or mode_of(target) == 0o640
    loaded = make_rnn("numpy", 2)
    xf.load_weights(loaded, link)
    assert same(loaded.get_weights(), weights)
    assert sorted(os.listdir(tmp_path / "store")) == ["real.npz"]


def test_a_save_that_cannot_create_its_temp_file_names_the_destination(tmp_path, monkeypatch):
    """Issue 18: a refused write (a read-only directory) raised ``PermissionError`` naming
    ``.model.npz.rnnxf-tmp-...``, a file the user never asked for; it names the destination now
    (same ``PermissionError``, same errno). The refusal is simulated: root may write anywhere."""
    real_open = os.open

    def refusing(p, flags, *args):
        if weightfile.TEMP_MARK in os.fspath(p):
            raise PermissionError(13, "Permission denied", os.fspath(p))
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(PermissionError) as raised:
        xf.save_weights(make_rnn("numpy", 1), tmp_path / "model")
    assert str(tmp_path / "model.npz") in str(raised.value) and weightfile.TEMP_MARK not in str(raised.value)
    assert raised.value.errno == 13 and raised.value.filename == str(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_save_refuses_a_directory_destination(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(xf.WeightsError, match="directory"):
        xf.save_weights(make_rnn("numpy", 1), tmp_path / "model")
    assert os.listdir(tmp_path) == ["model.npz"] and os.listdir(tmp_path / "model.npz") == []


def test_a_failed_save_names_and_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    seen = []

    def broken(src, dst, *args, **kwargs):
        seen.append(os.fspath(src))
        assert os.path.exists(src)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full") as raised:
        xf.save_weights(make_rnn("numpy", 1), path)
    # issue 18: the error names the destination, not the temporary file
    assert str(path) in str(raised.value) and weightfile.TEMP_MARK not in str(raised.value)
    assert len(seen) == 1 and os.path.dirname(seen[0]) == str(tmp_path)
    assert TEMP.match(os.path.basename(seen[0])), os.path.basename(seen[0])
    assert os.listdir(tmp_path) == ["model.npz"] and path.read_bytes() == b"old"


KILLED_SAVE = """
import os, signal, sys
import numpy as np
import rnn_xframework as xf
from rnn_xframework import layers

rnn = layers.RNN([layers.SimpleRNNCell(8, backend="numpy")])
rnn.build((None, None, 4))
real = np.savez

def dying(f, **arrays):
    f.write(b"PK partial")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = dying
xf.save_weights(rnn, sys.argv[1])
"""


def test_a_killed_save_leaves_the_destination_and_a_findable_temp_file(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == b"old"
    left = sorted(n for n in os.listdir(tmp_path) if n != "model.npz")
    assert len(left) == 1 and TEMP.match(left[0]), left
    assert weightfile.temp_files(tmp_path / "model") == [str(tmp_path / left[0])]

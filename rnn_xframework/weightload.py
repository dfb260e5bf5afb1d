"""The weight file reader: checked, bounded, all-or-nothing (the format: :mod:`rnn_xframework.weightfile`).

:func:`load` trusts nothing in the file. Before any weight is read it checks the
``__meta__`` record (at most :data:`META_MAX_BYTES`, every field typed), compares it with the
object, and checks every member of the zip directory: no member the record does not declare, none
missing or twice, only stored or deflated members, declared sizes that match the recorded shapes
exactly and that the member's compressed bytes can hold. Each member is then read with that size
as a hard cap (so peak memory is bounded by the declared sizes, whatever the compressed stream
holds) and its CRC-32 checked. Any problem raises :class:`WeightsError` naming the file, the member
and the problem; the caller writes nothing until everything has been read. Keras files
(``.weights.h5``, ``.keras``) are recognised and answered with what to do instead.
"""

from __future__ import annotations

import ast
import os
import struct
import zipfile
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from rnn_xframework import archives, layouts, weightfile
from rnn_xframework.errors import WeightsError
from rnn_xframework.weightfile import META, short

META_MAX_BYTES = 1 << 20
"""Largest ``__meta__`` record read (a few hundred bytes per cell are written)."""
NPY_HEADER_MAX = 1 << 16
"""Largest ``.npy`` header read (NumPy writes 128 bytes for these arrays)."""
UNBUILT_MAX_EXPANSION = 16
"""Into an object whose sizes the file chooses (an unbuilt first cell takes its input size from
the file), the weights may declare at most this many times the file's size, or
:data:`UNBUILT_MIN_BYTES`, whichever is larger, unless the caller passes ``max_bytes=``: a file
of a few hundred KiB of deflated zeros could otherwise declare hundreds of MiB (issue 18: a
383 KiB file took a load from 35 to 802 MiB). ``xf.save_weights`` stores members uncompressed,
so its files declare less than their size."""
UNBUILT_MIN_BYTES = 1 << 20

def _signature(records: list[dict[str, Any]]) -> list[str]:
    """:func:`layouts.signature` of the cells a file's records describe."""
    return layouts.signature([SimpleNamespace(layout_name=r["kind"], **r) for r in records])


class _Fail:
    """Builds ``WeightsError("load_weights: '<path>': ...")``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, problem: str) -> WeightsError:
        return WeightsError(f"load_weights: {self.path!r}: {problem}")


def load(
    path: str | os.PathLike[str], cells: Sequence[Any], starts: Sequence[int] = (0,), max_bytes: int | None = None
) -> list[list[np.ndarray]]:
    """Read the weight file at ``path`` for ``cells`` (checked, bounded; see the module doc);
    ``starts``: where a chain of layers begins (:func:`rnn_xframework.protocol.chain_starts`).

    Returns one canonical list per cell, native byte order. Raises :class:`WeightsError` for
    any file that is not a valid weight file for these cells (a named pipe, directory or device
    included, refused without reading), or that declares more than ``max_bytes`` of weights
    where the file chooses the sizes (default: :data:`UNBUILT_MAX_EXPANSION`);
    ``FileNotFoundError`` when there is no file. Reads nothing into ``cells``.
    """
    if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
        raise WeightsError(f"load_weights: max_bytes must be a non-negative int (bytes), got {max_bytes!r}")
    name = os.fspath(path)
    fail = _Fail(name)
    with archives.open_regular(name, fail, "weight files are regular files (.npz from xf.save_weights)") as f:
        size = os.fstat(f.fileno()).st_size
        _refuse_foreign_start(f, size, fail)
        try:
            archive = zipfile.ZipFile(f)
        except archives.ZIP_ERRORS as e:
            raise fail(f"is not an rnn_xframework weight file: not a readable zip archive ({e})") from e
        with archive:
            return _load_archive(archive, size, cells, fail, starts, max_bytes)


def _refuse_foreign_start(f: Any, size: int, fail: _Fail) -> None:
    """Name what the file is when its first bytes say it is not a zip archive."""
    head = f.read(8)
    f.seek(0)
    hdf5 = head == archives.HDF5_SIGNATURE
    for offset in (512, 1024, 2048):  # HDF5 allows a user block before its signature
        if not hdf5 and size >= offset + 8:
            f.seek(offset)
            hdf5 = f.read(8) == archives.HDF5_SIGNATURE
            f.seek(0)
    if hdf5:
        p = fail.path
        if p.endswith(".weights.h5"):
            how = (
                f"it holds no model, so build the Keras model that wrote it and call `model.load_weights({p!r})` "
                "(a whole model saved as .keras or .h5 loads with `keras.saving.load_model(...)`)"
            )
        else:
            how = (
                f"load a saved model with `model = keras.saving.load_model({p!r})` (a weights-only "
                "'.weights.h5' needs the model built first, then `model.load_weights(...)`)"
            )
        raise fail(
            "is an HDF5 file (what Keras writes .h5 and .weights.h5 in), not an rnn_xframework "
            f"weight file (.npz): {how}; then "
            "`xf.from_keras(model, backend=...)` gives the rnn_xframework object (and "
            "`xf.save_weights(obj, 'model')` an .npz)"
        )
    if size == 0:
        raise fail("is empty: not an rnn_xframework weight file")
    if head.startswith(b"\x93NUMPY"):
        raise fail("is a single .npy array, not an rnn_xframework weight file (.npz from xf.save_weights)")
    if head[:1] == b"\x80":
        raise fail("looks like a pickle: never loaded (weight files are .npz from xf.save_weights)")
    if not head.startswith(b"PK\x03\x04"):
        raise fail(f"is not an rnn_xframework weight file: it starts with {head!r}, not a zip archive's 'PK'")


def _load_archive(
    archive: zipfile.ZipFile,
    size: int,
    cells: Sequence[Any],
    fail: _Fail,
    starts: Sequence[int] = (0,),
    max_bytes: int | None = None,
) -> list[list[np.ndarray]]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in members:
            raise fail(f"holds member {info.filename!r} twice; a damaged or tampered file")
        members[info.filename] = info
    _refuse_keras_archive(members, fail)
    meta_info = members.get(META + ".npy")
    if meta_info is None:
        raise fail(f"has no {META} record: not a weight file written by rnn_xframework.save_weights")
    raw = _read_npy(archive, meta_info, size, fail, _meta_header)
    records = weightfile.parse_meta(raw.tobytes(), fail)
    expected = _expected_members(records, cells, fail, starts)
    undeclared = sorted(set(members) - set(expected) - {META + ".npy"})
    if undeclared:
        raise fail(
            f"holds member(s) {short(undeclared, 200)} that its {META} record does not declare "
            "(refused unread; a weight file holds only cells.{i}.{name}.npy and __meta__.npy)"
        )
    missing = [m for m in expected if m not in members]
    if missing:
        raise fail(f"misses member(s) {missing} that its {META} record declares: a damaged file")
    if any(i < len(cells) and cells[i].input_dim is None for i in starts):  # the file chooses an input size
        _check_declared_total(expected, size, fail, max_bytes)
    for member, (shape, dtype) in expected.items():  # every size checked before any data is read
        _check_entry(members[member], size, fail, _nbytes(shape, dtype), NPY_HEADER_MAX, f"shape {shape} {dtype}")
    arrays = {
        member: _read_npy(archive, members[member], size, fail, _weight_header(shape, dtype))
        for member, (shape, dtype) in expected.items()
    }
    out: list[list[np.ndarray]] = []
    for i, r in enumerate(records):
        out.append([arrays[f"cells.{i}.{n}.npy"] for n in r["names"]])
    return out


def _refuse_keras_archive(members: dict[str, zipfile.ZipInfo], fail: _Fail) -> None:
    if "config.json" in members and ("model.weights.h5" in members or "metadata.json" in members):
        raise fail(
            "is a Keras model archive (.keras), not an rnn_xframework weight file (.npz). Load it "
            f"with `model = keras.saving.load_model({fail.path!r})`, then `xf.from_keras(model, "
            "backend=...)` gives the rnn_xframework object (and `xf.save_weights(obj, 'model')` an .npz)"
        )


def _check_declared_total(
    expected: dict[str, tuple[tuple[int, ...], str]], size: int, fail: _Fail, max_bytes: int | None
) -> None:
    """Refuse, before reading, a file that declares far more weights than it holds."""
    total = sum(_nbytes(shape, dtype) for shape, dtype in expected.values())
    cap = max(UNBUILT_MAX_EXPANSION * size, UNBUILT_MIN_BYTES) if max_bytes is None else max_bytes
    if total > cap:
        how = (
            "the max_bytes= given"
            if max_bytes is not None
            else (f"{UNBUILT_MAX_EXPANSION} x the file's {size} bytes (weightload.UNBUILT_MAX_EXPANSION)")
        )
        raise fail(
            f"declares {total} bytes of weights (cells.0.kernel has shape {list(next(iter(expected.values()))[0])}) "
            f"for an object whose sizes the file chooses (unbuilt), more than {how}: refused unread. "
            "Build the object first (obj.build(...), or input_size=) so its own sizes apply, or pass "
            f"xf.load_weights(obj, path, max_bytes={total}) if you trust the file"
        )


# --- the __meta__ record --------------------------------------------------------------------------
def _expected_members(
    records: list[dict[str, Any]], cells: Sequence[Any], fail: _Fail, starts: Sequence[int] = (0,)
) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{member: (shape, dtype)}`` the object needs, after checking the records against it."""
    saved, wanted = _signature(records), layouts.signature(cells)
    if saved != wanted:
        raise fail(f"the file holds {saved}, the object is {wanted}")
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    dim = None
    for i, (cell, r) in enumerate(zip(cells, records, strict=True)):
        if i in starts:  # the first layer of a chain takes the object's inputs, not the layer below
            dim = None
        if cell.input_dim is not None:
            dim = cell.input_dim
        elif dim is None:  # an unbuilt first cell takes its input size from the file
            kernel = r["shapes"][0]
            if len(kernel) != 2 or kernel[0] < 1:
                raise fail(f"cells.{i}.kernel recorded with shape {kernel}, expected (input size >= 1, units * gates)")
            dim = kernel[0]
        layout = layouts.get(r["kind"])
        for name, shape in layout.shapes(dim, r["units"], r["use_bias"]):
            recorded = tuple(r["shapes"][r["names"].index(name)])
            if recorded != shape:
                raise fail(f"cells.{i}.{name} recorded with shape {list(recorded)}, the object needs {list(shape)}")
            expected[f"cells.{i}.{name}.npy"] = (shape, r["dtype"])
        dim = r["units"]
    return expected


# --- members ------------------------------------------------------------------------------------
def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    n = np.dtype(dtype).itemsize
    for d in shape:
        n *= d
    return n


def _check_entry(info: zipfile.ZipInfo, size: int, fail: _Fail, data_bytes: int, header_max: int, what: str) -> None:
    """Refuse a member, from its directory entry alone, unless it can be read within the sizes
    the metadata declares: ``data_bytes`` after a header of at most ``header_max`` bytes."""
    name = info.filename
    archives.check_flags_and_method(
        info,
        fail,
        "weight files never are",
        "only stored (np.savez, xf.save_weights) and deflated (np.savez_compressed) members are read",
    )
    if not data_bytes <= info.file_size <= data_bytes + header_max:
        raise fail(
            f"member {name!r}: the metadata declares {what} ({data_bytes} bytes of data), but the "
            f"zip directory says the member holds {info.file_size} bytes; refused unread"
        )
    archives.check_sizes(info, size, fail)


class _Capped:
    """Reads at most ``limit`` bytes of ``raw`` and counts them."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.left, self.count = raw, limit, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(n) if n > 0 else b""
        self.left -= len(data)
        self.count += len(data)
        return data

    def read_exact(self, n: int, what: str) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise EOFError(f"the member ends inside its {what}")
        return data


def _read_header(r: _Capped) -> tuple[str, bool, tuple[int, ...]]:
    """Parse a ``.npy`` header (versions 1.0 and 2.0) without trusting it: ``(descr, fortran,
    shape)``; raises ValueError, SyntaxError, EOFError or RecursionError on anything else."""
    magic = r.read_exact(8, ".npy magic")
    if magic[:6] != b"\x93NUMPY" or magic[6:] not in (b"\x01\x00", b"\x02\x00"):
        raise ValueError(f"not a .npy array of version 1.0 or 2.0 (starts with {magic!r})")
    length_format = "<H" if magic[6] == 1 else "<I"
    (length,) = struct.unpack(length_format, r.read_exact(struct.calcsize(length_format), ".npy header length"))
    if length > NPY_HEADER_MAX:
        raise ValueError(f"its .npy header declares {length} bytes")
    header = ast.literal_eval(r.read_exact(length, ".npy header").decode("latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f".npy header is not the expected dictionary: {short(header)}")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or type(fortran) is not bool:
        raise ValueError(f".npy header has descr {short(descr)} and fortran_order {short(fortran)}")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f".npy header has shape {short(shape)}")
    return descr, fortran, shape


def _meta_header(descr: str, shape: tuple[int, ...]) -> tuple[np.dtype, tuple[int, ...]] | str:
    if descr != "|u1" or len(shape) != 1 or shape[0] > META_MAX_BYTES:
        return f"a 1-D uint8 array of at most {META_MAX_BYTES} bytes (UTF-8 JSON)"
    return np.dtype(np.uint8), shape


def _weight_header(expected_shape: tuple[int, ...], dtype: str) -> Any:
    allowed = {np.dtype(dtype).newbyteorder(o).str for o in "<>"}

    def accept(descr: str, shape: tuple[int, ...]) -> tuple[np.dtype, tuple[int, ...]] | str:
        if descr not in allowed or shape != expected_shape:
            return f"shape {expected_shape} and dtype {dtype} as its metadata records"
        return np.dtype(descr), shape

    return accept


def _read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, fail: _Fail, accept: Any) -> np.ndarray:
    """Read one ``.npy`` member: header first (capped), ``accept(descr, shape)`` decides, then
    exactly the data that shape needs (its size already matched the directory's) with the
    member's CRC-32 checked."""
    name = info.filename
    if name == META + ".npy" and info.file_size > META_MAX_BYTES + NPY_HEADER_MAX:
        raise fail(
            f"its {META} record declares {info.file_size} bytes, more than a weight file's record can "
            f"need ({META_MAX_BYTES}); refused unread"
        )
    if name == META + ".npy":
        _check_entry(info, size, fail, 0, META_MAX_BYTES + NPY_HEADER_MAX, "a metadata record")
    try:
        with archive.open(info) as raw:
            r = _Capped(raw, info.file_size)
            descr, fortran, shape = _read_header(r)
            verdict = accept(descr, shape)
            if isinstance(verdict, str):
                raise fail(f"member {name!r} holds {descr!r} {shape}; expected {verdict}")
            dtype, shape = verdict
            nbytes = _nbytes(shape, dtype.str)
            if r.count + nbytes != info.file_size:
                raise fail(
                    f"member {name!r} holds {info.file_size - r.count} bytes after its header; "
                    f"its shape {shape} {dtype} needs {nbytes}"
                )
            try:
                buf = np.empty(nbytes, np.uint8)
            except MemoryError as e:
                raise fail(f"member {name!r} needs {nbytes} bytes, more than this process can allocate") from e
            view, pos = memoryview(buf), 0
            while pos < nbytes:
                chunk = r.read(min(archives.CHUNK, nbytes - pos))
                if not chunk:
                    raise EOFError("the member's data ends early")
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            if raw.read(1):  # reaching the end is what makes zipfile check the CRC-32
                raise fail(f"member {name!r} holds more data than its header declares")
    except WeightsError:
        raise
    except (*archives.ZIP_ERRORS, SyntaxError, RecursionError, MemoryError, TypeError) as e:
        problem = "bad CRC-32: damaged data" if "CRC" in str(e) else str(e) or type(e).__name__
        raise fail(f"member {name!r} cannot be read ({problem})") from e
    array = buf.view(dtype).reshape(shape, order="F" if fortran else "C")
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))



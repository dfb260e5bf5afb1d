"""The weight file format and its atomic writer.

A weight file is NumPy's ``.npz``: a zip archive of ``.npy`` arrays, never pickled.

* ``__meta__.npy``: ``uint8``, 1-D, UTF-8 JSON ``{"format": "rnn_xframework.weights",
  "version": 1, "structure": "cell" | "stack" | "rnn" | "bidirectional", "cells": [{"kind", "units", "use_bias",
  "names", "shapes", "dtype"}, ...]}``, one record per cell in layer order.
* ``cells.{i}.{name}.npy``: cell ``i``'s canonical weight ``name`` (``kernel``,
  ``recurrent_kernel``, ``bias``), of the recorded shape and dtype (``float32``/``float64``).

:func:`parse_meta` checks a ``__meta__`` record field by field; the rest of reading is
:mod:`rnn_xframework.weightload` (checked, bounded, trusts nothing in the file).

Writing (:func:`save`) goes to a temporary file next to the destination,
``.{name}.rnnxf-tmp-{pid}-{random}`` (so leftovers of a killed process can be found:
:func:`temp_files`), which is flushed, given the destination's mode (or the umask's for a new
file) and renamed over the destination; a symlink destination is written through (its target is
replaced, the link stays). On any failure the temporary file is removed and the destination is
untouched.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnn_xframework import layouts
from rnn_xframework.errors import WeightsError

FORMAT = "rnn_xframework.weights"
FORMAT_VERSION = 1
META = "__meta__"
STRUCTURES = ("cell", "stack", "rnn", "bidirectional")
DTYPES = ("float32", "float64")
TEMP_MARK = ".rnnxf-tmp-"


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def meta_record(cells: Sequence[Any], weight_lists: Sequence[Sequence[np.ndarray]], structure: str) -> dict:
    """The ``__meta__`` record for ``cells`` holding ``weight_lists``."""
    record = []
    for cell, weights in zip(cells, weight_lists, strict=True):
        record.append(
            {
                "kind": layouts.name_of(cell),
                "units": int(cell.units),
                "use_bias": bool(cell.use_bias),
                "names": layouts.of(cell).names(cell.use_bias),
                "shapes": [list(w.shape) for w in weights],
                "dtype": cell.dtype_name,
            }
        )
    return {"format": FORMAT, "version": FORMAT_VERSION, "structure": structure, "cells": record}


def save(path: str | os.PathLike[str], cells: Sequence[Any], structure: str) -> str:
    """Write the built ``cells``' canonical weights to ``path`` (``.npz`` appended if missing).

    Returns the path written (the link's path when ``path`` is a symlink). Raises
    :class:`WeightsError` when the destination is a directory or another non-file; an ``OSError``
    from the disk is raised again naming ``path`` (same subclass and errno), with the temporary
    file removed and the destination unchanged.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    weight_lists = [cell.get_weights() for cell in cells]
    arrays: dict[str, np.ndarray] = {}
    for i, (cell, weights) in enumerate(zip(cells, weight_lists, strict=True)):
        for name, w in zip(layouts.of(cell).names(cell.use_bias), weights, strict=True):
            arrays[f"cells.{i}.{name}"] = np.asarray(w)
    meta = meta_record(cells, weight_lists, structure)
    arrays[META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays), what="save_weights")
    return path


def write_atomic(path: str, write: Any, what: str = "save_weights") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``'s target, then rename it over
    the target. Keeps the target's mode (the umask's for a new file) and writes through
    symlinks. On any failure the temporary file is removed and the target is untouched."""
    target = _resolve(path, what)
    directory, name = os.path.split(os.path.abspath(target))
    mode = None
    try:
        st = os.stat(target)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise WeightsError(f"{what}: {path!r} is a directory; give a file name, e.g. {path + '/model.npz'!r}")
        if not stat.S_ISREG(st.st_mode):
            raise WeightsError(f"{what}: {path!r} exists and is not a regular file; give another name")
        mode = stat.S_IMODE(st.st_mode)
    try:
        fd, tmp = _create_temp(directory, name)
    except OSError as e:
        raise _naming(e, what, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, what, path) from e
        raise
    _fsync_directory(directory)


def _naming(e: OSError, what: str, path: str) -> OSError:
    """``e`` (same ``OSError`` subclass and errno: ``except PermissionError`` still works) naming
    the destination, not the temporary file the disk refused (issue 18)."""
    message = (
        f"{what}: cannot write {path!r}: {e.strerror or e} (nothing was written: the destination is "
        "unchanged and the temporary file removed)"
    )
    return OSError(e.errno, message, path) if e.errno is not None else OSError(message)


def _resolve(path: str, what: str) -> str:
    """The file a write to ``path`` must replace: ``path`` itself, or a symlink's final target."""
    if not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    if os.path.islink(target):
        raise WeightsError(f"{what}: {path!r} is a symlink that does not resolve (a loop?); remove it or fix it")
    return target


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """``.{name}.rnnxf-tmp-{pid}-{hex}`` in ``directory``, created exclusively with mode 0o666
    (the kernel applies the umask, so a new destination gets the mode any new file would)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name[:180]}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory!r}")


def _fsync_directory(directory: str) -> None:
    """Make the rename durable where the platform allows it (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_files(path: str | os.PathLike[str]) -> list[str]:
    """Temporary files that saves to ``path`` left behind (a process killed mid-save):
    ``.{name}.rnnxf-tmp-{pid}-{hex}`` next to the destination. Safe to delete when no save to
    ``path`` is running."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    directory, name = os.path.split(os.path.abspath(_resolve(path, "temp_files")))
    return sorted(glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name[:180])}{TEMP_MARK}*")))


# --- the record, checked ---------------------------------------------------------------------
def parse_meta(raw: bytes, fail: Callable[[str], Exception]) -> list[dict[str, Any]]:
    """The cell records of a ``__meta__`` payload, every field checked; ``fail(problem)`` builds
    the exception raised for a bad one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"its {META} record is not UTF-8 text ({e})") from e
    try:
        meta = json.loads(text)
    except RecursionError as e:
        raise fail(f"its {META} record is JSON nested too deeply") from e
    except ValueError as e:  # JSONDecodeError, and ints past the digit limit
        raise fail(f"its {META} record is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise fail(f"its {META} record is not a JSON object but {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise fail(
            f"has format {short(meta.get('format'))}, expected {FORMAT!r}: "
            "not an rnn_xframework weight file, or a damaged one"
        )
    version = meta.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise fail(
            f"has format version {short(version)}; this rnn_xframework reads version {FORMAT_VERSION} "
            "(a file from a newer rnn_xframework? upgrade it)"
        )
    if meta.get("structure") not in STRUCTURES:
        raise fail(f"its {META} structure is {short(meta.get('structure'))}, expected one of {list(STRUCTURES)}")
    cells = meta.get("cells")
    if not isinstance(cells, list) or not cells:
        raise fail(f"its {META} record needs a non-empty list 'cells', got {short(cells)}")
    return [_parse_cell(i, r, fail) for i, r in enumerate(cells)]


def _is_int(x: Any, low: int = 0, high: int = 2**62) -> bool:
    return type(x) is int and low <= x <= high


def _parse_cell(i: int, r: Any, fail: Callable[[str], Exception]) -> dict[str, Any]:
    where = f"its {META} cells[{i}]"
    if not isinstance(r, dict):
        raise fail(f"{where} is not a JSON object but {short(r)}")
    kind = r.get("kind")
    if not isinstance(kind, str):
        raise fail(f"{where} needs a text 'kind' (a cell type), got {short(kind)}")
    if kind not in layouts.LAYOUTS:
        raise fail(f"{where} has kind {short(kind)}, not a known cell type ({sorted(layouts.LAYOUTS)})")
    units = r.get("units")
    if not _is_int(units, 1, 2**31):
        raise fail(f"{where} needs 'units', a positive integer, got {short(units)}")
    use_bias = r.get("use_bias")
    if type(use_bias) is not bool:
        raise fail(f"{where} needs 'use_bias', true or false, got {short(use_bias)}")
    names = layouts.get(kind).names(use_bias)
    if r.get("names") != names:
        raise fail(f"{where} has weight names {short(r.get('names'))}, expected {names}")
    shapes = r.get("shapes")
    if (
        not isinstance(shapes, list)
        or len(shapes) != len(names)
        or not all(isinstance(s, list) and len(s) <= 4 and all(_is_int(d) for d in s) for s in shapes)
    ):
        raise fail(f"{where} needs 'shapes', a list of non-negative integers per weight {names}, got {short(shapes)}")
    dtype = r.get("dtype")
    if dtype not in DTYPES:
        raise fail(f"{where} has dtype {short(dtype)}, expected one of {list(DTYPES)}")
    return {"kind": kind, "units": units, "use_bias": use_bias, "names": names, "shapes": shapes, "dtype": dtype}

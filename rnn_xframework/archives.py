"""The checks of a zip archive that every reader of the package makes before it trusts one: a
regular file (a named pipe is refused, never waited on), members neither encrypted nor
compressed oddly, directory sizes that the file can hold, and a ``.keras`` model archive checked
whole (:func:`check_keras_archive`) before Keras reads it. Weight files
(:mod:`rnn_xframework.weightload`) and ``.keras`` files (``xf.from_keras(path)``) share them.
Each check raises ``fail(problem)``: the caller's typed error, naming its file."""

from __future__ import annotations

import json
import os
import stat
import struct
import zipfile
import zlib
from typing import Any

from rnn_xframework.weightfile import short

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
DEFLATE_MAX_RATIO = 1032
"""Deflate cannot expand data more than about 1032:1; a member declaring more is refused."""
CHUNK = 1 << 20
"""Bytes read at a time from a member (its declared size caps the total)."""

# Errors that zipfile, zlib and struct raise on damaged archives; turned into WeightsError.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    UnicodeDecodeError,
    NotImplementedError,
    RuntimeError,
    IndexError,
    KeyError,
)


def open_regular(name: str, fail: Any, what: str) -> Any:
    """``name`` opened for binary reading, if it is a regular file: a named pipe, a directory or a
    device raises ``fail(...)`` at once (opened non-blocking, so a pipe never waits for a
    writer; issue 18). ``FileNotFoundError`` propagates; other ``OSError``s become ``fail``."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise fail(f"cannot be read ({e})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise fail(f"is {kind}; {what}: refused unread")
    return open(fd, "rb")


def check_flags_and_method(info: zipfile.ZipInfo, fail: Any, never_encrypted: str, methods: str) -> None:
    """Refuse an encrypted member, or one compressed other than stored or deflated (the zip
    checks that weight files and ``.keras`` archives share; the texts say which file it is)."""
    if info.flag_bits & 0x1:
        raise fail(f"member {info.filename!r} is encrypted; {never_encrypted}")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise fail(f"member {info.filename!r} uses zip compression method {info.compress_type}; {methods}")


def check_sizes(info: zipfile.ZipInfo, size: int, fail: Any) -> None:
    """Refuse a member whose directory sizes cannot be true in a file of ``size`` bytes."""
    name = info.filename
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise fail(f"member {name!r} is stored, yet its sizes differ ({info.compress_size} != {info.file_size})")
    if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 64:
        raise fail(f"member {name!r} declares {info.file_size} bytes that {info.compress_size} compressed cannot hold")
    if info.header_offset + info.compress_size > size:
        raise fail(f"member {name!r} extends past the end of the file ({size} bytes): truncated?")


# --- .keras archives (xf.from_keras(path)): checked before Keras reads them -----------------------
KERAS_CONFIG_MAX_BYTES = 16 << 20
"""Largest ``config.json`` of a ``.keras`` file read (a model's configuration is kilobytes)."""
KERAS_MAX_EXPANSION = 16
"""A ``.keras`` file's members may declare at most this many times the file's size (plus
:data:`KERAS_CONFIG_MAX_BYTES`) in all: Keras stores them uncompressed; a file declaring more is
a zip bomb (load a trusted one with ``keras.saving.load_model`` yourself, then pass the model)."""


def check_keras_archive(path: str, fail: Any) -> None:
    """Refuse, with ``fail(problem)``, a ``.keras`` file that Keras should not be given: not a
    regular file (a pipe is never waited on), empty, not a readable zip, members that are
    encrypted, compressed oddly, lie about their sizes, extend past the file or fail their CRC-32,
    a missing or oversized ``config.json``, or one that is not a JSON object naming a class.
    Everything is read with the declared sizes as caps, so memory stays bounded."""
    with open_regular(path, fail, "a .keras model file is a regular file") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise fail("is empty (0 bytes): not a .keras model file; was it saved completely?")
        head = f.read(8)
        f.seek(0)
        if head == HDF5_SIGNATURE:
            raise fail("is an HDF5 file (a legacy Keras .h5 model?), not a .keras zip archive; rename it to .h5")
        try:
            archive = zipfile.ZipFile(f)
        except ZIP_ERRORS as e:
            raise fail(f"is not a .keras model file: not a readable zip archive ({e})") from e
        with archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise fail("holds a member twice: a damaged or tampered file")
            total = 0
            for info in infos:
                _check_keras_entry(info, size, fail)
                total += info.file_size
            if total > KERAS_MAX_EXPANSION * size + KERAS_CONFIG_MAX_BYTES:
                raise fail(
                    f"declares {total} bytes in its members, far more than its {size} bytes can hold "
                    "(a zip bomb?): refused unread"
                )
            if "config.json" not in names:
                raise fail(f"has no config.json, so it is not a .keras model file (it holds {short(names, 200)})")
            for info in infos:  # every CRC-32, before Keras reads anything
                try:
                    with archive.open(info) as raw:
                        while raw.read(CHUNK):
                            pass
                except ZIP_ERRORS as e:
                    problem = "bad CRC-32: damaged data" if "CRC" in str(e) else str(e) or type(e).__name__
                    raise fail(f"member {info.filename!r} cannot be read ({problem})") from e
            try:
                config = json.loads(archive.read("config.json"))
            except (*ZIP_ERRORS, RecursionError) as e:
                raise fail(f"has a config.json that is not valid JSON ({short(str(e), 200)})") from e
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise fail(f"has a config.json that is not a Keras object's configuration: {short(config)}")


def _check_keras_entry(info: zipfile.ZipInfo, size: int, fail: Any) -> None:
    check_flags_and_method(info, fail, "Keras never writes encrypted members", "only stored and deflated")
    check_sizes(info, size, fail)
    if info.filename == "config.json" and info.file_size > KERAS_CONFIG_MAX_BYTES:
        raise fail(f"has a config.json of {info.file_size} bytes, more than {KERAS_CONFIG_MAX_BYTES}: refused unread")

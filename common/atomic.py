"""Atomic file writes: a crash at any moment leaves either the old file or the complete new one.

new temp file in the same directory -> write -> fsync -> rename over the target -> fsync the directory.
Every file the project writes that a later run reads (checkpoints, configs, genotypes, scores, reports,
metadata) goes through here. The temp file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a
random name, so it never follows a planted symlink and never writes into a file that already exists.

:func:`parse_json` is the one strict reader of JSON text that came from outside.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_path = _create_temp_sibling(path)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _create_temp_sibling(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing (mode 0666 less the umask).

    O_EXCL makes the creation fail rather than reuse an existing file or follow a symlink planted under
    that name; a fresh random name is tried then (a clash is astronomically rare).
    """
    for _ in range(100):
        temp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp_path, _TEMP_FLAGS, 0o666), temp_path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (strict JSON), recursively; dict keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json_atomically(path: str | os.PathLike, record: Any, indent: int = 2) -> Path:
    """``record`` as strict JSON (NaN -> null) written atomically; returns the path."""
    return write_atomically(path, (json.dumps(json_safe(record), indent=indent) + "\n").encode("utf-8"))


def parse_json(text: str | bytes) -> Any:
    """``json.loads(text)`` where every failure is a ValueError with a one-line reason.

    Besides malformed JSON (json.JSONDecodeError, itself a ValueError), text from outside can nest deeper
    than Python's recursion limit (RecursionError) or hold an integer longer than Python converts (a
    ValueError); both come out as ValueError here, so callers catch one type and wrap it in their error.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason})") from None

"""Atomic file writes: a crash at any moment leaves either the old file or the complete new one.

temp file in the same directory -> write -> fsync -> rename over the target -> fsync the directory.
Every file the project writes that a later run reads (checkpoints, configs, genotypes, scores, reports,
metadata) goes through here.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


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
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp_path, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


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

"""A restricted unpickler for the CIFAR python batches: dicts, lists, bytes and numpy arrays, nothing else.

A pickle can name any importable callable and make the unpickler call it (``os.system`` included). This
unpickler resolves only the few numpy functions that rebuild an ndarray; any other global is refused
before anything is called, so a malicious batch raises :class:`data.errors.DataError` and runs no code.
"""
from __future__ import annotations

import io
import pickle

from data.errors import DataError

# (module, name) pairs a pickled numpy array refers to, across numpy 1.x and 2.x module names.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 pickles ``bytes`` at protocol 2: ``_codecs.encode(text, "latin1")``; no other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"refusing _codecs.encode with codec {encoding!r} in a data batch")
    return text.encode("latin1")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(f"refusing to unpickle {module}.{name}: only dicts, lists, bytes and numpy arrays "
                            "are allowed in a data batch")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise DataError("refusing a pickle with persistent ids in a data batch")


def load_restricted(payload: bytes, source: str) -> object:
    """Unpickle ``payload`` (Python 2 pickles: byte-string keys) admitting only plain data and numpy arrays."""
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{source}: {error}") from None
    except Exception as error:  # any malformed pickle: truncated, wrong opcodes, bad array state
        raise DataError(f"{source}: not a readable data batch ({type(error).__name__}: {error})") from None

"""A restricted unpickler for the CIFAR python batches: dicts, lists, bytes and plain numeric numpy arrays.

A pickle can name any importable callable and make the unpickler call it (``os.system`` included), and a
pickled numpy dtype can describe fields that lie outside the array's memory. So nothing numpy offers is
called while unpickling: :mod:`common.restricted_pickle` maps the few globals a pickled ndarray refers to
(``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``, ``_codecs.encode``, ``bytes``) to stand-ins that only
record their arguments and state. After loading, each recorded array is checked before its data is
touched: a plain numeric dtype (bool, int, uint or float; no fields, no sub-array, no metadata, the
itemsize of its base type), a shape of non-negative integers, and exactly ``prod(shape) * itemsize``
bytes of data. Only then is it made, as a read-only view of those bytes (``np.frombuffer``). Anything
else raises :class:`data.errors.DataError` and runs no code.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from data.errors import DataError
from common.errors import short_repr
from common.restricted_pickle import PickleMalformed, PickleRefused, Record
from common.restricted_pickle import load_restricted as _load_restricted

MAX_DEPTH = 32  # a data batch is a dict of lists and arrays: a few levels deep
_PLAIN_DTYPE = re.compile(r"(b1|[iu][1248]|f[248])\Z")  # kind + itemsize: bool, ints, uints, floats
_BYTE_ORDERS = ("<", ">", "|", "=")


class _Dtype(Record):
    """``numpy.dtype(spec, align, copy)`` and its BUILD state, kept until checked."""

    def to_numpy(self, where: str) -> np.dtype:
        spec = self.args[0] if self.args else None
        if isinstance(spec, bytes):
            spec = spec.decode("latin-1")
        if not isinstance(spec, str) or not _PLAIN_DTYPE.match(spec):
            raise DataError(f"{where}: refusing an array of dtype {short_repr(spec)}: only plain numeric dtypes")
        dtype = np.dtype(spec)
        state = self.state
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise DataError(f"{where}: the dtype {spec} has an unknown state {short_repr(state)}")
        order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        subarray, names, fields, itemsize, alignment, flags = state[2:8]
        metadata = state[8] if len(state) == 9 else None
        if any(value is not None for value in (subarray, names, fields, metadata)) or flags != 0:
            raise DataError(f"{where}: refusing a dtype with fields, a sub-array or metadata")
        if itemsize not in (-1, dtype.itemsize) or alignment not in (-1, dtype.alignment):
            raise DataError(f"{where}: the dtype {spec} claims itemsize {short_repr(itemsize)}, "
                            f"not its base type's {dtype.itemsize}")
        if order not in _BYTE_ORDERS:
            raise DataError(f"{where}: the dtype {spec} has byte order {short_repr(order)}")
        return dtype.newbyteorder(order) if order in "<>" else dtype


class _Array(Record):
    """``_reconstruct(ndarray, shape, typecode)`` + BUILD ``(version, shape, dtype, fortran, data)``."""

    def to_numpy(self, where: str) -> np.ndarray:
        state = self.state
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, fortran, data); older numpy wrote no version
        if not (isinstance(state, tuple) and len(state) == 4):
            raise DataError(f"{where}: an array without a readable state")
        shape, dtype_record, fortran, data = state
        if not isinstance(dtype_record, _Dtype):
            raise DataError(f"{where}: an array whose dtype is a {type(dtype_record).__name__}")
        dtype = dtype_record.to_numpy(where)
        if not (isinstance(shape, tuple) and all(type(size) is int and size >= 0 for size in shape)):
            raise DataError(f"{where}: an array with shape {short_repr(shape)}")
        if not isinstance(data, (bytes, bytearray, memoryview)) or fortran not in (True, False, 0, 1):
            raise DataError(f"{where}: an array whose data is a {type(data).__name__}, not raw bytes")
        size = memoryview(data).nbytes
        if math.prod(shape) * dtype.itemsize != size:  # Python ints: no overflow
            raise DataError(f"{where}: an array of shape {short_repr(shape)} and dtype {dtype} holds {size} "
                            "bytes of data, which does not match")
        return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


_NDARRAY = object()  # stands for numpy.ndarray, which a pickle only passes as an argument


def _reconstruct(cls: Any, shape: Any = None, typecode: Any = None) -> _Array:
    if cls is not _NDARRAY:
        raise PickleRefused("_reconstruct of something other than an ndarray")
    return _Array()


def _frombuffer(data: Any, dtype: Any, shape: Any, order: Any = "C") -> _Array:
    """``numpy._core.numeric._frombuffer`` (protocol 5 pickles): recorded as the same state as above."""
    array = _Array()
    array.state = (shape, dtype, order in ("F", b"F"), data)
    return array


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """How Python 3 pickles ``bytes`` at protocol 2: ``_codecs.encode(text, "latin1")``; no other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise PickleRefused(f"_codecs.encode with codec {short_repr(encoding)}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how Python 3 pickles an empty byte string at protocol 2; nothing else."""
    if args:
        raise PickleRefused("bytes(...) with arguments")
    return b""


# (module, name) pairs a pickled numpy array refers to, across numpy 1.x and 2.x module names.
_ADMITTED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
_PLAIN = (type(None), bool, int, float, str, bytes, bytearray)


def _materialise(value: Any, where: str, done: dict[int, Any], depth: int = 0) -> Any:
    """``value`` with every recorded array checked and made; anything but plain data is refused."""
    if isinstance(value, _PLAIN):
        return value
    if id(value) in done:
        if done[id(value)] is None:
            raise DataError(f"{where}: the pickle holds a container that contains itself")
        return done[id(value)]
    if depth > MAX_DEPTH:
        raise DataError(f"{where}: nested deeper than {MAX_DEPTH} levels, not a data batch")
    done[id(value)] = None  # in progress
    if isinstance(value, _Array):
        result = value.to_numpy(where)
    elif isinstance(value, list):
        value[:] = [_materialise(item, where, done, depth + 1) for item in value]
        result = value
    elif isinstance(value, tuple):
        result = tuple(_materialise(item, where, done, depth + 1) for item in value)
    elif isinstance(value, dict):
        if not all(isinstance(key, (str, bytes, int)) for key in value):
            raise DataError(f"{where}: a dict with keys other than strings and integers")
        for key in value:
            value[key] = _materialise(value[key], where, done, depth + 1)
        result = value
    else:
        name = "a stand-in of the unpickler" if isinstance(value, Record) or callable(value) or \
            value is _NDARRAY else f"a {type(value).__name__}"
        raise DataError(f"{where}: the pickle holds {name}, not plain data")
    done[id(value)] = result
    return result


def load_restricted(payload: bytes, source: str) -> object:
    """Unpickle ``payload`` (Python 2 pickles: byte-string keys) admitting only plain data and numpy arrays
    of plain numeric dtypes; ``source`` names the file in error messages."""
    try:
        loaded = _load_restricted(payload, _ADMITTED, encoding="bytes")
    except PickleRefused as error:
        raise DataError(f"{source}: refusing to unpickle ({error}): only dicts, lists, bytes and numpy arrays are "
                        "allowed in a data batch") from None
    except PickleMalformed as error:
        raise DataError(f"{source}: not a readable data batch ({error})") from None
    return _materialise(loaded, source, {})

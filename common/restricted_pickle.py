"""Restricted unpickling: the one guard every pickle read from outside goes through.

A pickle is a small program: GLOBAL names any importable object, REDUCE calls it, BUILD sets state on
whatever is on the stack, and length fields say how many bytes to allocate. :func:`load_restricted` runs
such a program under four rules, so a hostile file can neither run code nor change this process:

- a global resolves only through the caller's ``admitted`` table, to a stand-in the caller wrote (never to
  the real class or function); anything else is refused before it is called;
- BUILD only hands a state to an instance of :class:`Record`, which keeps it for the caller to check. It
  never sets attributes on a stand-in function or class (that would change them process-wide, e.g. a
  function's ``__defaults__``), and NEWOBJ only makes Records;
- every length field (BINBYTES8, BINUNICODE8, BYTEARRAY8, FRAME, LONG4, ...) is checked against the bytes
  left in the payload before anything is allocated, so a huge length is one clear error, not an
  OverflowError or MemoryError;
- what the stand-ins return counts against a budget of the payload's size plus 1 MiB, so a small file
  cannot make them copy one large string many times.

Extension codes, persistent ids and out-of-band buffers are refused. It is the pure-Python unpickler
(``pickle._Unpickler``) with those opcodes replaced; the files it reads hold a few large byte strings, so
it reads them about as fast as the C one. Only the standard library is imported (a leaf module).
"""
from __future__ import annotations

import io
import pickle
from struct import unpack
from typing import Any, Mapping

BUDGET_SLACK = 1 << 20


class PickleRefused(ValueError):
    """The pickle asked for something the caller did not admit (a global, BUILD on a non-record, ...)."""


class PickleMalformed(ValueError):
    """The pickle is truncated, inconsistent, or not a pickle at all."""


class Record:
    """A stand-in for an object the pickle builds: its constructor arguments and the state BUILD gave it.

    Callers subclass it (one class per kind of object they admit) and check ``args`` and ``state`` after
    loading. The class attributes are defaults only: BUILD reaches instances, never the class.
    """

    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Payload(io.BytesIO):
    """The pickle's bytes; a read of more than is left is refused (a length field that lies)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self._size = len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > self._size - self.tell():
            raise PickleMalformed(f"a length field asks for {size} bytes where {self._size - self.tell()} are left")
        return super().read(size)


class _RestrictedUnpickler(pickle._Unpickler):
    def __init__(self, payload: bytes, admitted: Mapping[tuple[str, str], Any], encoding: str):
        super().__init__(_Payload(payload), encoding=encoding)
        self._admitted = admitted
        self._budget = len(payload) + BUDGET_SLACK

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._admitted[(module, name)]
        except (KeyError, TypeError):
            raise PickleRefused(f"refusing global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("refusing a persistent id")

    def _charge(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, str)):
            self._budget -= len(value)
            if self._budget < 0:
                raise PickleRefused("the pickle makes more data than the file holds")
        return value

    # ---- opcodes replaced ----------------------------------------------------------------------------
    def _load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, Record):
            raise PickleRefused(f"refusing to set the state of a {type(target).__name__}")
        target.__setstate__(state)

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise PickleMalformed("REDUCE arguments are not a tuple")
        self.stack[-1] = self._charge(self.stack[-1](*args))

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ
        self.append(self._charge(klass(*args)))

    def _new_record(self, cls: Any, args: Any, kwargs: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Record)):
            raise PickleRefused(f"refusing to create a {getattr(cls, '__name__', type(cls).__name__)}")
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise PickleMalformed("NEWOBJ arguments are not a tuple")
        self.append(cls(*args, **kwargs))

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        self._new_record(self.stack.pop(), args, {})

    def _load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self._new_record(self.stack.pop(), args, kwargs)

    def _load_bytearray8(self) -> None:
        size, = unpack("<Q", self.read(8))
        self.append(bytearray(self.read(size)))  # read first: the payload must hold the bytes

    def _refuse(self) -> None:
        raise PickleRefused("refusing extension codes and out-of-band buffers")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEXT_BUFFER):
        dispatch[_opcode[0]] = _refuse
    del _opcode


def load_restricted(payload: bytes, admitted: Mapping[tuple[str, str], Any], encoding: str = "ASCII") -> Any:
    """Unpickle ``payload`` resolving globals only through ``admitted`` ((module, name) -> stand-in).

    A stand-in is a :class:`Record` subclass (made by NEWOBJ, INST/OBJ or a call, given its state by BUILD),
    a function (called by REDUCE with the pickle's arguments: it must check them), or an inert token (e.g.
    for a class that is only passed as an argument). ``encoding``: how Python 2 byte strings are read
    ("bytes" keeps them as bytes).

    Raises :class:`PickleRefused` for anything not admitted and :class:`PickleMalformed` for anything else
    that goes wrong (truncated, inconsistent, not a pickle): both are ValueErrors with a one-line message.
    """
    try:
        return _RestrictedUnpickler(bytes(payload), admitted, encoding).load()
    except (PickleRefused, PickleMalformed):
        raise
    except pickle.UnpicklingError as error:
        raise PickleMalformed(str(error) or "not a pickle") from None
    except EOFError:
        raise PickleMalformed("truncated (ended before its STOP opcode)") from None
    except Exception as error:  # only stand-ins ran, so anything else is a malformed pickle
        raise PickleMalformed(f"{type(error).__name__}: {error}") from None

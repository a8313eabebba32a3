"""Bad user input and how every CLI reports it.

Every module raises a subclass of :class:`UserInputError` for input a user can fix (a malformed genotype, a
missing data file, an impossible config). CLIs wrap their ``main`` with :func:`cli_entry`, which turns such
an error into ONE line on stderr and exit status 2, never a traceback. So does an ``OSError`` (a file or
folder the CLI cannot read or write: an output path that is a file, a folder under /proc, a name too long
for the file system, a full disk): the path and the reason, in one line. Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn, TypeVar

T = TypeVar("T")


class UserInputError(Exception):
    """Input the user can fix. ``str(error)`` is the whole message: one line, saying what and where."""


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI's ``main``: a :class:`UserInputError` or an ``OSError`` becomes ``error: <message>``
    on stderr (one line), exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as error:
            message = str(error)
        except OSError as error:
            message = describe_os_error(error)
        message = " ".join(message.split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (an unknown flag, ``--npop abc``) are one line and exit status 2 too,
    like every other bad input, instead of the usage block; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {' '.join(message.split())} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def describe_os_error(error: OSError) -> str:
    """``cannot use PATH: REASON`` (both paths of a rename), or the reason alone when no path is known."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [str(p) for p in (error.filename, getattr(error, "filename2", None)) if p is not None]
    return f"cannot use {' -> '.join(paths)}: {reason}" if paths else reason


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote what the user gave."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # e.g. an integer too long to print, a self-containing list
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(UserInputError):
    """An unknown key, a value of the wrong type or an impossible value in a config.

    ``ConfigError("must be positive (got 0)", key="search.npop")`` reads
    ``config key 'search.npop' must be positive (got 0)``; without ``key`` the message stands alone.
    A nested dataclass's ``validate`` names its own field; the loader prefixes the parent keys.
    """

    def __init__(self, message: str, key: str | None = None):
        self.detail = message
        self.key = key
        super().__init__(f"config key '{key}' {message}" if key else message)

    def with_prefix(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix.`` put before its key (used for nested configs)."""
        if self.key is None or not prefix:
            return self
        return type(self)(self.detail, key=f"{prefix}.{self.key}")


class LaunchError(UserInputError):
    """The job cannot start as asked: e.g. CUDA requested where there is none, or a bad torchrun environment."""

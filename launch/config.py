"""Typed configs: dataclasses filled from a YAML file, then from ``--set KEY=VALUE`` overrides.

A config is a (possibly nested) dataclass with defaults. Values are resolved in this order:
dataclass defaults <- YAML file (``--config FILE``) <- overrides (``--set search.npop=4``, repeatable).
Override values are strings parsed with ``yaml.safe_load`` (so ``4`` is an int, ``[1, 2]`` a list,
``null`` is None) and then type-checked like the YAML values.

Field types understood: bool, int, float (an int is accepted), str, pathlib.Path, ``X | None`` /
``Optional[X]``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``, ``Literal[...]`` and
nested dataclasses. Anything wrong raises :class:`ConfigError` naming the dotted key: an unknown key
(with a "did you mean" suggestion), a wrong type, a missing required key, or an impossible value
found by a dataclass's own ``validate(self)`` method (called for every nested config, innermost first).

Checked for every config, before its ``validate()``:

- a float is finite (no ``.inf``, ``nan``), an int fits in 64 bits, a string or path holds no NUL;
- keys that mean the same in every config (:data:`SHARED_RULES`), wherever they appear: ``seed`` in
  0..2**32-1 (the range numpy's seeding takes; torch takes more), ``momentum`` in [0, 1), ``save`` not empty;
- the YAML itself: at most :data:`MAX_YAML_NODES` values once aliases are expanded, and no value that
  contains itself (a YAML bomb fails in one line, not after minutes).

Example::

    @dataclass
    class SearchConfig:
        npop: int = 4
        def validate(self):
            if self.npop < 1:
                raise ConfigError(f"must be at least 1 (got {self.npop})", key="npop")

    @dataclass
    class Config:
        seed: int = 0
        search: SearchConfig = field(default_factory=SearchConfig)

    cfg = load_config(Config, "configs/quickstart.yaml", ["search.npop=8"])

Why not OmegaConf structured configs (issue 17, measured): OmegaConf 2.3 refuses ``Literal`` fields (10 here),
reads ``resume=1`` as true, a list of ops ``[x, 3]`` as strings, returns tuples as lists without checking their
length, and its type errors read "value 'four' of type 'str' could not be converted to Integer". A loader on
it that keeps these checks and messages saved about 200 of these lines and failed 10 of the config tests.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import os
import pathlib
import types
import typing
from typing import Any, Literal, TypeVar, Union

import yaml

from common.atomic import write_atomically
from common.errors import ConfigError, short_repr

__all__ = [
    "ConfigError",
    "load_config",
    "config_to_dict",
    "save_config",
    "add_override_argument",
    "parse_overrides",
]

C = TypeVar("C")

SEED_LIMIT = 2**32  # seeds are 0..2**32-1: numpy's legacy seeding takes no more (torch takes up to 2**64-1)
INT_LIMIT = 2**63  # ints must fit in int64 (torch, numpy): larger ones only overflow later
MAX_YAML_NODES = 100_000
MAX_NAME_BYTES = 255  # a folder name longer than this fails with ENAMETOOLONG on common file systems
#: Keys renamed so that one thing has one name in every config (old name -> new name); an old name is
#: refused with the new one as the suggestion, in whichever section has the new one.
RENAMED_KEYS = {"lr": "learning_rate", "min_lr": "learning_rate_min", "cpu_threads": "threads"}


def _split_overrides(items: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, separator, raw_value = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"override {item!r} must look like KEY=VALUE (e.g. search.npop=4)")
        overrides[key] = raw_value
    return overrides


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["a.b=1", "name=x"]`` -> ``{"a.b": 1, "name": "x"}``, each value parsed by ``yaml.safe_load``.

    A value that is not valid YAML stays the raw string. Raises :class:`ConfigError` for an item
    without ``=`` or with an empty key.
    """
    return {key: _parse_scalar_text(raw).parsed for key, raw in _split_overrides(items).items()}


class _RawText(str):
    """An override value as typed, kept so a ``str`` field given ``--set name=123`` gets ``"123"``."""

    parsed: object


def _parse_scalar_text(raw_value: str) -> object:
    text = _RawText(raw_value)
    try:
        text.parsed = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an integer with over 4300 digits
        text.parsed = raw_value
    _check_tree_size(text.parsed, "an override")
    return text


def _read_yaml(yaml_path: str | os.PathLike) -> dict:
    path = pathlib.Path(yaml_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as error:  # an integer with over 4300 digits; nesting too deep
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ConfigError(f"config file '{path}' is not usable YAML: {reason}") from None
    _check_tree_size(data, f"config file '{path}'")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def _check_tree_size(tree: object, what: str) -> None:
    """Refuse YAML that expands (through aliases) to more than MAX_YAML_NODES values, or contains itself."""
    count, stack, path_ids = 0, [(tree, False)], set()
    while stack:
        node, leaving = stack.pop()
        if leaving:
            path_ids.discard(id(node))
            continue
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{what} holds more than {MAX_YAML_NODES} values (counting each alias use)")
        if isinstance(node, (dict, list, tuple, set)):
            if id(node) in path_ids:
                raise ConfigError(f"{what} holds a value that contains itself (a recursive alias)")
            path_ids.add(id(node))
            stack.append((node, True))
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
            stack.extend((item, False) for item in items)


def _set_dotted(tree: dict, dotted_key: str, value: object) -> None:
    parts = dotted_key.split(".")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None:
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"is not a section, so '{dotted_key}' cannot be set", key=prefix)
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _section_type(expected: Any) -> Any:
    """The dataclass (or dict) type behind ``expected``, unwrapping ``X | None``; None for a leaf."""
    if typing.get_origin(expected) in (Union, types.UnionType):
        sections = [_section_type(arg) for arg in typing.get_args(expected) if arg is not type(None)]
        sections = [section for section in sections if section is not None]
        return sections[0] if len(sections) == 1 else None
    if dataclasses.is_dataclass(expected) or typing.get_origin(expected) is dict or expected is dict:
        return expected
    return None


def _check_dotted_key(cls: type, dotted_key: str) -> None:
    """Refuse ``seed.x=1`` when ``seed`` is not a section (unknown names are reported when building)."""
    parts = dotted_key.split(".")
    current: Any = cls
    for depth, part in enumerate(parts[:-1]):
        if not dataclasses.is_dataclass(current):
            return  # inside a dict section: anything goes
        hints = typing.get_type_hints(current)
        if part not in hints:
            return
        section = _section_type(hints[part])
        if section is None:
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"is not a section, so '{dotted_key}' cannot be set", key=prefix)
        current = section


def _describe(value: object) -> str:
    if isinstance(value, _RawText):
        value = value.parsed
    if isinstance(value, str):
        return f"the string {short_repr(value)}"
    if value is None:
        return "null"
    return f"{type(value).__name__} {short_repr(value)}"


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(expected))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return "null"
    if dataclasses.is_dataclass(expected):
        return "a mapping (section)"
    if origin is not None:
        return str(expected).replace("typing.", "")
    return getattr(expected, "__name__", str(expected))


class _ValueRefused(ConfigError):
    """A value of the right type that no config may hold (inf, nan, beyond int64, a NUL in a string)."""


def _coerce(value: object, expected: Any, key: str) -> object:
    """``value`` checked (and gently converted) to the field type ``expected``; ConfigError otherwise."""
    raw_text = value if isinstance(value, _RawText) else None
    if raw_text is not None:
        value = raw_text.parsed

    def wrong() -> ConfigError:
        return ConfigError(f"must be {_type_name(expected)}, got {_describe(value)}", key=key)

    if expected is Any:
        return value
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [arg for arg in args if arg is not type(None)]
        # A raw override keeps its text for str-like members.
        candidate = raw_text if raw_text is not None else value
        for member in members:
            try:
                return _coerce(candidate, member, key)
            except _ValueRefused:
                raise  # the right type but an impossible value: say so, not "must be X or Y"
            except ConfigError:
                continue
        raise wrong()
    if origin is Literal:
        if raw_text is not None and str(raw_text) in args:
            return str(raw_text)
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise ConfigError(f"must be {_type_name(expected)}, got {_describe(value)}", key=key)
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise wrong()
        return _build(expected, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        item_type = args[0] if args else Any
        return [_coerce(item, item_type, f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], f"{key}[{index}]") for index, item in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"must hold exactly {len(args)} values, got {len(value)}", key=key)
        item_types = args or (Any,) * len(value)
        return tuple(_coerce(item, item_type, f"{key}[{index}]") for index, (item, item_type)
                     in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        key_type, value_type = args if args else (Any, Any)
        return {_coerce(item_key, key_type, key): _coerce(item, value_type, f"{key}.{item_key}")
                for item_key, item in value.items()}
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT <= value < INT_LIMIT:
                raise _ValueRefused(f"must fit in 64 bits, got {_describe(value)}", key=key)
            return value
        raise wrong()
    if expected is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise wrong()
        try:
            number = float(number)
        except OverflowError:  # an int beyond float's range
            number = math.inf
        if not math.isfinite(number):
            raise _ValueRefused(f"must be a finite number, got {_describe(value)}", key=key)
        return number
    if expected is str or expected in (pathlib.Path, pathlib.PurePath):
        if raw_text is not None:
            text = str(raw_text)
        elif isinstance(value, str) or (expected is not str and isinstance(value, pathlib.PurePath)):
            text = str(value)
        else:
            raise wrong()
        if "\0" in text:
            raise _ValueRefused("must not hold a NUL character", key=key)
        return text if expected is str else pathlib.Path(text)
    if isinstance(expected, type):
        if isinstance(value, expected):
            return value
        raise wrong()
    raise TypeError(f"config field '{key}' has a type the loader does not understand: {expected!r}")


def _field_default(field: dataclasses.Field) -> object | None:
    """The default value of a dataclass field (a fresh one from its factory), or None when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _build(cls: type[C], values: dict, prefix: str, defaults: object | None = None) -> C:
    """An instance of dataclass ``cls`` from the mapping ``values``; missing keys keep their defaults.

    The defaults are ``defaults``' values when given (the parent's default for this section), else
    ``cls``'s own: ``--set data.batch_size=8`` changes one key of EvolutionConfig's CIFAR-10 data section
    and leaves its other keys as that section's default has them, not as a bare DataConfig() would.
    """
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    for name in values:
        if name not in fields:
            full_key = f"{prefix}.{name}" if prefix else str(name)
            if RENAMED_KEYS.get(name) in fields:
                new_key = f"{prefix}.{RENAMED_KEYS[name]}" if prefix else RENAMED_KEYS[name]
                raise ConfigError(f"is an old name (did you mean '{new_key}'?)", key=full_key)
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            known = "" if hint else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"is unknown{hint}{known}", key=full_key)
    kwargs = {}
    for name, field in fields.items():
        full_key = f"{prefix}.{name}" if prefix else name
        expected = hints[name]
        if name in values and dataclasses.is_dataclass(expected) and isinstance(values[name], dict):
            section_default = getattr(defaults, name) if defaults is not None else _field_default(field)
            kwargs[name] = _build(expected, values[name], full_key, section_default)
        elif name in values:
            kwargs[name] = _coerce(values[name], expected, full_key)
        elif defaults is not None:
            kwargs[name] = copy.deepcopy(getattr(defaults, name))
        elif dataclasses.is_dataclass(expected) and field.default is dataclasses.MISSING and \
                field.default_factory is dataclasses.MISSING:
            kwargs[name] = _build(expected, {}, full_key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError("is required but not set", key=full_key)
    return cls(**kwargs)


def check_seed(seed: object, key: str = "seed") -> None:
    """A seed every generator the project seeds accepts: an int in 0..SEED_LIMIT-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"must be an integer in 0..{SEED_LIMIT - 1} (got {short_repr(seed)})", key=key)


def _check_momentum(momentum: object, key: str) -> None:
    if isinstance(momentum, (int, float)) and not 0 <= momentum < 1:
        raise ConfigError(f"must be in [0, 1) (got {momentum})", key=key)


def _check_folder(folder: object, key: str) -> None:
    if isinstance(folder, (str, pathlib.PurePath)) and not str(folder).strip():
        raise ConfigError("must name a folder (got an empty string)", key=key)


#: Keys with one meaning in every config, checked wherever a config has them (so no config repeats them).
SHARED_RULES = {"seed": check_seed, "momentum": _check_momentum, "save": _check_folder}


def _validate(config: object, prefix: str = "") -> None:
    """Check every nested dataclass, innermost first (SHARED_RULES, then its ``validate()``), prefixing keys."""
    for field in dataclasses.fields(config):
        child = getattr(config, field.name)
        if dataclasses.is_dataclass(child) and not isinstance(child, type):
            _validate(child, f"{prefix}.{field.name}" if prefix else field.name)
    try:
        for field in dataclasses.fields(config):
            if field.name in SHARED_RULES:
                SHARED_RULES[field.name](getattr(config, field.name), key=field.name)
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
    except ConfigError as error:
        raise error.with_prefix(prefix) from None


def load_config(cls: type[C], yaml_path: str | os.PathLike | None = None,
                overrides: dict[str, object] | list[str] | None = None) -> C:
    """Build dataclass ``cls`` from defaults, then ``yaml_path`` (if any), then ``overrides``; validate it.

    ``overrides`` is either ``{"search.npop": 4}`` (values used as given, or parsed if they came from
    :func:`parse_overrides`) or ``["search.npop=4"]``. Raises :class:`ConfigError` naming the key.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    tree = _read_yaml(yaml_path) if yaml_path is not None else {}
    if overrides is None:
        overrides = {}
    if isinstance(overrides, (list, tuple)):
        overrides = _split_overrides(list(overrides))
    for dotted_key, value in overrides.items():
        if isinstance(value, str):  # parsed as YAML, but the text is kept for str fields
            value = _parse_scalar_text(value)
        _check_dotted_key(cls, dotted_key)
        _set_dotted(tree, dotted_key, value)
    config = _build(cls, tree, "")
    _validate(config)
    return config



def load_config_with_flags(cls: type[C], args: argparse.Namespace, flags: dict[str, str]) -> C:
    """A CLI's resolved config: defaults < ``--config`` file < its named flags < ``--set`` overrides.

    ``flags`` maps an argparse destination to its dotted config key (e.g. ``{"npop": "search.npop"}``); a flag
    left at None is not given. ``args`` has ``config`` and ``set`` (see :func:`add_override_argument`).
    """
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in flags.items() if getattr(args, flag) is not None]
    return load_config(cls, args.config, overrides + list(args.set))

def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


def config_to_dict(config: object) -> dict:
    """The config as nested plain dicts/lists/scalars (tuples become lists, paths strings): YAML-safe."""
    return _plain(config)


def save_config(config: object, path: str | os.PathLike) -> pathlib.Path:
    """Write the resolved config as YAML to ``path`` (atomically: temp file then rename); return the path.

    ``load_config(type(config), path)`` gives back an equal config.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    write_atomically(path, text.encode("utf-8"))
    return path


def add_override_argument(parser: argparse.ArgumentParser, *, distributed_flag: bool = True) -> argparse.ArgumentParser:
    """Add ``--config FILE``, ``--set KEY=VALUE`` (repeatable) and, unless present, ``--distributed``.

    After ``args = parser.parse_args()`` call ``load_config(Cls, args.config, args.set)``.
    ``--distributed`` is accepted for compatibility with the reference CLIs and changes nothing: whether
    the job is distributed comes from torchrun's environment.
    """
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML config file (e.g. configs/quickstart.yaml); its keys override the defaults")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config key, dotted for nested sections (e.g. --set search.npop=4); "
                             "VALUE is read as YAML; repeatable, applied after --config")
    if distributed_flag and "--distributed" not in parser._option_string_actions:
        parser.add_argument("--distributed", action="store_true",
                            help="accepted for compatibility with the reference CLIs; distribution comes from "
                                 "torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)")
    return parser


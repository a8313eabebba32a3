"""A run directory's fingerprint: the settings its results depend on, so a resume with others is refused.

``run_dir/fingerprint.json`` holds, by dotted key, the config values that change results (for train_eval:
seed, epochs, data, network, optim, ...; each CLI names its sections), e.g.
``{"seed": 0, "optim.learning_rate": 0.025, "data.batch_size": 96, ...}``. Resuming a run with a different
value would silently mix two settings in one result, so :func:`check_fingerprint` refuses it in one line that
names the first differing key, both values, and how to start anew.

Keys that only say where inputs are or how fast they are read (:data:`LOCATION_KEYS`: data folders,
loader threads), or that change only the memory a step takes and not its values (activation
checkpointing), are left out, so moving the data or turning checkpointing on does not block a resume. Only keys present in both the
file and the new fingerprint are compared, so a run written before a config key existed still resumes.

Typical use, every rank::

    fingerprint = result_fingerprint(config, ("seed", "data", "network", "optim"))
    check_fingerprint(run_dir, fingerprint, is_main=env.is_main, write=False)   # before touching run_dir
    ... load the checkpoint, save the config ...
    check_fingerprint(run_dir, fingerprint, is_main=env.is_main)              # rank 0 writes it

With ``resume=false`` (start anew in the same folder) call :func:`write_fingerprint` instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from common.atomic import json_safe, parse_json, write_json_atomically
from launch.config import config_to_dict
from common.errors import UserInputError, short_repr

FINGERPRINT_FILE = "fingerprint.json"
#: Dotted keys that never change what is computed: where the data is, how many threads read it, whether
#: activations are recomputed (bit-identical: tests/test_search_network_checkpoint.py).
LOCATION_KEYS = frozenset({"data.data_dir", "data.beton_dir", "data.download", "data.num_workers", "data.os_cache",
                           "network.checkpoint_cells"})
START_ANEW = "to start anew, use another --note (or --run-dir), or --set resume=false where the CLI has it"


class ResumeMismatchError(UserInputError):
    """The run directory was started with other result-changing settings than this run has."""


def result_fingerprint(config: object, sections: Sequence[str]) -> dict:
    """The values of ``config``'s top-level fields or sections named in ``sections``, by dotted key.

    A section (a nested config) contributes one key per leaf (``optim.learning_rate``); lists stay whole values.
    :data:`LOCATION_KEYS` are left out. The result is plain JSON (as written to fingerprint.json).
    """
    plain = config_to_dict(config)
    flat: dict[str, Any] = {}
    for section in sections:
        if section not in plain:
            raise KeyError(f"{type(config).__name__} has no field {section!r}")
        _flatten(section, plain[section], flat)
    return _as_json({key: value for key, value in flat.items() if key not in LOCATION_KEYS})


def check_fingerprint(run_dir: Path, fingerprint: dict, *, is_main: bool, write: bool = True) -> None:
    """Refuse ``run_dir`` if its fingerprint.json differs from ``fingerprint`` on a shared key; else (on rank 0,
    with ``write``) store ``fingerprint`` there atomically.

    Raises :class:`ResumeMismatchError` naming the first differing key with both values, or when the file
    exists but is unreadable. Every rank may call it: only ``is_main`` writes.
    """
    path = Path(run_dir) / FINGERPRINT_FILE
    saved = _read(path)
    current = _as_json(fingerprint)
    if saved is not None:
        for key in current:
            if key in saved and saved[key] != current[key]:
                raise ResumeMismatchError(
                    f"run directory {run_dir} was started with {key} = {short_repr(saved[key])}, this run has "
                    f"{key} = {short_repr(current[key])}; its results would mix both settings: {START_ANEW}")
    if write and saved != current:
        write_fingerprint(run_dir, current, is_main=is_main)


def write_fingerprint(run_dir: Path, fingerprint: dict, *, is_main: bool) -> None:
    """Store ``fingerprint`` as run_dir/fingerprint.json (atomically, rank 0 only), replacing any earlier one."""
    if is_main:
        write_json_atomically(Path(run_dir) / FINGERPRINT_FILE, _as_json(fingerprint), indent=1)


def _read(path: Path) -> dict | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ResumeMismatchError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        saved = parse_json(data)
    except ValueError as error:
        saved = error
    if not isinstance(saved, dict):
        raise ResumeMismatchError(f"{path} is not a fingerprint (a JSON object of settings); delete it to "
                                  f"resume without the check, or {START_ANEW}")
    return saved


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


def _as_json(record: dict) -> dict:
    """``record`` as it reads back from JSON (tuples become lists, NaN null), so comparisons see what the
    file holds."""
    return json.loads(json.dumps(json_safe(record)))

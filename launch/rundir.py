"""The run directory: resolved config, logs, metrics (JSONL + TensorBoard), progress bars.

Layout of ``run_dir``::

    config.yaml          the resolved config (rank 0); an earlier, different one is kept as config.<n>.yaml
    log.txt              rank 0's log; log.rank<r>.txt for the other ranks
    metrics.jsonl        one JSON object per MetricsLogger.log call: {"step": s, "time": t, name: value, ...}
    tensorboard/         TensorBoard event files (rank 0)
    checkpoints/         see launch.checkpoint

Only rank 0 prints to the console, writes metrics and draws progress bars; every rank writes its own
log file so a failure on any rank leaves a trace. Appending (never truncating) keeps what an interrupted
run wrote before it was resumed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch

from launch.config import config_to_dict, save_config
from launch.distributed import DistEnv, barrier
from common.errors import UserInputError, describe_os_error

T = TypeVar("T")

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"


class RunDirError(UserInputError):
    """The run directory cannot be created or used (a file in the way, a read-only place, a name too long)."""


def make_run_dir(path: str | os.PathLike, env: DistEnv) -> Path:
    """Create ``path`` and ``path/checkpoints`` on rank 0 (all ranks wait); change nothing inside; return it.

    A path that cannot be a folder (a file in the way, under /proc, a name too long) is one RunDirError.
    """
    run_dir = Path(path)
    if env.is_main:
        try:
            (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"{run_dir} cannot be the run directory ({describe_os_error(error)})") from None
    barrier()
    return run_dir


def prepare_run_dir(path: str | os.PathLike, env: DistEnv, config: object | None = None) -> Path:
    """:func:`make_run_dir`, then save the resolved ``config`` there on rank 0; return the path.

    If the directory already holds a different config.yaml (a resumed run with changed flags), the old
    one is kept as ``config.<n>.yaml`` before the new one is written. All ranks wait for rank 0. Callers
    that resume check their checkpoint first (see evaluation/run.py), so a refused resume renames nothing.
    """
    run_dir = make_run_dir(path, env)
    if env.is_main and config is not None:
        config_path = run_dir / CONFIG_FILE
        if config_path.exists():
            import yaml

            try:
                previous = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError):
                previous = None
            if previous != config_to_dict(config):
                number = 1
                while (run_dir / f"config.{number}.yaml").exists():
                    number += 1
                config_path.rename(run_dir / f"config.{number}.yaml")
        save_config(config, config_path)
    barrier()
    return run_dir


def get_logger(name: str, env: DistEnv, run_dir: str | os.PathLike | None = None,
               level: int = logging.INFO) -> logging.Logger:
    """A logger printing to the console on rank 0 only and writing every rank's messages to its log file.

    Calling it again with the same name replaces the handlers (no duplicated lines).
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = f"[rank {env.rank}] " if env.is_distributed else ""
    formatter = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    if env.is_main:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        logger.addHandler(console)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        file_name = "log.txt" if env.is_main else f"log.rank{env.rank}.txt"
        file_handler = logging.FileHandler(run_dir / file_name, mode="a", encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _scalar(name: str, value: object) -> float | int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}") from None


class MetricsLogger:
    """Scalar curves: ``metrics.jsonl`` and TensorBoard events, written on rank 0 only.

    ``log(step, loss=0.3, top1=91.2)`` appends ``{"step": 3, "time": <unix s>, "loss": 0.3, "top1": 91.2}``
    and one TensorBoard scalar per name (tag = name, e.g. "train/loss"). A context manager.
    """

    def __init__(self, run_dir: str | os.PathLike, env: DistEnv, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.env = env
        self._file = None
        self._writer = None
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only where used

                self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def log(self, step: int, **scalars: object) -> None:
        """Record the scalars at ``step`` (tensors, ints, floats or numpy scalars). No-op off rank 0."""
        if self._file is None:
            return
        values = {name: _scalar(name, value) for name, value in scalars.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                self._writer.add_scalar(name, value, int(step))

    def close(self) -> None:
        """Flush and close the files (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def progress(iterable: Iterable[T], env: DistEnv, desc: str, total: int | None = None, **kwargs):
    """A tqdm bar over ``iterable``: shown on rank 0 (hidden when stderr is not a terminal), disabled on the
    other ranks, so callers may always use its methods (set_postfix, update, close, ``with``).

    Extra keyword arguments go to tqdm (e.g. ``leave=False``, ``disable=False`` to force it on rank 0).
    """
    from tqdm import tqdm

    if not env.is_main:
        kwargs["disable"] = True
    kwargs.setdefault("disable", None)  # None: off when not attached to a terminal (log files, pytest)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, desc=desc, total=total, **kwargs)

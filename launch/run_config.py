"""The run fields every CLI config shares, as dataclasses the CLI configs inherit (so their keys stay at the
top level of every YAML preset: ``seed: 2``, ``threads: 1``).

- :class:`RunConfig` (search_evolutionary.py, search_supernet.py, train_eval.py): ``seed``, ``device``,
  ``threads``, ``channels_last``.
- :class:`SearchRunConfig` (the two searches): adds the run directory ``save/note``, ``resume`` and
  ``pictures``. train_eval.py takes its run directory from ``--run-dir`` (one folder per genotype and data
  set by default, a sub-folder per seed with ``--seeds``), always resumes, and draws nothing, so those four
  keys would be dead in its config.

Checked here and nowhere else: ``seed`` in 0..2**32-1 and ``save`` not empty (launch.config.SHARED_RULES,
for every config), ``note`` a plain folder name, ``threads`` >= 1, ``device`` cpu / cuda / cuda:N.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import ConfigError, short_repr
from launch.config import MAX_NAME_BYTES

__all__ = ["RunConfig", "SearchRunConfig"]

_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


@dataclass
class RunConfig:
    """seed: the job's seed (rank r is seeded with seed + r); device: null (CUDA when present, else the CPU),
    'cpu', 'cuda' or 'cuda:N'; threads: torch's intra-op CPU threads per process (null: torch's default;
    1 avoids oversubscription when several processes share few cores); channels_last: the networks' memory
    format (launch.train.to_channels_last): true (the default) = channels_last on every device, false =
    never, null = on CUDA only (the default until 2026-12). On the CPU, torch's kernels for depthwise
    convolutions, pools and BatchNorm are much faster in channels_last (README, "Search speed"); the values
    differ from the contiguous layout's by float rounding only (the README measures what that does to the
    scores)."""

    seed: int = 0
    device: str | None = None
    threads: int | None = None
    channels_last: bool | None = True

    def validate(self) -> None:
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"must be null, 'cpu', 'cuda' or 'cuda:N' (got {short_repr(self.device)})", key="device")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"must be at least 1 or null (got {self.threads})", key="threads")


@dataclass
class SearchRunConfig(RunConfig):
    """A search's run: its directory is ``save/note``; rerunning the same command (or a torchrun restart)
    resumes from its last checkpoint when ``resume`` is true; ``pictures`` draws the cells (graphviz).
    The searches default to the references' seed 2."""

    seed: int = 2
    save: str = "runs"
    note: str = "search"
    resume: bool = True
    pictures: bool = True

    def validate(self) -> None:
        super().validate()
        note = self.note
        too_long = len(note.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
        if not note or "/" in note or note in (".", "..") or too_long:
            raise ConfigError(f"must be a plain folder name of at most {MAX_NAME_BYTES} bytes (got {short_repr(note)})",
                              key="note")

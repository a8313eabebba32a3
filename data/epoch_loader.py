"""What every loader shares: a :class:`data.splits.ShardPlan`, batching, epochs, and the output contract.

A loader yields ``(images, labels)`` on its device: images float32 (N, C, H, W), normalised, channels_last
on CUDA; labels int64 (N,). ``len(loader)`` is the number of batches per epoch on this rank;
``set_epoch(e)`` fixes the order of the next iteration (after which the epoch counter moves on by one,
so plain repeated ``for`` loops walk through epochs 0, 1, 2, ...). Every yielded tensor is the caller's
own (never a view into a buffer the loader reuses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from data.info import DatasetInfo
from data.splits import ShardPlan


@dataclass(frozen=True)
class Augmentation:
    """What a loader does to its uint8 batches (data.augment), in this order: ``resized_crop`` (RandomResizedCrop
    to that side, 0 = off) or ``center_crop`` (CenterCrop to that side, deterministic, 0 = off), horizontal
    flip, translate by up to ``translate`` px, ``color_jitter`` (brightness, contrast, saturation, hue;
    None = off), a ``cutout`` px square (0 = off)."""

    flip: bool = False
    translate: int = 0
    cutout: int = 0
    resized_crop: int = 0
    center_crop: int = 0
    color_jitter: tuple[float, float, float, float] | None = None

    @property
    def active(self) -> bool:
        """True when anything random happens."""
        return self.flip or self.translate > 0 or self.cutout > 0 or self.resized_crop > 0 or \
            self.color_jitter is not None


class EpochLoader:
    """Base class: batches of ``plan``'s samples for the current epoch; subclasses produce the tensors."""

    def __init__(self, plan: ShardPlan, info: DatasetInfo, *, batch_size: int, drop_last: bool,
                 augmentation: Augmentation, device: torch.device):
        self.plan = plan
        self.info = info
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.augmentation = augmentation
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cuda"
        self._next_epoch = 0

    def __len__(self) -> int:
        size = self.plan.shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    @property
    def next_epoch(self) -> int:
        """The epoch the next iteration will run."""
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (its order and augmentation draws)."""
        self._next_epoch = int(epoch)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Sample indices this rank's iteration of ``epoch`` visits, in order (incomplete last batch dropped
        when drop_last)."""
        return self.plan.epoch_indices(epoch)[:len(self) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._next_epoch
        self._next_epoch += 1
        return self._iterate(self.epoch_indices(epoch), epoch)

    def _iterate(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def _augmentation_seed(self, epoch: int) -> int:
        """A seed for this loader's random augmentation draws in ``epoch``, from (seed, stream, rank, epoch)."""
        words = np.random.SeedSequence([self.plan.seed, self.plan.stream, self.plan.rank, epoch]).generate_state(2)
        return int(words[0]) << 31 ^ int(words[1])

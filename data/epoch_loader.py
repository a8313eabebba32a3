"""What every loader shares: a :class:`data.splits.ShardPlan`, batching, epochs, augmentation and the output contract.

A loader yields ``(images, labels)`` on its device: images float32 (N, C, H, W), normalised, channels_last
on CUDA; labels int64 (N,). ``len(loader)`` is the number of batches per epoch on this rank;
``set_epoch(e)`` fixes the order of the next iteration (after which the epoch counter moves on by one,
so plain repeated ``for`` loops walk through epochs 0, 1, 2, ...). Every yielded tensor is the caller's
own (never a view into a buffer the loader reuses).

Both loaders (in-memory and FFCV) only fetch uint8 (N, C, H, W) batches of the epoch's samples on the
device; :meth:`EpochLoader.finish_batch` then applies the same seeded torch augmentation
(:mod:`data.augment`, in :class:`Augmentation`'s order) and the same normalisation table. The
augmentation draws come from one torch.Generator per epoch seeded by (seed, loader stream, rank, epoch),
so both backends give bit-identical batches, and a rerun (or another process of the same rank) repeats them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from data import augment
from data.info import DatasetInfo
from data.splits import ShardPlan


@dataclass(frozen=True)
class Augmentation:
    """What a loader does to its uint8 batches (data.augment), in this order: ``resized_crop`` (RandomResizedCrop
    to that side, 0 = off) or ``center_crop`` (CenterCrop to that side, deterministic, 0 = off), horizontal
    flip, translate by up to ``translate`` px, ``color_jitter`` (brightness, contrast, saturation, hue;
    None = off), a ``cutout`` px square (0 = off; clipped at the border, or with ``cutout_inside`` fully inside)."""

    flip: bool = False
    translate: int = 0
    cutout: int = 0
    cutout_inside: bool = False
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
        self.table = torch.from_numpy(augment.normalisation_table(info.mean, info.std)).to(self.device)
        self.fill = torch.tensor([int(round(m)) for m in info.mean], dtype=torch.uint8, device=self.device)
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

    def augmentation_generator(self, epoch: int) -> torch.Generator:
        """The torch.Generator (on the loader's device) that draws ``epoch``'s augmentation, batch after batch."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self._augmentation_seed(epoch))
        return generator

    def finish_batch(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (N, C, H, W) on the device, any memory layout -> the loader's float32 output batch.

        Augments (when active) with ``generator``'s next draws, normalises through the lookup table
        (which also copies: the result never aliases ``images``), then lays it out channels_last on CUDA.
        """
        settings = self.augmentation
        if settings.resized_crop > 0:
            images = augment.random_resized_crop(images, settings.resized_crop, generator)
        elif settings.center_crop > 0:
            images = augment.center_crop(images, settings.center_crop)
        if settings.flip:
            images = augment.random_flip(images, generator)
        if settings.translate > 0:
            images = augment.random_translate(images, settings.translate, generator)
        if settings.color_jitter is not None:
            images = augment.color_jitter(images, settings.color_jitter, generator)
        if settings.cutout > 0:
            images = augment.random_cutout(images, settings.cutout, self.fill, generator,
                                           inside=settings.cutout_inside)
        images = augment.normalise(images, self.table)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

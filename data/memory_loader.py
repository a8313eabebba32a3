"""The in-memory loader: the whole split as one uint8 tensor on the device, augmented batch-wise in torch.

The fallback where FFCV is absent, and the reproducible choice on CPU: its augmentation draws come from a
torch.Generator seeded by (seed, loader, rank, epoch), so a rerun gives identical batches. On CUDA the
images live on the GPU (uploaded once, shared by the loaders of one job) and never cross the bus again.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from data import augment
from data.epoch_loader import Augmentation, EpochLoader
from data.info import ArrayDataset, DatasetInfo
from data.splits import ShardPlan


class DeviceArrays:
    """One split on a device: images uint8 (N, C, H, W) and labels int64 (N,)."""

    def __init__(self, dataset: ArrayDataset, device: torch.device):
        self.images = torch.from_numpy(np.array(dataset.images.transpose(0, 3, 1, 2), order="C")).to(device)
        self.labels = torch.from_numpy(np.array(dataset.labels, dtype=np.int64)).to(device)


class MemoryLoader(EpochLoader):
    """Loader over :class:`DeviceArrays`; same interface and output as :class:`data.ffcv_loader.FfcvLoader`."""

    def __init__(self, arrays: DeviceArrays, plan: ShardPlan, info: DatasetInfo, *, batch_size: int,
                 drop_last: bool, augmentation: Augmentation, device: torch.device):
        super().__init__(plan, info, batch_size=batch_size, drop_last=drop_last, augmentation=augmentation,
                         device=device)
        self.arrays = arrays
        self.table = torch.from_numpy(augment.normalisation_table(info.mean, info.std)).to(self.device)
        self.fill = torch.tensor([int(round(m)) for m in info.mean], dtype=torch.uint8, device=self.device)

    def _iterate(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self._augmentation_seed(epoch))
        order_on_device = torch.from_numpy(order).to(self.device)
        for start in range(0, len(order), self.batch_size):
            chosen = order_on_device[start:start + self.batch_size]
            images = self.arrays.images[chosen]
            images = self._augment(images, generator)
            images = augment.normalise(images, self.table)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.arrays.labels[chosen]

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
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
            images = augment.random_cutout(images, settings.cutout, self.fill, generator)
        return images

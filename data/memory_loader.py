"""The in-memory loader: the whole split as one uint8 tensor on the device, augmented batch-wise in torch.

The fallback where FFCV is absent. On CUDA the images live on the GPU (uploaded once, shared by the loaders
of one job) and never cross the bus again. Augmentation and normalisation are the shared, seeded
:meth:`data.epoch_loader.EpochLoader.finish_batch`, so its batches are bit-identical to the FFCV loader's.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

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

    def _iterate(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = self.augmentation_generator(epoch)
        order_on_device = torch.from_numpy(order).to(self.device)
        for start in range(0, len(order), self.batch_size):
            chosen = order_on_device[start:start + self.batch_size]
            yield self.finish_batch(self.arrays.images[chosen], generator), self.arrays.labels[chosen]

"""The FFCV loader: a .beton read by ffcv.loader.Loader, with FFCV's own JIT-compiled augmentations.

Pipeline (image field): decoder -> [RandomHorizontalFlip] -> [RandomTranslate(padding)]
-> [Cutout(size, fill = mean colour)] -> CPU: normalise -> ToTensor -> ToTorchImage;
CUDA: ToTensor -> ToDevice -> ToTorchImage(channels_last), then the normalisation lookup in torch on the GPU
(FFCV's GPU NormalizeImage needs cupy, which we do not require; the table is the same, so are the values).
RGB files (RGBImageField): SimpleRGBImageDecoder and FFCV's NormalizeImage. Grey files (NDArrayField
(H, W, 1), see data.beton): NDArrayDecoder and our numba-compiled NormalizeChannels (FFCV's is 3-channel
only), so every step moves one channel. Older grey files stored as 3 equal RGB channels still load: the
channels the model does not take are dropped in the final copy.

Orders come from our :class:`data.splits.ShardPlan` through a custom FFCV TraversalOrder (FFCV's own
distributed mode pads shards with repeated samples; ours are disjoint). FFCV's augmentation draws use
numba's per-thread generators, which cannot be seeded from here: orders are reproducible, augmentation
draws are not (use backend 'memory' for bit-identical CPU reruns).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.fields.rgb_image import SimpleRGBImageDecoder
from ffcv.loader import Loader
from ffcv.traversal_order.base import TraversalOrder
from ffcv.transforms import (Cutout, NormalizeImage, RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor,
                             ToTorchImage)

from data import augment
from data.beton import NDARRAY_FIELD, stored_image_layout
from data.epoch_loader import Augmentation, EpochLoader
from data.ffcv_ops import NormalizeChannels
from data.info import DatasetInfo
from data.splits import ShardPlan

_CLOSE_TIMEOUT_S = 10.0


class _PlannedOrder(TraversalOrder):
    """A TraversalOrder that returns the order our loader set for the coming epoch.

    FFCV builds the traversal order by calling ``order(loader)``; this instance answers with itself.
    """

    def __init__(self, first_order: np.ndarray):  # FFCV's base __init__ wants the loader: see __call__
        self.current = first_order

    def __call__(self, loader: Loader) -> "_PlannedOrder":
        self.loader, self.indices, self.seed = loader, loader.indices, loader.seed
        self.distributed, self.sampler = False, None
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        return self.current


class FfcvLoader(EpochLoader):
    """Loader over one .beton; same interface and output as :class:`data.memory_loader.MemoryLoader`."""

    def __init__(self, beton: Path, plan: ShardPlan, info: DatasetInfo, *, batch_size: int, drop_last: bool,
                 augmentation: Augmentation, device: torch.device, num_workers: int = 2, os_cache: bool = True,
                 batches_ahead: int = 3):
        super().__init__(plan, info, batch_size=batch_size, drop_last=drop_last, augmentation=augmentation,
                         device=device)
        field_kind, stored_shape = stored_image_layout(beton)
        self.grey_array = field_kind == NDARRAY_FIELD
        stored = stored_shape[-1] if self.grey_array else 3
        self.stored_mean = np.resize(np.asarray(info.mean, dtype=np.float64), stored)
        self.stored_std = np.resize(np.asarray(info.std, dtype=np.float64), stored)
        self.table = torch.from_numpy(augment.normalisation_table(info.mean, info.std)).to(self.device)
        self._order = _PlannedOrder(self.epoch_indices(0))
        self._loader = Loader(
            str(beton), batch_size=batch_size, num_workers=num_workers, os_cache=os_cache, order=self._order,
            indices=plan.indices, drop_last=drop_last, batches_ahead=batches_ahead,
            pipelines={"image": self._image_pipeline(), "label": self._label_pipeline()})

    def _image_pipeline(self) -> list:
        settings = self.augmentation
        stored = len(self.stored_mean)
        steps = [NDArrayDecoder() if self.grey_array else SimpleRGBImageDecoder()]
        if settings.flip:
            steps.append(RandomHorizontalFlip())
        if settings.translate > 0:
            steps.append(RandomTranslate(padding=settings.translate, fill=(0,) * stored))
        if settings.cutout > 0:
            steps.append(Cutout(settings.cutout, tuple(int(round(m)) for m in self.stored_mean)))
        if self.device.type == "cpu":
            normalise = (NormalizeChannels(tuple(self.stored_mean), tuple(self.stored_std)) if self.grey_array
                         else NormalizeImage(self.stored_mean, self.stored_std, np.float32))
            steps += [normalise, ToTensor(), ToTorchImage(channels_last=True)]
        else:
            steps += [ToTensor(), ToDevice(self.device, non_blocking=True), ToTorchImage(channels_last=True)]
        return steps

    def _label_pipeline(self) -> list:
        steps = [IntDecoder(), ToTensor()]
        if self.device.type != "cpu":
            steps.append(ToDevice(self.device, non_blocking=True))
        return steps

    def _iterate(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._order.current = order
        epoch_iterator = iter(self._loader)
        try:
            for images, labels in epoch_iterator:
                yield self._finish(images), labels.reshape(-1).to(torch.int64, copy=True)
        finally:
            _stop(epoch_iterator)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """(N, stored C, H, W) view into FFCV's reused buffer -> the model's own (N, in_channels, H, W) float32.

        One copy: the channel slice is a view, and the clone both drops unused channels and frees the batch
        from FFCV's buffer (which FFCV overwrites ``batches_ahead`` batches later).
        """
        images = images[:, :self.info.in_channels]
        if self.device.type != "cpu":
            images = augment.normalise(images, self.table)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.clone(memory_format=memory_format)


def _stop(epoch_iterator) -> None:
    """End an FFCV epoch iterator's worker thread, even when the caller left the epoch early (ffcv #345, #393)."""
    epoch_iterator.terminate_event.set()
    epoch_iterator.join(timeout=_CLOSE_TIMEOUT_S)
    epoch_iterator.close()

"""The FFCV loader: a .beton read and decoded by ffcv.loader.Loader, augmented by the project's seeded torch ops.

Pipeline (image field): decoder -> ToTensor -> [ToDevice on CUDA] -> ToTorchImage -> finish: FFCV decodes
uint8 batches (on CUDA it copies them to the GPU: uint8 is a quarter of float32's bytes); then, still in
FFCV's thread, :meth:`data.epoch_loader.EpochLoader.finish_batch` (the in-memory loader's own code) flips,
translates and cuts out with a torch.Generator seeded by (seed, loader, rank, epoch) and normalises
through the same table, on the batch's device. FFCV's own augmentations are not used: they draw from
numba's per-thread generators, which cannot be seeded, so ranks and reruns would see different batches.
Here the batches are bit-identical to the in-memory loader's and repeat exactly on a rerun. Running in
FFCV's thread, the augmentation of the next batches overlaps with the caller's step (CIFAR-shaped, batch
256, 2 CPU cores, a 20 ms step per batch: 9,900 images/s against 8,400 in the caller's thread).

RGB files (RGBImageField) decode with SimpleRGBImageDecoder; grey files (NDArrayField (H, W, 1), see
data.beton) with NDArrayDecoder, so every step moves one channel. Older grey files stored as 3 equal RGB
channels still load: the channels the model does not take are dropped before augmentation.

Orders come from our :class:`data.splits.ShardPlan` through a custom FFCV TraversalOrder (FFCV's own
distributed mode pads shards with repeated samples; ours are disjoint).
"""
from __future__ import annotations

import queue
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from data.ffcv_threads import load_ffcv

load_ffcv()  # before FFCV's modules are imported: it keeps torch's thread count (data/ffcv_threads.py)

from ffcv.fields.basics import IntDecoder  # noqa: E402
from ffcv.fields.ndarray import NDArrayDecoder  # noqa: E402
from ffcv.fields.rgb_image import SimpleRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage  # noqa: E402

from data.beton import NDARRAY_FIELD, stored_image_layout  # noqa: E402
from data.epoch_loader import Augmentation, EpochLoader  # noqa: E402
from data.info import DatasetInfo  # noqa: E402
from data.splits import ShardPlan  # noqa: E402

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


class _FinishBatch(Operation):
    """The last pipeline step (torch mode): :meth:`EpochLoader.finish_batch` in FFCV's own thread.

    uint8 (N, stored C, H, W) -> the loader's float32 (N, C, H, W) batch, a fresh tensor (not one of FFCV's
    reused buffers). FFCV's thread runs the batches of an epoch one after another, so the generator's
    draws follow the batch order exactly as in the in-memory loader; running here, augmentation overlaps
    with the caller's work on the previous batches (up to ``batches_ahead``) instead of adding to it.
    """

    def __init__(self, loader: "FfcvLoader"):
        super().__init__()
        self.loader = loader
        self.generator: torch.Generator | None = None  # set by the loader before each epoch starts

    def generate_code(self) -> Callable:
        step, channels = self, self.loader.info.in_channels

        def finish(images, _unused_buffer):
            return step.loader.finish_batch(images[:, :channels], step.generator)

        return finish

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, None]:
        _, height, width = previous_state.shape
        crop = self.loader.augmentation.resized_crop or self.loader.augmentation.center_crop
        return replace(previous_state, jit_mode=False, dtype=torch.float32,
                       shape=(self.loader.info.in_channels, crop or height, crop or width)), None


class FfcvLoader(EpochLoader):
    """Loader over one .beton; same interface and output as :class:`data.memory_loader.MemoryLoader`."""

    def __init__(self, beton: Path, plan: ShardPlan, info: DatasetInfo, *, batch_size: int, drop_last: bool,
                 augmentation: Augmentation, device: torch.device, num_workers: int = 2, os_cache: bool = True,
                 batches_ahead: int = 3):
        super().__init__(plan, info, batch_size=batch_size, drop_last=drop_last, augmentation=augmentation,
                         device=device)
        field_kind, _ = stored_image_layout(beton)
        self.grey_array = field_kind == NDARRAY_FIELD
        self._finish_step = _FinishBatch(self)
        self._order = _PlannedOrder(self.epoch_indices(0))
        self._loader = Loader(
            str(beton), batch_size=batch_size, num_workers=num_workers, os_cache=os_cache, order=self._order,
            indices=plan.indices, drop_last=drop_last, batches_ahead=batches_ahead,
            pipelines={"image": self._image_pipeline(), "label": self._label_pipeline()})

    def _image_pipeline(self) -> list:
        """Decode to uint8 (N, H, W, stored C), to torch (and the GPU), viewed as (N, stored C, H, W), then
        augment and normalise (:class:`_FinishBatch`)."""
        steps = [NDArrayDecoder() if self.grey_array else SimpleRGBImageDecoder(), ToTensor()]
        if self.device.type != "cpu":
            steps.append(ToDevice(self.device, non_blocking=True))
        return steps + [ToTorchImage(channels_last=True), self._finish_step]

    def _label_pipeline(self) -> list:
        steps = [IntDecoder(), ToTensor()]
        if self.device.type != "cpu":
            steps.append(ToDevice(self.device, non_blocking=True))
        return steps

    def _iterate(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._order.current = order
        self._finish_step.generator = self.augmentation_generator(epoch)  # before FFCV's thread starts
        epoch_iterator = iter(self._loader)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            for images, labels in epoch_iterator:
                if stream is not None:  # made on FFCV's stream: keep its memory until this stream is done with it
                    images.record_stream(stream)
                yield images, labels.reshape(-1).to(torch.int64, copy=True)
        finally:
            _stop(epoch_iterator)


def _stop(epoch_iterator) -> None:
    """End an FFCV epoch iterator's worker thread at once, also when the caller left the epoch early.

    Left alone, the thread sees ``terminate_event`` only while its output queue is full (it offers each
    batch with a 0.5 s timeout), and once past the epoch's last batch it puts its end marker with no
    timeout at all, which blocked until the join timed out (10 s per early stop; ffcv #345, #393). So its
    remaining batches are taken away (it finishes at most the batch in hand) and the queue is drained
    until it has put the end marker and returned.
    """
    epoch_iterator.terminate_event.set()
    epoch_iterator.iter_ixes = iter(())
    deadline = time.monotonic() + _CLOSE_TIMEOUT_S
    while epoch_iterator.is_alive() and time.monotonic() < deadline:
        try:
            while True:
                epoch_iterator.output_queue.get_nowait()
        except queue.Empty:
            pass
        epoch_iterator.join(timeout=0.005)
    epoch_iterator.close()

""":class:`DataConfig`: where the data comes from and how it is batched and augmented. Torch-free, so every
CLI's config (and ``--help``) loads without torch; :mod:`data.loaders` turns it into loaders.

**data.batch_size is the global batch**: the samples of one optimizer step of one network, summed over the
ranks that train it. Under DistributedDataParallel each of W ranks loads ``batch_size / W`` of them
(:meth:`DataConfig.per_rank`; batch_size must divide by W), so a preset's number means the same on one GPU
and on eight, and the published batches (PertNAS 256, DARTS 64, DARTS retraining 96) are written as
published. data.eval_batch_size is per process: evaluation batches are never combined across ranks. Where a
setting counts evaluation batches (search.val_batches, projection.val_batches, adaptive rounds) it also sets
how many images are measured, and the ``batch`` BN treatment normalises with each batch's statistics, so
there it changes the result (it is part of a run's fingerprint); elsewhere only memory use and speed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from data.errors import DataConfigError
from data.info import ALL_DATASETS

__all__ = ["DataConfig", "MAX_IMAGE_SIDE", "BATCH_SIZE_HELP"]

# No image here is larger (CIFAR 32, MNIST 28, ImageNet-style folders resized to ~224): a larger size,
# crop padding or cutout square is a typo that would only exhaust memory.
MAX_IMAGE_SIDE = 1024


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched and augmented.

    dataset: cifar10 | cifar100 | mnist | fashion_mnist | digits | imagefolder.
    data_dir: source files (for the in-memory backend). beton_dir: folder written by data/write_ffcv.py.
    backend: 'auto' (FFCV when beton_dir has the files and ffcv imports, else memory) | 'ffcv' | 'memory'.
    batch_size: the GLOBAL training batch of one optimizer step (each of W ranks loads batch_size / W; see
    the module docstring); eval_batch_size: per process, evaluation loaders (default: the per-rank
    training batch).
    search_portion: share of the training set in search_train (the rest is search_val).
    train_subset: use only N training images (every loader but test): the first N, or, with
    train_subset_seed, N drawn at random (without replacement) by that seed, whatever the job's seed.
    augment: master switch for the training augmentation; cutout: square side (0 = off), centred anywhere
    and clipped at the border (DARTS), or with cutout_inside always fully inside the image (FFCV's
    Cutout, which PertNAS's pipeline uses); translate: max
    shift in pixels (pad + random crop); flip: horizontal flip, None = per data set (off for digits and
    mnist, where a mirrored digit is another glyph; on elsewhere).
    num_workers: FFCV threads; os_cache: FFCV reads through the OS page cache (else a process cache).
    drop_last: drop the incomplete last batch of training loaders. download: let the in-memory backend
    download missing sources. image_size: imagefolder only, the square side images are resized to.
    crop_size: training loaders take a RandomResizedCrop of that side (with ``augment``; else a centre
    crop), evaluation loaders the centre crop (DARTS's ImageNet: image_size 256, crop_size 224 = its
    Resize(256) + CenterCrop(224) for testing); null = the stored size. color_jitter: [brightness, contrast,
    saturation, hue] strengths of ColorJitter on training loaders (DARTS's ImageNet: [0.4, 0.4, 0.4, 0.2]).
    Both run in data.augment's torch ops, on either backend (data.epoch_loader.EpochLoader.finish_batch).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    beton_dir: str | None = None
    backend: Literal["auto", "ffcv", "memory"] = "auto"
    batch_size: int = 64
    eval_batch_size: int | None = None
    search_portion: float = 0.5
    train_subset: int | None = None
    train_subset_seed: int | None = None
    augment: bool = True
    cutout: int = 0
    cutout_inside: bool = False
    translate: int = 2
    flip: bool | None = None
    num_workers: int = 2
    drop_last: bool = True
    os_cache: bool = True
    download: bool = False
    image_size: int | None = None
    crop_size: int | None = None
    color_jitter: list[float] | None = None

    def validate(self) -> "DataConfig":
        """Raise :class:`DataConfigError` naming the first impossible value; return self.

        Types are the config loader's job (launch.config); this checks values only, in its words.
        """
        def check(ok: bool, key: str, requirement: str) -> None:
            if not ok:
                raise DataConfigError(f"{requirement} (got {getattr(self, key)!r})", key=key)

        check(self.dataset in ALL_DATASETS, "dataset", f"must be one of {', '.join(ALL_DATASETS)}")
        check(self.backend in ("auto", "ffcv", "memory"), "backend", "must be one of 'auto', 'ffcv', 'memory'")
        check(self.backend != "ffcv" or self.beton_dir is not None, "beton_dir", "must be set with backend 'ffcv'")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        check(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size",
              "must be at least 1 or null")
        check(0.0 < self.search_portion < 1.0, "search_portion", "must be in (0, 1)")
        check(self.train_subset is None or self.train_subset >= 2, "train_subset", "must be at least 2 or null")
        check(self.train_subset_seed is None or self.train_subset_seed >= 0, "train_subset_seed",
              "must not be negative")
        for key in ("cutout", "translate"):
            check(0 <= getattr(self, key) <= MAX_IMAGE_SIDE, key, f"must be in 0..{MAX_IMAGE_SIDE}")
        check(self.num_workers >= 1, "num_workers", "must be at least 1")
        for key in ("image_size", "crop_size"):
            value = getattr(self, key)
            check(value is None or 1 <= value <= MAX_IMAGE_SIDE, key, f"must be in 1..{MAX_IMAGE_SIDE} or null")
        jitter = self.color_jitter
        check(jitter is None or (len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5), "color_jitter",
              "must be [brightness, contrast, saturation, hue], all >= 0 and hue <= 0.5")
        return self

    def per_rank(self, world_size: int) -> "DataConfig":
        """This config with each rank's share of the global batch: ``batch_size / world_size``.

        Raises :class:`DataConfigError` (key data.batch_size) when the batch does not divide by the ranks.
        """
        if self.batch_size % world_size:
            raise DataConfigError(f"is the global batch and must divide by the number of ranks {world_size} "
                                  f"(got {self.batch_size})", key="data.batch_size")
        return dataclasses.replace(self, batch_size=self.batch_size // world_size)


#: The sentence every CLI's --help gives about data.batch_size.
BATCH_SIZE_HELP = ("data.batch_size is the global batch of one optimizer step, summed over the ranks: under torchrun "
                   "each of W ranks loads batch_size / W (W must divide it); data.eval_batch_size is per process.")

"""The loader factory every CLI uses: :class:`DataConfig` in, :class:`Loaders` out.

    loaders = build_loaders(DataConfig(dataset="cifar10", beton_dir="betons"), rank=rank,
                            world_size=world, seed=seed, device=device)
    for images, labels in loaders.search_train: ...          # one epoch; the next loop is the next epoch
    stream = BatchStream(loaders.search_val); stream.take(8)   # exactly 8 batches

Four loaders: ``search_train`` and ``search_val`` (a seeded split of the training set, see
:func:`data.splits.search_split`), ``train`` (the whole training set) and ``test``. Training loaders
(search_train, train) shuffle per epoch, augment and cut every rank to the same number of samples;
evaluation loaders (search_val, test) do not augment or drop a partial batch, and visit their samples in a
fixed order (search_val: the split's random order, so any M batches are a random sample; test: every
sample exactly once across ranks). A fifth, ``arch_val``, serves the architecture steps of the bilevel
search: the search_val samples as DARTS's valid queue gives them, augmented like training, every batch a
fresh random draw (see :class:`data.splits.ShardPlan` ``draw_batch``). Each loader is built on first access
and then kept for the job.

Backend 'auto' takes FFCV when ``beton_dir`` holds the data set's metadata and ffcv imports, else the
in-memory loader reading the source files via :func:`data.readers.read_dataset`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from data.batch_stream import BatchStream
from data.beton import metadata_path, read_metadata, verify_betons
from data.epoch_loader import Augmentation, EpochLoader
from data.errors import DataConfigError, DataError
from data.ffcv_threads import load_ffcv
from data.info import ALL_DATASETS, NO_FLIP_DATASETS, ArrayDataset, DatasetInfo, info_from_arrays
from data.readers import read_dataset
from data.splits import ShardPlan, search_split

__all__ = ["DataConfig", "Loaders", "build_loaders", "BatchStream", "ffcv_available"]

Backend = Literal["auto", "ffcv", "memory"]
# No image here is larger (CIFAR 32, MNIST 28, ImageNet-style folders resized to ~224): a larger size,
# crop padding or cutout square is a typo that would only exhaust memory.
MAX_IMAGE_SIDE = 1024
# Random streams of the five loaders (data.splits.ShardPlan.stream).
_STREAMS = {"search_train": 1, "search_val": 2, "train": 3, "test": 4, "arch_val": 5}
SUBSET_STREAM = 6  # the random stream of a seeded training subset


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched and augmented.

    dataset: cifar10 | cifar100 | mnist | fashion_mnist | digits | imagefolder.
    data_dir: source files (for the in-memory backend). beton_dir: folder written by data/write_ffcv.py.
    backend: 'auto' (FFCV when beton_dir has the files and ffcv imports, else memory) | 'ffcv' | 'memory'.
    batch_size: per rank, training loaders; eval_batch_size: per rank, evaluation loaders (default batch_size).
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
    backend: Backend = "auto"
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
        """Raise DataConfigError naming the first impossible setting; return self."""
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise DataConfigError(f"data config: {message}")

        check(self.dataset in ALL_DATASETS, f"dataset {self.dataset!r} is not one of {', '.join(ALL_DATASETS)}")
        check(self.backend in ("auto", "ffcv", "memory"), f"backend {self.backend!r} is not auto, ffcv or memory")
        check(self.backend != "ffcv" or self.beton_dir is not None, "backend 'ffcv' needs beton_dir")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size is None or (isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1),
              f"eval_batch_size must be >= 1 or None, got {self.eval_batch_size}")
        check(0.0 < float(self.search_portion) < 1.0, f"search_portion must be in (0, 1), got {self.search_portion}")
        check(self.train_subset is None or (isinstance(self.train_subset, int) and self.train_subset >= 2),
              f"train_subset must be >= 2 or None, got {self.train_subset}")
        check(self.train_subset_seed is None or (isinstance(self.train_subset_seed, int) and self.train_subset_seed >= 0),
              f"train_subset_seed must be a non-negative integer or None, got {self.train_subset_seed}")
        check(isinstance(self.cutout, int) and 0 <= self.cutout <= MAX_IMAGE_SIDE,
              f"cutout must be in 0..{MAX_IMAGE_SIDE}, got {self.cutout}")
        check(isinstance(self.translate, int) and 0 <= self.translate <= MAX_IMAGE_SIDE,
              f"translate must be in 0..{MAX_IMAGE_SIDE}, got {self.translate}")
        check(self.flip in (None, True, False), f"flip must be true, false or null, got {self.flip!r}")
        check(isinstance(self.num_workers, int) and self.num_workers >= 1,
              f"num_workers must be >= 1, got {self.num_workers}")
        check(self.image_size is None or (isinstance(self.image_size, int) and 1 <= self.image_size <= MAX_IMAGE_SIDE),
              f"image_size must be in 1..{MAX_IMAGE_SIDE} or None, got {self.image_size}")
        check(self.crop_size is None or (isinstance(self.crop_size, int) and 1 <= self.crop_size <= MAX_IMAGE_SIDE),
              f"crop_size must be in 1..{MAX_IMAGE_SIDE} or None, got {self.crop_size}")
        check(self.color_jitter is None or (len(self.color_jitter) == 4 and min(self.color_jitter) >= 0
                                            and self.color_jitter[3] <= 0.5),
              f"color_jitter must be [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, "
              f"got {self.color_jitter}")
        return self

    def training_augmentation(self) -> Augmentation:
        if not self.augment:
            return self.evaluation_augmentation()
        flip = self.dataset not in NO_FLIP_DATASETS if self.flip is None else bool(self.flip)
        jitter = tuple(float(v) for v in self.color_jitter) if self.color_jitter is not None else None
        return Augmentation(flip=flip, translate=self.translate, cutout=self.cutout,
                            cutout_inside=bool(self.cutout_inside), resized_crop=self.crop_size or 0,
                            color_jitter=jitter)

    def evaluation_augmentation(self) -> Augmentation:
        return Augmentation(center_crop=self.crop_size or 0)


def ffcv_available() -> bool:
    try:
        load_ffcv()
    except ImportError:
        return False
    return True


def resolve_backend(cfg: DataConfig) -> str:
    """'ffcv' or 'memory' for this config (see :class:`DataConfig`)."""
    if cfg.backend != "auto":
        if cfg.backend == "ffcv" and not ffcv_available():
            raise DataError("backend 'ffcv' asked for but ffcv is not importable (see scripts/install_ffcv.sh)")
        return cfg.backend
    has_betons = cfg.beton_dir is not None and metadata_path(cfg.beton_dir, cfg.dataset).is_file()
    return "ffcv" if has_betons and ffcv_available() else "memory"


class Loaders:
    """The loaders of one job on one rank, and the data set's :class:`DatasetInfo`.

    Build with :func:`build_loaders`. Sources are checked (and for the memory backend read) at
    construction; each loader object is created on first access and reused afterwards.
    """

    def __init__(self, cfg: DataConfig, *, rank: int, world_size: int, seed: int, device: torch.device):
        cfg.validate()
        if not 0 <= rank < world_size:
            raise DataConfigError(f"rank {rank} is outside world size {world_size}")
        self.cfg, self.rank, self.world_size, self.seed = cfg, rank, world_size, seed
        self.device = torch.device(device)
        self.backend = resolve_backend(cfg)
        self._arrays: dict[str, ArrayDataset] = {}
        self._device_arrays: dict = {}
        if self.backend == "ffcv":
            self._betons = verify_betons(cfg.beton_dir, cfg.dataset)
            self.info = DatasetInfo.from_json(read_metadata(cfg.beton_dir, cfg.dataset)["info"])
        else:
            for split in ("train", "test"):
                self._arrays[split] = read_dataset(cfg.dataset, cfg.data_dir, split, download=cfg.download,
                                                   image_size=cfg.image_size)
            self.info = info_from_arrays(cfg.dataset, self._arrays["train"], len(self._arrays["test"]))
        if cfg.crop_size is not None and cfg.crop_size > min(self.info.image_size):
            raise DataConfigError(f"data config: crop_size {cfg.crop_size} exceeds the {min(self.info.image_size)}-"
                                  f"pixel images of {cfg.dataset}")
        size = min(self.image_size)
        if cfg.augment and cfg.cutout > size:
            raise DataConfigError(f"data config: cutout {cfg.cutout} exceeds the {size}-pixel images of {cfg.dataset}")
        self.train_indices = training_subset(self.info.train_count, cfg.train_subset, cfg.train_subset_seed)
        search_train, search_val = search_split(len(self.train_indices), cfg.search_portion, seed)
        self.search_train_indices = self.train_indices[search_train]
        self.search_val_indices = self.train_indices[search_val]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the batches the loaders yield: the stored size, or (crop_size, crop_size)."""
        crop = self.cfg.crop_size
        return (crop, crop) if crop is not None else self.info.image_size

    @functools.cached_property
    def search_train(self) -> EpochLoader:
        return self._build("search_train", "train", self.search_train_indices, training=True)

    @functools.cached_property
    def search_val(self) -> EpochLoader:
        return self._build("search_val", "train", self.search_val_indices, training=False, shuffle=False)

    @functools.cached_property
    def arch_val(self) -> EpochLoader:
        """search_val for the architecture steps (DARTS's valid queue, read by ``next(iter(valid_queue))``
        at every step): training batch size and augmentation, each batch ``batch_size`` distinct samples
        drawn afresh from the whole split, seeded by (seed, rank, epoch); as many batches per epoch as
        search_val holds full batches per rank."""
        return self._build("arch_val", "train", self.search_val_indices, training=True, draw=True)

    @functools.cached_property
    def train(self) -> EpochLoader:
        return self._build("train", "train", self.train_indices, training=True)

    @functools.cached_property
    def test(self) -> EpochLoader:
        indices = np.arange(self.info.test_count, dtype=np.int64)
        return self._build("test", "test", indices, training=False, shuffle=False, equal_shards=False)

    def _build(self, role: str, split: str, indices: np.ndarray, *, training: bool, shuffle: bool = True,
               equal_shards: bool = True, draw: bool = False) -> EpochLoader:
        cfg = self.cfg
        batch_size = cfg.batch_size if training else (cfg.eval_batch_size or cfg.batch_size)
        plan = ShardPlan(indices, self.seed, _STREAMS[role], self.rank, self.world_size, shuffle, equal_shards,
                         draw_batch=batch_size if draw else 0)
        drop_last = cfg.drop_last if training else False
        if plan.shard_size() == 0 or (drop_last and plan.shard_size() < batch_size):
            raise DataConfigError(f"data config: {role} has {plan.shard_size()} samples per rank, fewer than one "
                                  f"batch of {batch_size}; lower the batch size or use more data")
        common = dict(batch_size=batch_size, drop_last=drop_last, device=self.device,
                      augmentation=cfg.training_augmentation() if training else cfg.evaluation_augmentation())
        if self.backend == "ffcv":
            from data.ffcv_loader import FfcvLoader  # lazy: ffcv (numba, cv2) only when used

            return FfcvLoader(self._betons[split], plan, self.info, num_workers=cfg.num_workers,
                              os_cache=cfg.os_cache, **common)
        from data.memory_loader import DeviceArrays, MemoryLoader

        if split not in self._device_arrays:  # one upload per split, shared by the loaders reading it
            self._device_arrays[split] = DeviceArrays(self._arrays[split], self.device)
        return MemoryLoader(self._device_arrays[split], plan, self.info, **common)


def training_subset(train_count: int, size: int | None, seed: int | None) -> np.ndarray:
    """The training images a job uses (sorted int64 indices): all, the first ``size``, or ``size`` of them
    drawn without replacement from a generator seeded by ``seed`` alone."""
    if size is None or size >= train_count:
        return np.arange(train_count, dtype=np.int64)
    if seed is None:
        return np.arange(size, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, SUBSET_STREAM]).choice(train_count, size, replace=False)).astype(np.int64)


def build_loaders(cfg: DataConfig, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                  device: torch.device) -> Loaders:
    """The job's loaders for this rank (see :class:`Loaders`); the search split depends on ``seed`` only."""
    return Loaders(cfg, rank=rank, world_size=world_size, seed=seed, device=device)

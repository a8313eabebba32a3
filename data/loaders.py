"""The loader factory every CLI uses: :class:`DataConfig` in, :class:`Loaders` out.

    config = DataConfig(dataset="cifar10", beton_dir="betons", batch_size=256)   # the global batch
    loaders = build_loaders(config.per_rank(world), rank=rank, world_size=world, seed=seed, device=device)

``build_loaders`` takes the config as this rank loads it: the caller splits the global batch once
(:meth:`DataConfig.per_rank`); a stage-A member, which trains alone, passes the global config and world 1.
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

import numpy as np
import torch

from data.batch_stream import BatchStream
from data.beton import metadata_path, read_metadata, verify_betons
from data.epoch_loader import Augmentation, EpochLoader
from data.config import DataConfig
from data.errors import DataConfigError, DataError
from data.ffcv_threads import load_ffcv
from data.info import NO_FLIP_DATASETS, ArrayDataset, DatasetInfo, info_from_arrays
from data.readers import read_dataset
from data.splits import ShardPlan, search_split

__all__ = ["DataConfig", "Loaders", "build_loaders", "BatchStream", "ffcv_available"]

# Random streams of the five loaders (data.splits.ShardPlan.stream).
_STREAMS = {"search_train": 1, "search_val": 2, "train": 3, "test": 4, "arch_val": 5}
SUBSET_STREAM = 6  # the random stream of a seeded training subset


def training_augmentation(cfg: DataConfig) -> Augmentation:
    """The augmentation of the training loaders (none but the evaluation crop without ``cfg.augment``)."""
    if not cfg.augment:
        return evaluation_augmentation(cfg)
    flip = cfg.dataset not in NO_FLIP_DATASETS if cfg.flip is None else bool(cfg.flip)
    jitter = tuple(float(v) for v in cfg.color_jitter) if cfg.color_jitter is not None else None
    return Augmentation(flip=flip, translate=cfg.translate, cutout=cfg.cutout, cutout_inside=bool(cfg.cutout_inside),
                        resized_crop=cfg.crop_size or 0, color_jitter=jitter)


def evaluation_augmentation(cfg: DataConfig) -> Augmentation:
    """The evaluation loaders' only transform: the centre crop, if any."""
    return Augmentation(center_crop=cfg.crop_size or 0)


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
        try:
            cfg.validate()
        except DataConfigError as error:
            raise error.with_prefix("data") from None
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
                      augmentation=training_augmentation(cfg) if training else evaluation_augmentation(cfg))
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
    """The job's loaders for this rank (see :class:`Loaders`); the search split depends on ``seed`` only.

    ``cfg.batch_size`` is the batch this rank loads: pass ``config.per_rank(world_size)`` for data-parallel
    training (the global batch split once, by the caller)."""
    return Loaders(cfg, rank=rank, world_size=world_size, seed=seed, device=device)

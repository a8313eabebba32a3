"""A synthetic stand-in for CIFAR-10 where the real one is absent: CIFAR-shaped arrays and .beton files.

    write_synthetic_betons(Path("work/betons"), train_count=50000, test_count=10000)
    # then: search_evolutionary.py --set data.beton_dir=work/betons   (data set 'cifar10', the search's default)

Same shapes as the real data set (32x32x3 uint8 images, 10 classes, 50,000 + 10,000 by default), written
under the name ``cifar10`` so every loader and the search run exactly as on CIFAR-10, and a benchmark's
timings are CIFAR-10's. The pixels are not CIFAR's: an image of class c is class c's mean colour (drawn
once from the seed) plus uniform noise in [-noise, noise], so a network learns something and accuracies
move, but they mean nothing. The metadata says so: ``sources`` is ``{"synthetic": ...}`` and ``settings``
holds ``"synthetic": true`` (so data/write_ffcv.py rewrites the folder with the real data, never skips it).
The real sources cannot be imitated: readers check CIFAR's published MD5s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data.beton import write_splits
from data.info import ArrayDataset

CLASSES = [f"class_{i}" for i in range(10)]


def synthetic_cifar10(train_count: int = 50000, test_count: int = 10000, seed: int = 0,
                      noise: int = 60) -> dict[str, ArrayDataset]:
    """{"train": ..., "test": ...}: uint8 images (N, 32, 32, 3) and int64 labels (N,), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(len(CLASSES), 3))
    source = {"synthetic": f"seed={seed}, noise={noise}"}

    def split(count: int) -> ArrayDataset:
        labels = rng.integers(0, len(CLASSES), size=count)
        images = colours[labels][:, None, None, :] + rng.integers(-noise, noise + 1, size=(count, 32, 32, 3))
        return ArrayDataset(np.clip(images, 0, 255).astype(np.uint8), labels, list(CLASSES), dict(source))

    return {"train": split(train_count), "test": split(test_count)}


def write_synthetic_betons(out_dir: str | Path, train_count: int = 50000, test_count: int = 10000,
                           seed: int = 0, num_workers: int = -1, log=print) -> dict:
    """Write :func:`synthetic_cifar10` as cifar10_{train,test}.beton + cifar10_metadata.json into ``out_dir``."""
    settings = {"dataset": "cifar10", "synthetic": True, "seed": seed, "train_count": train_count,
                "test_count": test_count}
    return write_splits("cifar10", synthetic_cifar10(train_count, test_count, seed), out_dir, settings,
                        num_workers=num_workers, log=log)

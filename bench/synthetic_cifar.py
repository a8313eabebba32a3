"""A synthetic stand-in for CIFAR-10 where the real one is absent: the extracted ``cifar-10-batches-py/`` layout.

    write_synthetic_cifar10(Path("data"), train_count=50000, test_count=10000)
    # then: python data/write_ffcv.py --data-dir data --out betons   (dataset cifar10, the search's default)

Same shapes and file layout as the real data set (32x32x3 uint8 images, 10 classes, five training batches,
one test batch, ``batches.meta``), so every reader, writer and loader runs exactly as on CIFAR-10 and a
benchmark's timings are CIFAR-10's. The pixels are not CIFAR's: image i of class c is class c's mean colour
(drawn once from the seed) plus uniform noise in [-noise, noise], so a network can learn something and
accuracies move, but they mean nothing. The batches are plain pickles of dicts, lists, bytes and uint8
arrays, which data.safe_pickle's restricted unpickler reads.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = 5


def _batch(rng: np.random.Generator, colours: np.ndarray, count: int, noise: int) -> dict:
    labels = rng.integers(0, len(colours), size=count)
    images = colours[labels][:, None, None, :] + rng.integers(-noise, noise + 1, size=(count, 32, 32, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    # CIFAR's row layout: 1024 red, then 1024 green, then 1024 blue values per image
    return {b"batch_label": b"synthetic", b"labels": [int(label) for label in labels],
            b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(count, -1))}


def write_synthetic_cifar10(root: str | Path, train_count: int = 50000, test_count: int = 10000, seed: int = 0,
                            noise: int = 60) -> Path:
    """Write ``root/cifar-10-batches-py/`` (train_count images over 5 batches, test_count in test_batch).

    Returns the folder to pass as ``--data-dir`` (``root``). Existing files are overwritten.
    """
    if train_count < TRAIN_BATCHES or test_count < 1:
        raise ValueError(f"need at least {TRAIN_BATCHES} training and 1 test image, got {train_count}, {test_count}")
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(10, 3))
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [len(part) for part in np.array_split(np.arange(train_count), TRAIN_BATCHES)]
    members = {f"data_batch_{i + 1}": _batch(rng, colours, size, noise) for i, size in enumerate(sizes)}
    members["test_batch"] = _batch(rng, colours, test_count, noise)
    members["batches.meta"] = {b"label_names": [f"class_{i}".encode() for i in range(10)],
                               b"num_cases_per_batch": sizes[0]}
    for name, record in members.items():
        (folder / name).write_bytes(pickle.dumps(record, protocol=2))
    return Path(root)

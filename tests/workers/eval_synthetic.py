"""Tiny data and configs for the evaluator's tests (imported by tests/test_eval_*.py)."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"

#: A network and schedule small enough for a few CPU seconds per epoch.
TINY = ["network.channels=4", "network.layers=3", "data.batch_size=16", "data.eval_batch_size=64",
        "data.num_workers=1", "device=cpu", "threads=1"]


def write_cifar_like_folder(root: Path, classes: int = 10, train_per_class: int = 8, test_per_class: int = 3,
                            seed: int = 0, noise: int = 30) -> Path:
    """An image folder of CIFAR-shaped (32x32 RGB) PNGs: root/{train,test}/<class>/<i>.png.

    Each class has its own mean colour plus uniform noise in [-noise, noise], so a network can learn
    something in a few steps (a larger ``noise`` makes the classes overlap).
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(classes, 3))
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in range(classes):
            folder = root / split / f"class_{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                noise_pixels = rng.integers(-noise, noise + 1, size=(32, 32, 3))
                pixels = np.clip(colours[label] + noise_pixels, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

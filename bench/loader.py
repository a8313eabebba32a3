"""Benchmark: images per second of the FFCV loader against a plain torch DataLoader baseline.

Both read the same images and apply the same augmentation (flip, translate by up to 2 px, cutout, then
normalise to float32 (N, C, H, W)): FFCV decoding a .beton, then the seeded torch batch ops of
data/augment.py (in the main thread, one torch thread here), the baseline with per-sample numpy
augmentation in a torch DataLoader over in-memory numpy arrays. Data: 50,000
random CIFAR-shaped images (32x32x3), and the real MNIST training set from ../shared/datasets/mnist.
Prints both rates and their ratio for the first epoch (FFCV compiles with numba then) and the later ones.

    python bench/loader.py                       # defaults: both data sets, 3 epochs, batch 256, 2 workers
    python bench/loader.py --datasets cifar --epochs 4 --batch-size 512
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.epoch_loader import Augmentation  # noqa: E402
from data.info import ArrayDataset, info_from_arrays  # noqa: E402
from data.readers import read_dataset  # noqa: E402
from data.splits import ShardPlan  # noqa: E402
from common.errors import cli_entry  # noqa: E402


class NumpyAugmentedImages(torch.utils.data.Dataset):
    """The baseline: one sample at a time, augmented in numpy, as a classic torchvision-style pipeline does."""

    def __init__(self, dataset: ArrayDataset, augmentation: Augmentation, mean, std):
        self.images, self.labels, self.augmentation = dataset.images, dataset.labels, augmentation
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.fill = np.rint(self.mean).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image, settings = self.images[index], self.augmentation
        height, width = image.shape[:2]
        if settings.flip and random.random() < 0.5:
            image = image[:, ::-1]
        if settings.translate:
            pad = settings.translate
            padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
            top, left = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
            image = padded[top:top + height, left:left + width]
        if settings.cutout:
            image = image.copy()
            top, left = random.randint(0, height - settings.cutout), random.randint(0, width - settings.cutout)
            image[top:top + settings.cutout, left:left + settings.cutout] = self.fill
        normalised = (image.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))), int(self.labels[index])


def time_epochs(loader, epochs: int) -> list[float]:
    """Images per second of each epoch of ``loader`` (every batch is pulled and its images touched)."""
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for images, _ in loader:
            count += images.shape[0]
        rates.append(count / (time.perf_counter() - start))
    return rates


def bench_one(name: str, dataset: ArrayDataset, augmentation: Augmentation, args, work_dir: Path) -> None:
    from data.beton import write_beton
    from data.ffcv_loader import FfcvLoader

    info = info_from_arrays(name, dataset, 0)
    beton = work_dir / f"bench_{name}.beton"
    write_beton(dataset, beton, num_workers=args.workers)
    plan = ShardPlan(np.arange(len(dataset), dtype=np.int64), seed=0, stream=0)
    ffcv_loader = FfcvLoader(beton, plan, info, batch_size=args.batch_size, drop_last=True, augmentation=augmentation,
                             device=torch.device("cpu"), num_workers=args.workers, os_cache=args.os_cache,
                             batches_ahead=args.batches_ahead)
    baseline = torch.utils.data.DataLoader(
        NumpyAugmentedImages(dataset, augmentation, info.mean, info.std), batch_size=args.batch_size, shuffle=True,
        drop_last=True, num_workers=args.workers, persistent_workers=True)
    ffcv_rates = time_epochs(ffcv_loader, args.epochs)
    baseline_rates = time_epochs(baseline, args.epochs)
    later = slice(1, None)
    print(f"\n{name}: {len(dataset)} images {dataset.images.shape[1:]}, batch {args.batch_size}, {args.workers} workers, "
          f"augmentation {augmentation}")
    print("  per epoch (img/s)  FFCV: " + ", ".join(f"{r:,.0f}" for r in ffcv_rates)
          + " | DataLoader: " + ", ".join(f"{r:,.0f}" for r in baseline_rates))
    print(f"  first epoch       FFCV {ffcv_rates[0]:>10,.0f}  DataLoader {baseline_rates[0]:>10,.0f}  "
          f"ratio {ffcv_rates[0] / baseline_rates[0]:.2f}x")
    if args.epochs > 1:
        ffcv_later, baseline_later = np.mean(ffcv_rates[later]), np.mean(baseline_rates[later])
        print(f"  after epoch 1     FFCV {ffcv_later:>10,.0f}  DataLoader {baseline_later:>10,.0f}  "
              f"ratio {ffcv_later / baseline_later:.2f}x")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/loader.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("cifar", "mnist"), default=["cifar", "mnist"],
                        help="which data to time: 'cifar' = random CIFAR-shaped images, 'mnist' = the real MNIST "
                             "training set from --mnist-dir")
    parser.add_argument("--num-images", type=int, default=50000, help="how many random CIFAR-shaped images")
    parser.add_argument("--mnist-dir", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/mnist"),
                        help="folder with the MNIST IDX files (default: ../shared/datasets/mnist from the repo root)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per loader (the first includes FFCV's "
                        "compilation and the baseline's worker start-up)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch, both loaders")
    parser.add_argument("--workers", type=int, default=2, help="FFCV threads and DataLoader worker processes")
    parser.add_argument("--batches-ahead", type=int, default=3, help="FFCV: batches prepared in advance")
    parser.add_argument("--no-os-cache", dest="os_cache", action="store_false",
                        help="FFCV: use its process cache instead of the OS page cache")
    parser.add_argument("--cutout", type=int, default=8, help="cutout square side for CIFAR (MNIST: half of it)")
    parser.add_argument("--work-dir", default=None, help="where to write the temporary .beton files (default: a "
                        "temporary folder, removed afterwards)")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        for name in args.datasets:
            if name == "cifar":
                rng = np.random.default_rng(0)
                dataset = ArrayDataset(rng.integers(0, 256, (args.num_images, 32, 32, 3), dtype=np.uint8),
                                       rng.integers(0, 10, args.num_images), [str(i) for i in range(10)])
                augmentation = Augmentation(flip=True, translate=2, cutout=args.cutout)
            else:
                if not Path(args.mnist_dir).is_dir():
                    print(f"\nmnist: skipped, {args.mnist_dir} not found")
                    continue
                dataset = read_dataset("mnist", args.mnist_dir, "train")
                augmentation = Augmentation(flip=False, translate=2, cutout=args.cutout // 2)
            bench_one(name, dataset, augmentation, args, Path(folder))


if __name__ == "__main__":
    main()

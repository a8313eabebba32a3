"""FFCV: .beton round trips, checksum refusal with exit 2, FFCV = in-memory batches (augmented too), two torchrun ranks."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv", reason="ffcv is not installed (see scripts/install_ffcv.sh)")

from data.beton import beton_path, write_dataset  # noqa: E402
from data.errors import DataError  # noqa: E402
from data.loaders import BatchStream, DataConfig, build_loaders  # noqa: E402
from data.readers import read_dataset  # noqa: E402
from tests.workers.eval_synthetic import write_cifar_like_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_betons(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("betons")
    write_dataset("digits", None, out, num_workers=1, log=lambda message: None)
    return out


def read_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every stored pixel and label of a .beton, in file order, with no transform: ((N, H, W, C), (N,))."""
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(path), batch_size=1000, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False)
    images, labels = zip(*[(x.numpy().copy(), y.numpy().reshape(-1).copy()) for x, y in loader])
    return np.concatenate(images), np.concatenate(labels)


def assert_round_trip(out: Path, name: str, source_dir) -> None:
    for split in ("train", "test"):
        original = read_dataset(name, source_dir, split)
        images, labels = read_raw(beton_path(out, name, split))
        assert images.dtype == np.uint8
        np.testing.assert_array_equal(images, original.images)  # grey: one stored channel, (N, H, W, 1)
        np.testing.assert_array_equal(labels, original.labels)
    meta = json.loads((out / f"{name}_metadata.json").read_text())
    assert meta["stored_channels"] == meta["in_channels"] == original.images.shape[-1]
    assert meta["image_field"] == ("rgb_image" if meta["stored_channels"] == 3 else "ndarray")


def test_write_then_read_returns_exactly_the_written_pixels(digits_betons):
    assert_round_trip(digits_betons, "digits", None)
    meta = json.loads((digits_betons / "digits_metadata.json").read_text())
    assert meta["in_channels"] == 1 and meta["stored_channels"] == 1 and meta["info"]["train_count"] == 1438


def test_ffcv_and_memory_loaders_give_the_same_batches(digits_betons):
    cfg = dict(dataset="digits", beton_dir=str(digits_betons), batch_size=64, eval_batch_size=100, augment=False,
               num_workers=1)
    ffcv = build_loaders(DataConfig(backend="auto", **cfg), seed=3, device=CPU)
    memory = build_loaders(DataConfig(backend="memory", **cfg), seed=3, device=CPU)
    assert ffcv.backend == "ffcv" and memory.info == ffcv.info
    for role in ("search_val", "search_train"):
        ffcv_loader, memory_loader = getattr(ffcv, role), getattr(memory, role)
        ffcv_loader.set_epoch(2)
        memory_loader.set_epoch(2)
        pairs = list(zip(ffcv_loader, memory_loader))
        assert len(pairs) == len(memory_loader) > 0
        for (ffcv_x, ffcv_y), (memory_x, memory_y) in pairs:
            assert ffcv_x.shape == memory_x.shape and ffcv_x.dtype == torch.float32
            assert torch.equal(ffcv_x, memory_x) and torch.equal(ffcv_y, memory_y)

    # a stream that stops mid-epoch leaves no FFCV worker thread behind
    threads_before = threading.active_count()
    stream = BatchStream(ffcv.search_val)
    for _ in range(3):
        list(stream.take(2))
        stream.reset(0)
    stream.close()
    assert threading.active_count() == threads_before


AUGMENTED = dict(batch_size=64, eval_batch_size=100, flip=True, translate=2, cutout=3, num_workers=1)


def epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def assert_same_batches(first: list, second: list) -> None:
    assert len(first) == len(second) > 0
    for (x1, y1), (x2, y2) in zip(first, second):
        assert x1.dtype == x2.dtype == torch.float32 and x1.shape == x2.shape
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_augmented_ffcv_batches_equal_the_memory_loaders_bit_for_bit(digits_betons):
    """Flip, translate and cutout come from the same seeded generator on both backends, rank by rank."""
    for rank in (0, 1):
        ffcv = build_loaders(DataConfig(dataset="digits", beton_dir=str(digits_betons), backend="ffcv", **AUGMENTED),
                             rank=rank, world_size=2, seed=4, device=CPU)
        memory = build_loaders(DataConfig(dataset="digits", backend="memory", **AUGMENTED), rank=rank, world_size=2,
                               seed=4, device=CPU)
        for role in ("search_train", "train"):
            for epoch in (0, 3):
                assert_same_batches(epoch_batches(getattr(ffcv, role), epoch),
                                    epoch_batches(getattr(memory, role), epoch))
        # the augmentation really ran: the same samples un-augmented differ
        plain = build_loaders(DataConfig(dataset="digits", backend="memory", **{**AUGMENTED, "augment": False}),
                              rank=rank, world_size=2, seed=4, device=CPU)
        augmented, unaugmented = epoch_batches(memory.train, 3), epoch_batches(plain.train, 3)
        assert all(torch.equal(a[1], b[1]) for a, b in zip(augmented, unaugmented))
        assert not any(torch.equal(a[0], b[0]) for a, b in zip(augmented, unaugmented))


def test_crops_and_colour_jitter_on_ffcv_equal_the_memory_loaders(tmp_path):
    """DARTS's ImageNet augmentation (RandomResizedCrop, flip, ColorJitter; CentreCrop for evaluation) runs
    in the same seeded torch ops on FFCV as in memory: RGB image-folder data, both backends, bit for bit."""
    folder = write_cifar_like_folder(tmp_path / "images", classes=4, train_per_class=8, test_per_class=2)
    write_dataset("imagefolder", folder, tmp_path / "betons", max_resolution=32, num_workers=1, log=lambda m: None)
    settings = dict(dataset="imagefolder", data_dir=str(folder), beton_dir=str(tmp_path / "betons"), batch_size=8,
                    crop_size=24, color_jitter=[0.4, 0.4, 0.4, 0.2], flip=True, translate=2, cutout=4, num_workers=1)
    ffcv, memory = (build_loaders(DataConfig(backend=backend, **settings), seed=5, device=CPU)
                    for backend in ("ffcv", "memory"))
    assert ffcv.backend == "ffcv" and memory.backend == "memory"
    for role, epoch in (("search_train", 0), ("search_train", 2), ("search_val", 0)):
        ffcv_batches = epoch_batches(getattr(ffcv, role), epoch)
        assert ffcv_batches[0][0].shape[-2:] == (24, 24)
        assert_same_batches(ffcv_batches, epoch_batches(getattr(memory, role), epoch))


def test_two_ffcv_loaders_with_one_seed_give_identical_augmented_batches(digits_betons):
    """Same seed: the same batches in a second loader (a rerun), and again when an epoch is replayed;
    another epoch or another seed draws other augmentations."""
    def loaders(seed):
        return build_loaders(DataConfig(dataset="digits", beton_dir=str(digits_betons), backend="ffcv", **AUGMENTED),
                             seed=seed, device=CPU)

    first, second, other_seed = loaders(7), loaders(7), loaders(8)
    batches = epoch_batches(first.search_train, 1)
    assert_same_batches(batches, epoch_batches(second.search_train, 1))
    assert_same_batches(batches, epoch_batches(first.search_train, 1))  # the epoch replayed
    assert not torch.equal(batches[0][0], epoch_batches(first.search_train, 2)[0][0])
    assert not torch.equal(batches[0][0], epoch_batches(other_seed.search_train, 1)[0][0])
    # a stream restored mid-epoch gives the same next batch as before, augmentation included
    stream = BatchStream(second.search_train, start_epoch=1)
    list(stream.take(2))
    position, expected = stream.state_dict(), stream.next_batch()
    stream.load_state_dict(position)
    following = stream.next_batch()
    stream.close()
    assert torch.equal(following[0], expected[0]) and torch.equal(following[0], batches[2][0])


def test_leaving_an_epoch_early_stops_ffcvs_thread_at_once(digits_betons):
    """Stopping within batches_ahead (3) batches of the end used to block FFCV's thread on its full output
    queue until the 10 s join timeout, and any other early stop cost its 0.5 s poll: once per perturb-val
    (its K fine-tune batches) in a search."""
    loaders = build_loaders(DataConfig(dataset="digits", beton_dir=str(digits_betons), backend="ffcv", batch_size=32,
                                       train_subset=480, num_workers=1), seed=0, device=CPU)
    loader = loaders.search_train
    assert len(loader) == 7
    list(BatchStream(loader).take(1))  # FFCV compiles its pipeline on the first epoch: not timed
    threads_before = threading.active_count()
    started = time.monotonic()
    for taken in range(1, len(loader)):
        with BatchStream(loader, start_epoch=taken) as stream:
            assert len(list(stream.take(taken))) == taken
    assert time.monotonic() - started < 2.5, "six early stops took too long"
    assert threading.active_count() == threads_before


def test_ffcv_epochs_leave_torchs_thread_count_alone(digits_betons):
    """FFCV sets torch's thread count to num_workers in every epoch unless data.ffcv_threads stops it; the
    job's count (config ``threads``) must survive loading, and FFCV still gets its numba threads."""
    import numba
    from ffcv.pipeline.compiler import Compiler

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        loaders = build_loaders(DataConfig(dataset="digits", beton_dir=str(digits_betons), backend="ffcv",
                                           batch_size=64, num_workers=2), seed=0, device=CPU)
        assert len(list(loaders.search_train)) > 0
        assert torch.get_num_threads() == 3
        Compiler.set_num_threads(1)
        assert torch.get_num_threads() == 3 and numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_augmented_ffcv_train_loader_runs_across_epochs(digits_betons):
    loaders = build_loaders(DataConfig(dataset="digits", beton_dir=str(digits_betons), batch_size=128, cutout=3,
                                       flip=True, num_workers=1), seed=0, device=CPU)
    batches = list(BatchStream(loaders.train).take(len(loaders.train) + 2))
    assert len(batches) == len(loaders.train) + 2
    images, labels = batches[-1]
    assert images.shape == (128, 1, 8, 8) and labels.dtype == torch.int64
    assert torch.isfinite(images).all() and images.is_contiguous()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "data/write_ffcv.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered"])
def test_damaged_beton_gives_one_line_and_exit_2(digits_betons, tmp_path, damage):
    out = tmp_path / "betons"
    shutil.copytree(digits_betons, out)
    target = beton_path(out, "digits", "train")
    payload = target.read_bytes()
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(payload[: len(payload) // 2])
    else:
        target.write_bytes(payload[:-100] + bytes(b ^ 0xFF for b in payload[-100:]))
    result = run_cli("--dataset", "digits", "--out", str(out), "--check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "digits_train.beton" in lines[0]
    assert {"missing": "not found", "truncated": "truncated", "altered": "checksum"}[damage] in lines[0]
    with pytest.raises(DataError, match="digits_train.beton"):
        build_loaders(DataConfig(dataset="digits", beton_dir=str(out), backend="ffcv"), device=CPU)


def test_mnist_round_trips_through_write_ffcv(tmp_path):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (only on the project's workplace, not in a fresh clone)")
    out = tmp_path / "betons"
    result = run_cli("--dataset", "mnist", "--data-dir", str(MNIST_DIR), "--out", str(out), "--num-workers", "2")
    assert result.returncode == 0, result.stderr
    assert_round_trip(out, "mnist", MNIST_DIR)
    meta = json.loads((out / "mnist_metadata.json").read_text())
    assert meta["info"]["train_count"] == 60000 and abs(meta["info"]["mean"][0] - 0.1307 * 255) < 0.1
    assert set(meta["sources"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    again = run_cli("--dataset", "mnist", "--data-dir", str(MNIST_DIR), "--out", str(out))
    assert again.returncode == 0 and "up to date" in again.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_torchrun_ranks_get_disjoint_shards(digits_betons, tmp_path):
    out = tmp_path / "shards.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "tests/workers/data_shards.py", "--out", str(out), "--beton-dir", str(digits_betons)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["split"] == ranks[1]["split"]  # the search split depends on the seed only
    split = set(ranks[0]["split"])
    for epoch in ("0", "1"):
        shard0, shard1 = (set(r["epochs"][epoch]) for r in ranks)
        assert not shard0 & shard1 and shard0 | shard1 <= split
        assert len(shard0) == len(shard1) == len(split) // 2 // 32 * 32
    assert ranks[0]["epochs"]["0"] != ranks[0]["epochs"]["1"]  # a new order each epoch
    assert all(r["labels_match"] and r["ffcv_match"] for r in ranks)

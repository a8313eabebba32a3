"""Readers: CIFAR archives (MD5 before unpickling, restricted unpickler), IDX files, digits, image folders."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from data.errors import DataError
from data.readers import read_cifar, read_dataset, read_idx
from data.safe_pickle import load_restricted


def _batch(rng, count: int, label_key: bytes, classes: int) -> tuple[dict, np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, size=count)
    # CIFAR layout: each row is 1024 red, 1024 green, 1024 blue values.
    record = {b"batch_label": b"fake", label_key: [int(v) for v in labels],
              b"data": images.transpose(0, 3, 1, 2).reshape(count, -1)}
    return record, images, labels


def _fake_cifar10(folder, rng, per_batch=3):
    """A tiny cifar-10-python.tar.gz with the real member names; returns (archive, train arrays, test arrays)."""
    members, train_images, train_labels = {}, [], []
    for i in range(1, 6):
        record, images, labels = _batch(rng, per_batch, b"labels", 10)
        members[f"data_batch_{i}"] = pickle.dumps(record, protocol=2)
        train_images.append(images)
        train_labels.append(labels)
    record, test_images, test_labels = _batch(rng, per_batch, b"labels", 10)
    members["test_batch"] = pickle.dumps(record, protocol=2)
    members["batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive, (np.concatenate(train_images), np.concatenate(train_labels)), (test_images, test_labels)


def test_cifar_archive_read_after_md5_check(tmp_path):
    archive, (train_x, train_y), (test_x, test_y) = _fake_cifar10(tmp_path, np.random.default_rng(0))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    train = read_cifar(tmp_path, "cifar10", "train", expected_md5=md5)
    test = read_cifar(tmp_path, "cifar10", "test", expected_md5=md5)
    np.testing.assert_array_equal(train.images, train_x)
    np.testing.assert_array_equal(train.labels, train_y)
    np.testing.assert_array_equal(test.images, test_x)
    np.testing.assert_array_equal(test.labels, test_y)
    assert train.classes == [f"c{i}" for i in range(10)]
    assert train.sources == {"cifar-10-python.tar.gz": "md5:" + md5}


def test_cifar_archive_with_wrong_md5_is_refused_before_unpickling(tmp_path):
    _fake_cifar10(tmp_path, np.random.default_rng(1))
    # the fake archive is not the published one: read_dataset checks the published MD5 and refuses
    with pytest.raises(DataError, match="MD5 .* expected c58f30108f718f92721af3b95e74349a"):
        read_dataset("cifar10", tmp_path, "train")


def _member_md5s(folder) -> dict[str, str]:
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_cifar_extracted_folder_is_read_after_each_files_md5(tmp_path):
    archive, (train_x, train_y), _ = _fake_cifar10(tmp_path, np.random.default_rng(2))
    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    folder = extracted / "cifar-10-batches-py"
    dataset = read_cifar(extracted, "cifar10", "train", member_md5=_member_md5s(folder))
    np.testing.assert_array_equal(dataset.images, train_x)
    np.testing.assert_array_equal(dataset.labels, train_y)
    # the published per-file MD5s are checked by default: these fake files fail before any unpickling
    with pytest.raises(DataError, match=r"data_batch_1 has MD5 .*, expected c99cafc152244af753f735de768cd75f"):
        read_dataset("cifar10", extracted, "train")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _RunsCode(marker)}, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_restricted(payload, "evil_batch")
    assert not marker.exists()
    # the same pickle placed in an extracted CIFAR folder is refused by its MD5, and by the unpickler
    # even when the MD5s given match it
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(payload)
    with pytest.raises(DataError, match="has MD5"):
        read_dataset("cifar10", tmp_path, "train")
    with pytest.raises(DataError, match="refusing"):
        read_cifar(tmp_path, "cifar10", "train", member_md5=_member_md5s(folder))
    assert not marker.exists()


def test_missing_sources_say_where_to_put_what(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz .* or pass --download"):
        read_dataset("cifar10", tmp_path, "train")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz"):
        read_dataset("fashion_mnist", tmp_path, "train")
    with pytest.raises(DataError, match=r"/train/<class>/"):
        read_dataset("imagefolder", tmp_path, "train")


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download https://ossci-datasets"):
        read_dataset("mnist", tmp_path, "train", download=True)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_idx_files_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    dataset = read_dataset("fashion_mnist", tmp_path, "test")
    np.testing.assert_array_equal(dataset.images[..., 0], images)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.classes[9] == "Ankle boot"
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images)[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")


def test_digits_split_is_fixed_disjoint_and_scaled():
    from sklearn.datasets import load_digits

    train, test = read_dataset("digits", None, "train"), read_dataset("digits", None, "test")
    assert len(train) == 1438 and len(test) == 359
    assert train.images.shape[1:] == (8, 8, 1) and train.images.max() == 255
    # train + test together are exactly scikit-learn's 1,797 samples, each once
    digits = load_digits()
    expected = sorted(np.rint(image * 255 / 16).astype(np.uint8).tobytes() + bytes([label])
                      for image, label in zip(digits.images, digits.target))
    got = sorted(image[..., 0].tobytes() + bytes([label]) for part in (train, test)
                 for image, label in zip(part.images, part.labels))
    assert got == expected
    np.testing.assert_array_equal(read_dataset("digits", None, "train").images, train.images)


def test_image_folder(tmp_path):
    from PIL import Image

    for split, count in (("train", 3), ("val", 2)):
        for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40 + i, 20), colour).save(folder / f"{i}.png")
    train = read_dataset("imagefolder", tmp_path, "train", image_size=16)
    test = read_dataset("imagefolder", tmp_path, "test", image_size=16)
    assert train.classes == ["cat", "dog"] and train.images.shape == (6, 16, 16, 3)
    assert test.images.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    assert (train.images[0] == (255, 0, 0)).all() and (train.images[-1] == (0, 0, 255)).all()

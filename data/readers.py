"""Read a data set into memory: CIFAR-10/100, MNIST, Fashion-MNIST, scikit-learn digits, image folders.

Every reader returns an :class:`data.info.ArrayDataset` (uint8 images (N, H, W, C), int64 labels). A
missing source raises :class:`data.errors.DataError` naming the files to put where (or ``--download``).
CIFAR batches are pickles: an archive is checked against its published MD5 before anything in it is
unpickled, and batches are only ever unpickled by :mod:`data.safe_pickle` (extracted folders have no
published checksum, so for them the restricted unpickler is the guard).
"""
from __future__ import annotations

import gzip
import hashlib
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data.errors import DataError
from data.info import ALL_DATASETS, ArrayDataset
from data.safe_pickle import load_restricted

Split = Literal["train", "test"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DEFAULT_FOLDER_IMAGE_SIZE = 32


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR variant comes from and how its python archive is laid out."""

    archive: str
    md5: str
    url: str
    folder: str  # the top folder inside the archive
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    meta_member: str
    label_key: bytes
    names_key: bytes


CIFAR_SOURCES = {
    "cifar10": CifarSource(
        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", b"labels", b"label_names"),
    "cifar100": CifarSource(
        "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
        ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names"),
}

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
IDX_CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
}


def read_dataset(name: str, data_dir: str | Path | None, split: Split, download: bool = False,
                 image_size: int | None = None) -> ArrayDataset:
    """Read split ``split`` of data set ``name`` from ``data_dir`` (downloading first when ``download``).

    name: cifar10 | cifar100 | mnist | fashion_mnist | digits | imagefolder. ``digits`` needs no
    data_dir. ``image_size`` applies to ``imagefolder`` only: every image is centre-cropped to a square
    and resized to image_size x image_size (default 32).
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return read_digits(split)
    if name not in ALL_DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(ALL_DATASETS)}")
    if data_dir is None:
        raise DataError(f"data set {name!r} needs a data directory (--data-dir DIR)")
    root = Path(data_dir).expanduser()
    if name in CIFAR_SOURCES:
        source = CIFAR_SOURCES[name]
        if download and not (root / source.archive).exists() and not (root / source.folder).is_dir():
            _download(source.url, root / source.archive)
        return read_cifar(root, name, split)
    if name in IDX_URLS:
        if download:
            for file_name in IDX_FILES[split]:
                if _find_idx(root, file_name) is None:
                    _download(IDX_URLS[name] + file_name + ".gz", root / (file_name + ".gz"))
        return read_idx_pair(root, name, split)
    if download:
        raise DataError("--download is not available for imagefolder: put the images in DIR/train/<class>/ "
                        "and DIR/test/<class>/ (or DIR/val/<class>/)")
    return read_image_folder(root, split, image_size or DEFAULT_FOLDER_IMAGE_SIZE)


# --- CIFAR ---------------------------------------------------------------------------------------------

def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_cifar(root: Path, name: str, split: Split, expected_md5: str | None = "published") -> ArrayDataset:
    """Read CIFAR-10/100 from ``root``/<archive>.tar.gz (MD5-checked) or the extracted ``root``/<folder>/.

    expected_md5: "published" (the default) checks the archive against REFERENCE section 8; a hex string
    checks against that digest instead (tests build their own small archives). It cannot be switched off.
    """
    source = CIFAR_SOURCES[name]
    md5 = source.md5 if expected_md5 == "published" else expected_md5
    if not md5:
        raise DataError("an archive is only read after an MD5 check; no expected MD5 given")
    root = Path(root)
    archive = root if root.is_file() else root / source.archive
    folder = root if (root / source.meta_member).is_file() else root / source.folder
    members = source.train_members if split == "train" else source.test_members
    if folder.is_dir():
        missing = [m for m in (*members, source.meta_member) if not (folder / m).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}: re-extract {source.archive} there")
        payloads = {m: (folder / m).read_bytes() for m in (*members, source.meta_member)}
        sources = {f"{source.folder}/{m}": "sha256:" + hashlib.sha256(p).hexdigest() for m, p in payloads.items()}
    elif archive.is_file():
        actual = file_md5(archive)
        if actual != md5:
            raise DataError(f"{archive} has MD5 {actual}, expected {md5}: the file is corrupt or not the official "
                            f"archive; delete it and download {source.url} again")
        payloads = _read_tar_members(archive, source.folder, (*members, source.meta_member))
        sources = {source.archive: "md5:" + actual}
    else:
        raise DataError(f"{name}: put {source.archive} (from {source.url}) or its extracted folder {source.folder}/ "
                        f"in {root}, or pass --download")
    meta = load_restricted(payloads[source.meta_member], f"{source.folder}/{source.meta_member}")
    try:
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[source.names_key]]
        images, labels = [], []
        for member in members:
            batch = load_restricted(payloads[member], f"{source.folder}/{member}")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[source.label_key], dtype=np.int64))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{name}: a batch in {root} is not a CIFAR batch ({error!r})") from None
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes, sources)


def _read_tar_members(archive: Path, folder: str, members: tuple[str, ...]) -> dict[str, bytes]:
    """Read named members straight from the archive (nothing is extracted to disk)."""
    wanted = {f"{folder}/{m}": m for m in members}
    payloads: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    payloads[wanted[info.name]] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{archive} is not a readable tar.gz ({error})") from None
    missing = [m for m in members if m not in payloads]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(f'{folder}/{m}' for m in missing)}")
    return payloads


# --- MNIST / Fashion-MNIST (IDX) -------------------------------------------------------------------

def _find_idx(root: Path, file_name: str) -> Path | None:
    for candidate in (root / file_name, root / (file_name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip or not): big-endian magic 0x00 0x00 0x08 ndim, ndim uint32 sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            payload = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = payload[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(payload[4:header_end], dtype=">u4"))
    count = int(np.prod(shape)) if shape else 0
    if len(shape) != ndim or len(payload) - header_end != count:
        raise DataError(f"{path}: holds {len(payload) - header_end} bytes of data, header says {shape}: truncated?")
    return np.frombuffer(payload, dtype=np.uint8, offset=header_end).reshape(shape)


def read_idx_pair(root: Path, name: str, split: Split) -> ArrayDataset:
    """Read ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]`` from ``root``."""
    image_name, label_name = IDX_FILES[split]
    paths = [_find_idx(root, image_name), _find_idx(root, label_name)]
    if None in paths:
        raise DataError(f"{name}: put {image_name}.gz and {label_name}.gz (from {IDX_URLS[name]}) in {root}, "
                        "or pass --download")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{name}: {paths[0].name} {images.shape} does not match {paths[1].name} {labels.shape}")
    sources = {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    return ArrayDataset(np.ascontiguousarray(images[..., None]), labels.astype(np.int64), IDX_CLASSES[name], sources)


# --- scikit-learn digits ---------------------------------------------------------------------------

def read_digits(split: Split) -> ArrayDataset:
    """scikit-learn's 8x8 digits (values 0..16) scaled to 0..255, split 80/20 by a fixed seeded permutation."""
    from sklearn.datasets import load_digits  # lazy: only the digits reader needs scikit-learn

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    test_count = int(round(len(images) * DIGITS_TEST_FRACTION))
    chosen = np.sort(order[test_count:] if split == "train" else order[:test_count])
    return ArrayDataset(np.ascontiguousarray(images[chosen]), digits.target[chosen].astype(np.int64),
                        [str(d) for d in range(10)], {"sklearn.datasets.load_digits": "builtin"})


# --- image folder ----------------------------------------------------------------------------------

def read_image_folder(root: Path, split: Split, image_size: int) -> ArrayDataset:
    """Read ``root``/train/<class>/*.jpg|png (test: ``root``/test or ``root``/val) as RGB image_size^2 images.

    Each image is centre-cropped to a square and resized with Pillow (area filter when shrinking). Class
    names are the sorted sub-folder names of ``root``/train, so train and test labels agree.
    """
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    train_dir = root / "train"
    split_dir = train_dir if split == "train" else next(
        (root / d for d in ("test", "val") if (root / d).is_dir()), root / "test")
    if not train_dir.is_dir() or not split_dir.is_dir():
        raise DataError(f"imagefolder: put images in {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg "
                        f"(or {root}/val/<class>/)")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    unknown = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name not in classes)
    if not classes or unknown:
        raise DataError(f"imagefolder: {train_dir} has no class folders" if not classes else
                        f"imagefolder: {split_dir} has classes not in {train_dir}: {', '.join(unknown)}")
    files = [(path, label) for label, name in enumerate(classes) if (split_dir / name).is_dir()
             for path in sorted((split_dir / name).iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"imagefolder: no {'/'.join(IMAGE_SUFFIXES)} images under {split_dir}/<class>/")
    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for row, (path, _) in enumerate(tqdm(files, desc=f"reading {split_dir}", leave=False, disable=len(files) < 1000)):
        try:
            with Image.open(path) as image:
                images[row] = np.asarray(_square_resize(image.convert("RGB"), image_size))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"imagefolder: cannot read {path} ({error})") from None
    labels = np.array([label for _, label in files], dtype=np.int64)
    return ArrayDataset(images, labels, classes, {str(split_dir): f"files:{len(files)}"})


def _square_resize(image, size: int):
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR)


# --- download --------------------------------------------------------------------------------------

def _download(url: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` via a temporary file (an interrupted download leaves no partial file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            for block in iter(lambda: response.read(1 << 20), b""):
                handle.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({error}); download it by hand into {target.parent}") from None
    partial.replace(target)

"""Read a data set into memory: CIFAR-10/100, MNIST, Fashion-MNIST, scikit-learn digits, image folders.

Every reader returns an :class:`data.info.ArrayDataset` (uint8 images (N, H, W, C), int64 labels). A
missing source raises :class:`data.errors.DataError` naming the files to put where (or ``--download``).
CIFAR batches are pickles: an archive, or each file of an extracted folder, is checked against its
published MD5 before anything in it is unpickled, and batches are only ever unpickled by
:mod:`data.safe_pickle`; what comes out must be uint8 images and integer labels (float data is refused,
never wrapped). IDX headers are checked against the file's size before any array is made, and downloads
go over https and are checked against the published MD5s before they are kept.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from data.errors import DataError
from data.info import ALL_DATASETS, ArrayDataset
from data.safe_pickle import load_restricted
from common.errors import short_repr

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
    member_md5: Mapping[str, str]  # file in the extracted folder -> its published MD5


# The archives' MD5s are REFERENCE section 8. The per-file MD5s of the extracted folders are the ones
# torchvision's datasets/cifar.py lists for the same official archives (CIFAR10.train_list, test_list and
# meta; CIFAR100 likewise): looked up there, not imported (torchvision is never imported here).
CIFAR_SOURCES = {
    "cifar10": CifarSource(
        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", b"labels", b"label_names",
        {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
         "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
         "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
         "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}),
    "cifar100": CifarSource(
        "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
        ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names",
        {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
         "meta": "7973b15100ade9c7d40fb424638fde48"}),
}
CIFAR_IMAGE_BYTES = 3 * 32 * 32
MAX_CIFAR_MEMBER_BYTES = 256 << 20  # the largest official file (CIFAR-100 train) is about 155 MB

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "fashion_mnist": "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"}
# MD5s of the published .gz files (as torchvision's datasets/mnist.py lists them for MNIST and FashionMNIST;
# Fashion-MNIST's README lists the same): a download is kept only when it matches.
IDX_MD5 = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion_mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}
MAX_IDX_BYTES = 256 << 20  # MNIST-like files hold under 50 MB; a larger header is refused before reading
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
            _download(source.url, root / source.archive, source.md5)
        return read_cifar(root, name, split)
    if name in IDX_URLS:
        if download:
            for file_name in IDX_FILES[split]:
                if _find_idx(root, file_name) is None:
                    gz_name = file_name + ".gz"
                    _download(IDX_URLS[name] + gz_name, root / gz_name, IDX_MD5[name][gz_name])
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


def read_cifar(root: Path, name: str, split: Split, expected_md5: str | None = "published",
               member_md5: Mapping[str, str] | str = "published") -> ArrayDataset:
    """Read CIFAR-10/100 from ``root``/<archive>.tar.gz or the extracted ``root``/<folder>/, MD5-checked.

    expected_md5: "published" (the default) checks the archive against REFERENCE section 8; a hex string
    checks against that digest instead. member_md5: likewise for the files of an extracted folder
    ("published": :data:`CIFAR_SOURCES`; or a mapping file name -> MD5). Tests build their own small
    archives and folders with these; the checks cannot be switched off.
    """
    source = CIFAR_SOURCES[name]
    md5 = source.md5 if expected_md5 == "published" else expected_md5
    member_sums = source.member_md5 if member_md5 == "published" else member_md5
    if not md5 or not isinstance(member_sums, Mapping):
        raise DataError("an archive is only read after an MD5 check; no expected MD5 given")
    root = Path(root)
    archive = root if root.is_file() else root / source.archive
    folder = root if (root / source.meta_member).is_file() else root / source.folder
    members = source.train_members if split == "train" else source.test_members
    if folder.is_dir():
        payloads = {m: _read_checked_member(folder / m, member_sums.get(m), source)
                    for m in (*members, source.meta_member)}
        sources = {f"{source.folder}/{m}": "md5:" + member_sums[m] for m in payloads}
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
    classes = _cifar_classes(meta, source)
    images, labels = [], []
    for member in members:
        where = f"{source.folder}/{member}"
        batch = load_restricted(payloads[member], where)
        if not isinstance(batch, dict):
            raise DataError(f"{where} holds a {type(batch).__name__}, not a CIFAR batch (a dict)")
        data = _cifar_images(batch.get(b"data"), where)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_integer_labels(batch.get(source.label_key), len(data), f"{where} {source.label_key!r}"))
    return ArrayDataset(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes, sources)


def _read_checked_member(path: Path, md5: str | None, source: CifarSource) -> bytes:
    """The bytes of one file of an extracted CIFAR folder, after its MD5 matched (read once: what was
    checked is what gets unpickled)."""
    if not path.is_file():
        raise DataError(f"{path.parent} lacks {path.name}: re-extract {source.archive} there")
    if md5 is None:
        raise DataError(f"{path}: no published MD5 is known for this file, so it is not read")
    size = path.stat().st_size
    if size > MAX_CIFAR_MEMBER_BYTES:
        raise DataError(f"{path} has {size} bytes, more than any official CIFAR file: re-extract {source.archive}")
    payload = path.read_bytes()
    actual = hashlib.md5(payload).hexdigest()
    if actual != md5:
        raise DataError(f"{path} has MD5 {actual}, expected {md5}: it is not the official file; re-extract "
                        f"{source.archive} (from {source.url}) there")
    return payload


def _cifar_classes(meta: Any, source: CifarSource) -> list[str]:
    where = f"{source.folder}/{source.meta_member}"
    if not isinstance(meta, dict):
        raise DataError(f"{where} holds a {type(meta).__name__}, not the CIFAR meta dict")
    names = meta.get(source.names_key)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{where} has no list of class names under {source.names_key!r}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _cifar_images(data: Any, where: str) -> np.ndarray:
    """``data`` as CIFAR stores it: uint8 (N, 3072); anything else (float, other shapes) is refused."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: b'data' is a {kind}, not uint8 pixels")
    if data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES or not len(data):
        raise DataError(f"{where}: b'data' has shape {data.shape}, not (N, {CIFAR_IMAGE_BYTES})")
    return data


def _integer_labels(labels: Any, count: int, where: str) -> np.ndarray:
    """``count`` non-negative integer labels (a list of ints or an integer array) as int64."""
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, list) and all(type(v) is int and 0 <= v < 2**31 for v in labels)
    if not ok or len(labels) != count:
        raise DataError(f"{where}: expected {count} integer labels, got {short_repr(labels)}")
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: negative labels")
    return labels


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
    """Parse an IDX file (gzip or not): big-endian magic 0x00 0x00 0x08 ndim, ndim uint32 sizes, uint8 data.

    The header is checked before the data is read: at least one dimension, none empty, and exactly
    prod(sizes) bytes of data after it (at most :data:`MAX_IDX_BYTES`), so a lying header is one clear error.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
            ndim = head[3]
            if ndim == 0:
                raise DataError(f"{path}: an IDX header with no dimensions")
            sizes = handle.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            shape = tuple(int(v) for v in np.frombuffer(sizes, dtype=">u4"))
            count = math.prod(shape)  # Python ints: no wrap-around
            if count == 0:
                raise DataError(f"{path}: the header says {shape}: no data")
            if count > MAX_IDX_BYTES:
                raise DataError(f"{path}: the header says {shape}, {count} bytes: more than an IDX data set here "
                                f"may hold ({MAX_IDX_BYTES})")
            data = handle.read(count + 1)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: unreadable ({error})") from None
    if len(data) != count:
        raise DataError(f"{path}: holds {'more than ' if len(data) > count else ''}{min(len(data), count)} "
                        f"bytes of data, header says {shape} ({count}): truncated or not an IDX file?")
    return np.frombuffer(data, dtype=np.uint8, count=count).reshape(shape)


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
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError,
                EOFError) as error:  # Pillow reports some broken files as SyntaxError / ValueError
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

def _download(url: str, target: Path, md5: str) -> None:
    """Fetch ``url`` to ``target`` via a temporary file, kept only when whole and matching ``md5``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                handle.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({error}); download it by hand into {target.parent}") from None
    if digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"the download of {url} has MD5 {digest.hexdigest()}, expected {md5}: not kept; "
                        f"download it by hand into {target.parent}")
    partial.replace(target)

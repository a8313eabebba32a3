"""FFCV .beton files and their metadata JSON: writing them atomically, and checking them before loading.

Layout in an output folder for data set NAME: ``NAME_train.beton``, ``NAME_test.beton`` and
``NAME_metadata.json`` (classes, counts, image shape, channel mean/std, source checksums, and the sha256
and size of each .beton). The metadata is written last, so its presence means both .beton files are whole.

Image field: RGB images go to FFCV's RGBImageField (raw, 3 channels); grey images to an NDArrayField of
uint8 (H, W, 1), since RGBImageField needs 3 channels and replicating grey would make every loader step
move 3x the bytes. The metadata names the field kind (``image_field``) and ``stored_channels``. Pixels are
stored raw (no JPEG), so reading gives back exactly what was written.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from data.errors import DataError
from data.ffcv_threads import load_ffcv
from common.atomic import parse_json, write_json_atomically
from common.errors import short_repr
from data.info import ArrayDataset, DatasetInfo, info_from_arrays
from data.readers import read_dataset

METADATA_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
SPLITS = ("train", "test")


def beton_path(out_dir: str | Path, name: str, split: str) -> Path:
    return Path(out_dir) / f"{name}_{split}.beton"


def metadata_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}_metadata.json"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


#: Field kinds of the ``image`` field, as recorded in the metadata under ``image_field``.
RGB_IMAGE_FIELD, NDARRAY_FIELD = "rgb_image", "ndarray"


def image_field_kind(channels: int) -> str:
    """The FFCV field an image with ``channels`` channels is stored in: RGBImageField for 3, else NDArrayField."""
    return RGB_IMAGE_FIELD if channels == 3 else NDARRAY_FIELD


def stored_image_layout(path: str | Path) -> tuple[str, tuple[int, ...]]:
    """(field kind, stored (H, W, C) or None for RGBImageField's variable size) of the ``image`` field of a .beton.

    Read from the file's own header, so the loader decodes what is really there (older files stored grey
    images as 3 equal RGB channels).
    """
    load_ffcv()
    from ffcv.fields import NDArrayField
    from ffcv.reader import Reader

    field = Reader(str(path)).handlers["image"]
    if isinstance(field, NDArrayField):
        return NDARRAY_FIELD, tuple(int(size) for size in field.shape)
    return RGB_IMAGE_FIELD, None


class _Samples:
    """Indexable (image (H, W, C) uint8, label int) view of an ArrayDataset, as FFCV's writer wants it."""

    def __init__(self, dataset: ArrayDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return np.ascontiguousarray(self.dataset.images[index]), int(self.dataset.labels[index])


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _import_ffcv_writer() -> tuple:
    """FFCV's DatasetWriter and the fields used here; a one-line DataError when ffcv is not installed."""
    try:
        load_ffcv()
        from ffcv.fields import IntField, NDArrayField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as error:
        raise DataError(f"ffcv is not installed ({error}): writing .beton files needs it; install it with "
                        "bash scripts/install_ffcv.sh (--check needs no ffcv)") from None
    return DatasetWriter, IntField, NDArrayField, RGBImageField


def write_beton(dataset: ArrayDataset, path: str | Path, max_resolution: int | None = None,
                num_workers: int = -1) -> str:
    """Write ``dataset`` to the FFCV file ``path`` (fields ``image``, ``label``: IntField).

    ``image``: raw RGBImageField for RGB images, NDArrayField uint8 (H, W, C) otherwise (see the module text).

    The file is written under a temporary name in the same folder and renamed into place when whole, so an
    interrupted write never leaves a partial file under ``path``. max_resolution: FFCV shrinks images whose
    longer side exceeds it (prefer :func:`resize_dataset` first, which keeps the metadata truthful).
    Returns the sha256 of the written file.
    """
    DatasetWriter, IntField, NDArrayField, RGBImageField = _import_ffcv_writer()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    if image_field_kind(dataset.channels) == RGB_IMAGE_FIELD:
        image_field = RGBImageField(write_mode="raw", max_resolution=max_resolution)
    else:
        if max_resolution is not None and max(dataset.images.shape[1:3]) > max_resolution:
            dataset = resize_dataset(dataset, max_resolution)
        image_field = NDArrayField(np.dtype(np.uint8), tuple(dataset.images.shape[1:]))
    try:
        writer = DatasetWriter(str(temporary), {"image": image_field, "label": IntField()}, num_workers=num_workers)
        writer.from_indexed_dataset(_Samples(dataset))
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        digest = file_sha256(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return digest


def resize_dataset(dataset: ArrayDataset, max_resolution: int) -> ArrayDataset:
    """Shrink images whose longer side exceeds ``max_resolution`` (aspect kept, Pillow area filter)."""
    from PIL import Image

    height, width = dataset.images.shape[1:3]
    ratio = max_resolution / max(height, width)
    if ratio >= 1:
        return dataset
    size = (max(1, int(width * ratio)), max(1, int(height * ratio)))
    resized = np.stack([
        np.asarray(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(
            size, Image.Resampling.BOX)).reshape(size[1], size[0], -1)
        for image in dataset.images])
    return ArrayDataset(resized, dataset.labels, dataset.classes, dataset.sources)


def read_metadata(beton_dir: str | Path, name: str) -> dict:
    """Load ``NAME_metadata.json`` from ``beton_dir``, checked: a missing or malformed file is a DataError.

    Checked here, where the file enters: the format, the data set info (:meth:`DatasetInfo.from_json`)
    and, for each split, ``files.<split>`` an object with a non-negative integer ``bytes`` and ``count``
    and a 64-hex-digit ``sha256``.
    """
    path = metadata_path(beton_dir, name)
    if not path.is_file():
        raise DataError(f"{path} not found: write the data set first with python data/write_ffcv.py "
                        f"--dataset {name} --out {beton_dir} (sources read from ./data, or --data-dir DIR, "
                        f"or --download)")
    fix = "rewrite it with data/write_ffcv.py --force"
    try:
        record = parse_json(path.read_bytes())
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a valid metadata file ({error}); {fix}") from None
    if not isinstance(record, dict) or record.get("format") != METADATA_FORMAT:
        raise DataError(f"{path} is not a valid metadata file (unknown format); {fix}")
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != set(SPLITS):
        raise DataError(f"{path} is not a valid metadata file (files must name {' and '.join(SPLITS)}); {fix}")
    for split in SPLITS:
        problem = _file_entry_problem(files[split])
        if problem:
            raise DataError(f"{path} is not a valid metadata file (files.{split}: {problem}); {fix}")
    try:
        DatasetInfo.from_json(record.get("info"))
    except DataError as error:
        raise DataError(f"{path} is not a valid metadata file ({error}); {fix}") from None
    return record


def _file_entry_problem(entry: object) -> str | None:
    """What is wrong with one ``files.<split>`` entry of the metadata, or None."""
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not an object"
    for key in ("bytes", "count"):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {short_repr(value)}, not a non-negative integer"
    digest = entry.get("sha256")
    if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        return f"sha256 is {short_repr(digest)}, not 64 hex digits"
    return None


def verify_betons(beton_dir: str | Path, name: str) -> dict[str, Path]:
    """Check both .beton files of ``name`` against the size and sha256 in its metadata; return their paths.

    A missing, truncated or altered file raises DataError (one line, naming the file and the fix).
    """
    record = read_metadata(beton_dir, name)
    paths = {}
    for split in SPLITS:
        path = beton_path(beton_dir, name, split)
        expected = record["files"][split]
        if not path.is_file():
            raise DataError(f"{path} not found; rewrite it with data/write_ffcv.py --dataset {name} --force")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DataError(f"{path} has {size} bytes, its metadata says {expected['bytes']}: truncated or "
                            f"replaced; rewrite it with data/write_ffcv.py --dataset {name} --force")
        digest = file_sha256(path)
        if digest != expected["sha256"]:
            raise DataError(f"{path} fails its checksum (sha256 {digest[:12]}..., metadata says "
                            f"{expected['sha256'][:12]}...); rewrite it with data/write_ffcv.py --dataset {name} --force")
        paths[split] = path
    return paths


def _up_to_date(out_dir: Path, name: str, settings: dict) -> dict | None:
    try:
        record = read_metadata(out_dir, name)
        verify_betons(out_dir, name)
    except DataError:
        return None
    return record if record.get("settings") == settings else None


def write_dataset(name: str, data_dir: str | Path | None, out_dir: str | Path, *, download: bool = False,
                  max_resolution: int | None = None, force: bool = False, num_workers: int = -1,
                  log=print) -> dict:
    """Read data set ``name`` and write NAME_train.beton, NAME_test.beton, NAME_metadata.json to ``out_dir``.

    Skips the work (and says so) when the files already exist, match their metadata and were written with
    the same settings, unless ``force``. For ``imagefolder``, max_resolution is the square side every image
    is resized to (default 32). Returns the metadata record.
    """
    out_dir = Path(out_dir)
    settings = {"dataset": name, "max_resolution": max_resolution, "write_mode": "raw", "grey_field": NDARRAY_FIELD}
    if not force:
        existing = _up_to_date(out_dir, name, settings)
        if existing is not None:
            log(f"{metadata_path(out_dir, name)} and its .beton files are up to date (use --force to rewrite)")
            return existing
    _import_ffcv_writer()  # before any data is read
    folder_size = max_resolution if name == "imagefolder" else None
    splits = {split: read_dataset(name, data_dir, split, download=download, image_size=folder_size)
              for split in SPLITS}
    if max_resolution is not None and name != "imagefolder":
        splits = {split: resize_dataset(dataset, max_resolution) for split, dataset in splits.items()}
    return write_splits(name, splits, out_dir, settings, num_workers=num_workers, log=log)


def write_splits(name: str, splits: dict[str, ArrayDataset], out_dir: str | Path, settings: dict, *,
                 num_workers: int = -1, log=print) -> dict:
    """Write ``splits`` ({"train": ..., "test": ...}, already read) as data set ``name`` into ``out_dir``:
    NAME_train.beton, NAME_test.beton, then NAME_metadata.json (with ``settings``); returns the record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the sources were read: no empty folder on failure
    train, test = splits["train"], splits["test"]
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{name}: train images {train.images.shape[1:]} and test images {test.images.shape[1:]} differ")
    info = info_from_arrays(name, train, len(test))
    files = {}
    for split, dataset in splits.items():
        path = beton_path(out_dir, name, split)
        log(f"writing {path} ({len(dataset)} images)")
        files[split] = {"name": path.name, "sha256": write_beton(dataset, path, num_workers=num_workers),
                        "bytes": path.stat().st_size, "count": len(dataset)}
    record = {
        "format": METADATA_FORMAT,
        "settings": settings,
        "info": info.to_json(),
        "classes": list(train.classes),
        "image_field": image_field_kind(info.in_channels),
        "stored_channels": info.in_channels,
        "in_channels": info.in_channels,
        "image_shape": [*info.image_size, info.in_channels],
        "sources": {**train.sources, **test.sources},
        "files": files,
    }
    write_json_atomically(metadata_path(out_dir, name), record, indent=2)
    log(f"wrote {metadata_path(out_dir, name)}")
    return record

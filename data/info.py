"""What a data set is: its arrays (:class:`ArrayDataset`) and its shape and statistics (:class:`DatasetInfo`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from data.errors import DataError
from common.errors import short_repr

#: Data sets whose images must not be mirrored (a mirrored digit is another glyph).
NO_FLIP_DATASETS = ("mnist", "digits")
BUILTIN_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "digits")
ALL_DATASETS = BUILTIN_DATASETS + ("imagefolder",)


@dataclass
class ArrayDataset:
    """Images and labels held in memory.

    images: uint8 (N, H, W, C), C = 1 (grey) or 3 (RGB); labels: int64 (N,) in [0, len(classes));
    sources: file name -> checksum (``"md5:..."`` / ``"sha256:..."``) of what the arrays were read from.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(f"images must be uint8 (N, H, W, 1 or 3), got {self.images.dtype} {self.images.shape}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise DataError(f"{len(self.images)} images but labels of shape {self.labels.shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"labels outside [0, {len(self.classes)}) for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and statistics of a data set, as a model and a normaliser need them.

    mean, std: per channel the model sees (``in_channels`` values), 0-255 pixel scale, so a normalised
    pixel is x_hat = (x - mean_c) / std_c.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_count: int
    test_count: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "DatasetInfo":
        """The info saved in a .beton metadata file, checked: it comes from disk, so any field may be wrong.

        Counts are integers (classes >= 1, images >= 0), 1 or 3 channels, a positive image size, and one
        finite mean and one finite positive std per channel; anything else is a one-line DataError.
        """
        if not isinstance(record, dict):
            raise DataError(f"malformed data set info: a {type(record).__name__}, not an object")
        try:
            name, size = record["name"], record["image_size"]
            mean, std = record["mean"], record["std"]
            counts = {key: record[key] for key in ("num_classes", "in_channels", "train_count", "test_count")}
        except KeyError as error:
            raise DataError(f"malformed data set info: no {error}") from None
        if not isinstance(name, str):
            raise DataError(f"malformed data set info: name is {short_repr(name)}")
        for key, value in counts.items():
            if not _is_int(value) or value < (1 if key == "num_classes" else 0):
                raise DataError(f"malformed data set info: {key} is {short_repr(value)}")
        channels = counts["in_channels"]
        if channels not in (1, 3):
            raise DataError(f"malformed data set info: in_channels is {channels}, not 1 or 3")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)):
            raise DataError(f"malformed data set info: image_size is {short_repr(size)}")
        for key, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, list) and len(values) == channels and all(
                    _is_number(v) and math.isfinite(v) and (v > 0 or key == "mean") for v in values)):
                raise DataError(f"malformed data set info: {key} is {short_repr(values)}, expected {channels} "
                                f"finite number(s){', positive' if key == 'std' else ''}")
        return cls(name=name, num_classes=counts["num_classes"], in_channels=channels,
                   image_size=(size[0], size[1]), mean=tuple(float(v) for v in mean),
                   std=tuple(float(v) for v in std), train_count=counts["train_count"],
                   test_count=counts["test_count"])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, H, W, C) on the 0-255 scale (population std)."""
    count = images.shape[0] * images.shape[1] * images.shape[2]
    flat = images.reshape(-1, images.shape[-1])
    total = np.zeros(images.shape[-1], dtype=np.float64)
    total_sq = np.zeros(images.shape[-1], dtype=np.float64)
    for start in range(0, len(flat), 1 << 22):  # chunks: no float64 copy of a whole data set
        chunk = flat[start:start + (1 << 22)].astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += (chunk * chunk).sum(axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1e-12))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def info_from_arrays(name: str, train: ArrayDataset, test_count: int) -> DatasetInfo:
    """DatasetInfo whose mean/std are measured on ``train`` (the statistics every loader normalises with)."""
    mean, std = channel_stats(train.images)
    height, width = train.images.shape[1:3]
    return DatasetInfo(name, len(train.classes), train.channels, (int(height), int(width)), mean, std,
                       len(train), int(test_count))

"""The in-memory dataset every reader produces.

All formats (FER2013 CSV, FER+, image folders, TFDS, procedural faces, ...) are turned into the
same structure: per split, uint8 images [N, H, W, C] (readers of grayscale sources may return
[N, H, W]; `ferjax.data.load` adds the channel axis with `to_channels`), int32 labels [N],
optional float32 soft targets [N, K], and the source row of each example, plus the class names
in label order.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
from PIL import Image

# FER2013's label order (the `emotion` column of fer2013.csv).
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER2013's `Usage` values and ferjax's split names.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Split:
    """One split of a dataset.

    images: uint8[N, H, W, C] faces (C = 1 grayscale, 3 RGB).
    labels: int32[N] class indices (the arg-max of `targets` when soft targets exist).
    targets: float32[N, K] soft label distributions (FER+ votes), or None for hard labels.
    rows: int64[N] 1-based data row (or file index) of each example in its source, for reports.
    paths: str[N] image file of each example (image folders only), or None.
    """

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray | None = None
    rows: np.ndarray | None = None
    paths: np.ndarray | None = None

    def __post_init__(self):
        if self.rows is None:
            self.rows = np.arange(1, len(self.labels) + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Split:
        """The examples at `index` (an integer or boolean array)."""
        return Split(
            images=self.images[index],
            labels=self.labels[index],
            targets=None if self.targets is None else self.targets[index],
            rows=self.rows[index],
            paths=None if self.paths is None else self.paths[index],
        )

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)


@dataclasses.dataclass
class FerData:
    """A dataset: class names in label order and the train/val/test splits."""

    class_names: tuple[str, ...]
    splits: dict[str, Split]
    source: str = ""
    # Rows dropped while reading, counted by reason (e.g. {"wrong pixel count": 3}).
    skipped: Counter = dataclasses.field(default_factory=Counter)
    # Rows removed or relabelled by cleaning: reason -> {"total", "by_split", "by_class"}.
    cleaning: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images."""
        return tuple(self.splits["train"].images.shape[1:4])

    def summary(self) -> dict:
        return {
            name: {
                "examples": len(split),
                "per_class": dict(
                    zip(
                        self.class_names,
                        split.class_counts(self.num_classes).tolist(),
                        strict=True,
                    )
                ),
            }
            for name, split in self.splits.items()
        }


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8[N, H, W] or [N, H, W, C] -> uint8[N, H, W, channels].

    Grayscale to RGB repeats the gray value; RGB to grayscale is Pillow's "L" conversion
    (ITU-R 601-2 luma, (19595 R + 38470 G + 7471 B + 2**15) >> 16), so colour files read as
    grayscale here equal the same files converted by Pillow.
    """
    if images.ndim == 3:
        images = images[..., None]
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        rgb = images.astype(np.uint32)
        luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    raise ValueError(f"images with {have} channels cannot become {channels}")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8[N, H, W, C] -> uint8[N, size, size, C], bilinear (Pillow, as the folder reader
    resizes files); returned unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
    for k, image in enumerate(images):
        im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out[k] = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR)).reshape(
            size, size, -1
        )
    return out

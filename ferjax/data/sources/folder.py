"""Reader for image-folder datasets: `train/<class>/*.png`, `test/<class>/*`, optional `val/`.

Split folders may also be named `Training` (train), `validation`, `valid` or `PublicTest`
(val) and `PrivateTest` (test), in any letter case. Images of any size and colour (PNG, JPEG,
BMP) become grayscale `image_size` x `image_size` uint8 (Pillow; images already of that size
are not resampled, so a folder export of fer2013.csv gives back the same arrays).

Class order: FER2013's order when every class folder is a FER2013 or FER+ name (contempt goes
last), otherwise sorted by name; alphabetical order would silently mislabel FER2013 models.
Without a validation folder, a stratified validation split is carved from train by seed.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import numpy as np
from PIL import Image

from ferjax.data.classes import canonical
from ferjax.data.dataset import FER2013_CLASSES, FerData, Split
from ferjax.data.sources.rows import RowErrors
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid", "publictest"),
    "test": ("test", "privatetest"),
}
KNOWN_ORDER = FER2013_CLASSES + ("contempt",)


def find_split_folders(root: str) -> dict[str, str]:
    """Maps split names to the folders under `root` (train and test required)."""
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{root}: folder not found; expected train/<class>/*.png ...")
    entries = {e.lower(): e for e in sorted(os.listdir(root)) if os.path.isdir(f"{root}/{e}")}
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for n in names:
            if n in entries:
                found[split] = os.path.join(root, entries[n])
                break
    for split in ("train", "test"):
        if split not in found:
            raise DataFormatError(
                f"{root}: no {split} folder; expected {root}/{SPLIT_FOLDERS[split][0]}/<class>/"
                "*.png (folders found: " + (", ".join(sorted(entries.values())) or "none") + ")"
            )
    return found


def class_order(folder_names: list[str]) -> list[str]:
    """FER2013's order if every name is a FER2013/FER+ class name, otherwise sorted."""
    names = sorted(set(folder_names))
    if names and all(canonical(n) in KNOWN_ORDER for n in names):
        return sorted(names, key=lambda n: KNOWN_ORDER.index(canonical(n)))
    return names


def read_image(path: str, size: int, channels: int = 1) -> np.ndarray:
    """One image file -> uint8[size, size] grayscale or uint8[size, size, 3] (channels=3).
    Raises OSError/ValueError if unreadable."""
    with Image.open(path) as im:
        im.load()
        return resize_face(to_grayscale(im) if channels == 1 else to_rgb(im), size)


def to_grayscale(im: Image.Image) -> Image.Image:
    """Any PIL image -> mode L: 16-bit and float scaled to 0..255, transparency on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image -> mode RGB: 16-bit and float scaled to 0..255 (as `to_grayscale`),
    transparency on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_grayscale(im).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    ):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB")


def resize_face(gray: Image.Image, size: int) -> np.ndarray:
    """A grayscale face image -> uint8[size, size] (bilinear), as every folder image is read."""
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, np.uint8)


def _list_images(folder: str, errors: RowErrors, skipped: Counter) -> list[str]:
    files = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            files.append(path)
        else:
            skipped["non-image file ignored"] += 1
    if not files:
        errors.add(
            "",
            "empty class folder",
            f"{folder}: empty class folder, expected at least one image "
            f"({', '.join('*' + e for e in IMAGE_EXTENSIONS)})",
        )
    return files


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded validation sample: `fraction` of each class (rounded)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        count = int(round(len(idx) * fraction))
        if count >= len(idx):  # keep at least one training example of every class
            count = len(idx) - 1
        mask[rng.permutation(idx)[:count]] = True
    return mask


def load_folder(
    root: str,
    image_size: int = 48,
    val_fraction: float = 0.1,
    seed: int = 0,
    on_error: str = "raise",
    channels: int = 1,
) -> FerData:
    """Loads an image-folder tree into a FerData (images uint8[N, S, S] grayscale, or
    uint8[N, S, S, 3] with channels=3).

    Split.rows is the 1-based index of each file in its split folder (classes in label order,
    files sorted by name); Split.paths holds the file paths.
    """
    folders = find_split_folders(root)
    errors = RowErrors(root, on_error, unit="file")
    skipped: Counter = Counter()
    class_dirs = {}
    for split, folder in folders.items():
        class_dirs[split] = {
            e: os.path.join(folder, e)
            for e in sorted(os.listdir(folder))
            if os.path.isdir(os.path.join(folder, e)) and not e.startswith(".")
        }
    if not class_dirs["train"]:
        raise DataFormatError(f"{folders['train']}: no class folders; expected <class>/*.png")
    names = class_order(list(class_dirs["train"]))
    splits = {}
    for split, dirs in class_dirs.items():
        extra = sorted(set(dirs) - set(names))
        if extra:
            raise DataFormatError(
                f"{dirs[extra[0]]}: class folder {extra[0]!r} is not in "
                f"{folders['train']} (classes: {', '.join(names)})"
            )
        images, labels, paths = [], [], []
        for label, name in enumerate(names):
            if name not in dirs:
                continue
            for path in _list_images(dirs[name], errors, skipped):
                try:
                    images.append(read_image(path, image_size, channels))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
                    errors.add("", "unreadable image", f"{path}: unreadable image ({detail[:120]})")
                    continue
                labels.append(label)
                paths.append(path)
        splits[split] = Split(
            images=np.asarray(images, np.uint8).reshape(
                -1, image_size, image_size, *((3,) if channels == 3 else ())
            ),
            labels=np.asarray(labels, np.int32),
            rows=np.arange(1, len(labels) + 1, dtype=np.int64),
            paths=np.asarray(paths, dtype=object),
        )
    if "val" not in splits:
        train = splits["train"]
        is_val = stratified_split(train.labels, val_fraction, seed)
        splits["val"], splits["train"] = train.take(is_val), train.take(~is_val)
    for reason, count in sorted(skipped.items()):
        print(f"{root}: {count} {reason}(s)", file=sys.stderr)
    errors.finish()
    skipped.update(errors.counts)
    class_names = tuple(canonical(n) for n in names)
    if len(set(class_names)) != len(class_names):
        raise DataFormatError(f"{folders['train']}: class folders {names} name a class twice")
    return FerData(
        class_names=class_names,
        splits={s: splits[s] for s in ("train", "val", "test")},
        source=root,
        skipped=skipped,
    )

"""Reader for RAF-DB's `basic/` release (Real-world Affective Faces, single-label subset).

Layout (`root` is the `basic/` folder, or a folder holding it):
    EmoLabel/list_patition_label.txt   one line per image: `train_00001.jpg 5` (name, label)
    Image/aligned/train_00001_aligned.jpg   100x100 aligned faces (aligned=True, the default)
    Image/original/train_00001.jpg          the original photos (aligned=False)

Labels 1..7 are in RAF-DB's order: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral;
ferjax keeps that order (labels 0..6, canonical names below). The split is the name's prefix as
released (train_: 12,271 images, test_: 3,068); validation is carved from train, stratified, by
`val_fraction` and `split_seed`. Split.rows is the line of each example in the list file.
"""

from __future__ import annotations

import os

from ferjax.data.dataset import FerData
from ferjax.data.sources.decode import FaceIndex, FaceRecord, carve_validation, load_index
from ferjax.data.sources.rows import RowErrors
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

RAFDB_CLASSES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")
LIST_FILE = os.path.join("EmoLabel", "list_patition_label.txt")
PREFIX_TO_SPLIT = {"train_": "train", "test_": "test"}

WHERE_TO_GET = (
    "RAF-DB is released by its authors on request (http://www.whdeng.cn/raf/model1.html); "
    "unpack basic/ (EmoLabel/list_patition_label.txt and Image/aligned/) and pass "
    "--config.data.path=/path/to/basic"
)


def find_rafdb_root(root: str) -> str:
    """The folder holding EmoLabel/list_patition_label.txt: `root` or `root/basic`."""
    for candidate in (root, os.path.join(root, "basic")):
        if os.path.isfile(os.path.join(candidate, LIST_FILE)):
            return candidate
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{root}: folder not found. {WHERE_TO_GET}")
    raise DataNotFoundError(
        f"{os.path.join(root, LIST_FILE)}: file not found (nor under basic/). {WHERE_TO_GET}"
    )


def image_path(basic: str, name: str, aligned: bool) -> str:
    """The image file of a list entry: Image/aligned/<stem>_aligned<ext> or Image/original/name."""
    if aligned:
        stem, ext = os.path.splitext(name)
        return os.path.join(basic, "Image", "aligned", f"{stem}_aligned{ext}")
    return os.path.join(basic, "Image", "original", name)


def index_rafdb(
    root: str,
    aligned: bool = True,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
) -> FaceIndex:
    """Parses and validates list_patition_label.txt into records per split (no pixels).

    Every bad line (wrong field count, label not an integer 1..7, name without a train_/test_
    prefix, duplicate name, missing image file, an empty line before the last entry) is added
    to the index's RowErrors, naming the list file and line; empty lines at the end are not
    entries. Labels are 0..6 in RAFDB_CLASSES order.
    """
    basic = find_rafdb_root(root)
    list_path = os.path.join(basic, LIST_FILE)
    images_dir = os.path.dirname(image_path(basic, "x", aligned))
    if not os.path.isdir(images_dir):
        other = "original" if aligned else "aligned"
        raise DataNotFoundError(
            f"{images_dir}: folder not found; unpack RAF-DB's Image/{os.path.basename(images_dir)}"
            f" there, or read Image/{other}/ with aligned={not aligned}"
        )
    errors = RowErrors(list_path, on_error)
    with open(list_path, encoding="utf-8-sig", errors="replace") as f:
        lines = f.read().splitlines()
    last = max((k for k, line in enumerate(lines, 1) if line.strip()), default=0)
    if last == 0:
        raise DataFormatError(f"{list_path}: no entries; expected lines like 'train_00001.jpg 5'")
    splits: dict[str, list[FaceRecord]] = {"train": [], "test": []}
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines[:last], 1):
        where = f"row {line_no} (line {line_no})"
        fields = line.split()
        if not fields:
            errors.add(where, "empty line", "empty line, expected 'train_00001.jpg 5'")
            continue
        if len(fields) != 2:
            errors.add(
                where,
                "wrong number of fields",
                f"expected 2 fields (image name and label 1..7), got {len(fields)}",
            )
            continue
        name, label = fields
        if not (label.isascii() and label.isdigit() and 1 <= int(label) <= len(RAFDB_CLASSES)):
            errors.add(
                where, "label out of range", f"label is {label[:20]!r}, expected an integer in 1..7"
            )
            continue
        split = next((s for p, s in PREFIX_TO_SPLIT.items() if name.startswith(p)), None)
        if split is None:
            errors.add(
                where,
                "unknown split prefix",
                f"image name {name[:60]!r} starts with neither train_ nor test_",
            )
            continue
        if name in seen:
            errors.add(
                where,
                "duplicate image name",
                f"image name {name!r} is already on line {seen[name]}",
            )
            continue
        seen[name] = line_no
        path = image_path(basic, name, aligned)
        if not os.path.isfile(path):
            errors.add(where, "missing image file", f"image file {path} not found")
            continue
        splits[split].append(FaceRecord(path, int(label) - 1, line_no, line_no, list_path))
    train, val = carve_validation(splits["train"], val_fraction, split_seed)
    return FaceIndex(
        class_names=RAFDB_CLASSES,
        splits={"train": train, "val": val, "test": splits["test"]},
        errors=errors,
        source=basic,
    )


def load_rafdb(
    root: str,
    image_size: int = 100,
    channels: int = 3,
    aligned: bool = True,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
    workers: int | None = None,
) -> FerData:
    """Loads RAF-DB basic/ into a FerData: images uint8[N, S, S, C] (S = image_size, C =
    channels), class names in RAF-DB's order, train/test as released, val carved from train."""
    index = index_rafdb(root, aligned, val_fraction, split_seed, on_error)
    return load_index(index, image_size, channels, workers)

"""Reader for AffectNet's manually annotated release (training.csv, validation.csv, images).

Lists: `training.csv` and `validation.csv`, in `root/` or `root/Manually_Annotated_file_lists/`,
with the header `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
expression,valence,arousal`. `facial_landmarks` is a quoted ';'-separated list of floats
(opaque here), valence and arousal are unused. `subDirectory_filePath` (e.g. `689/737db24.jpg`)
is resolved against the first existing folder of `root/Manually_Annotated_Images/`,
`root/Manually_Annotated_compressed/Manually_Annotated_Images/` and `root/`.

Expression codes 0..10: Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt, None,
Uncertain, No-Face. num_classes=7 keeps codes 0..6, 8 keeps 0..7 (class names below, in that
order); rows with any other code are dropped by design and counted by name in
`FerData.skipped` ("affectnet none", "affectnet contempt (7-class)", ...), not errors.

Faces are cropped by their box (face_x, face_y, face_width, face_height in pixels; clipped to
the image) and resized. As in the literature, the released validation set is the *test* split;
validation is carved from training (stratified, `val_fraction`, `split_seed`). Split.rows is
the data row (line minus the header) in training.csv (train, val) or validation.csv (test).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter

from ferjax.data.dataset import FerData
from ferjax.data.sources.decode import FaceIndex, FaceRecord, carve_validation, load_index
from ferjax.data.sources.rows import RowErrors
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

HEADER = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
# Expression codes 0..10 in AffectNet's order, canonical names.
EXPRESSION_NAMES = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "angry",
    "contempt",
    "none",
    "uncertain",
    "no-face",
)
LIST_FOLDER = "Manually_Annotated_file_lists"
IMAGE_FOLDERS = (
    "Manually_Annotated_Images",
    os.path.join("Manually_Annotated_compressed", "Manually_Annotated_Images"),
    "",
)

WHERE_TO_GET = (
    "AffectNet is released by its authors on request (http://mohammadmahoor.com/affectnet/); "
    "pass --config.data.path=/path/to/AffectNet holding training.csv and validation.csv "
    f"(there or in {LIST_FOLDER}/) and Manually_Annotated_Images/"
)


def affectnet_classes(num_classes: int) -> tuple[str, ...]:
    if num_classes not in (7, 8):
        raise ValueError(f"AffectNet num_classes must be 7 or 8, got {num_classes}")
    return EXPRESSION_NAMES[:num_classes]


def drop_reason(code: int) -> str:
    """The skip reason of a dropped expression code (contempt is a class at num_classes=8)."""
    suffix = " (7-class)" if code < 8 else ""
    return f"affectnet {EXPRESSION_NAMES[code]}{suffix}"


def find_affectnet(root: str) -> tuple[str, str, str]:
    """(training.csv, validation.csv, image folder) of an AffectNet root (see module doc)."""
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{root}: folder not found. {WHERE_TO_GET}")
    lists = []
    for name in ("training.csv", "validation.csv"):
        places = [os.path.join(root, name), os.path.join(root, LIST_FOLDER, name)]
        found = next((p for p in places if os.path.isfile(p)), None)
        if found is None:
            raise DataNotFoundError(
                f"{places[0]}: file not found (nor {places[1]}). {WHERE_TO_GET}"
            )
        lists.append(found)
    images = next(
        os.path.join(root, d) for d in IMAGE_FOLDERS if os.path.isdir(os.path.join(root, d))
    )
    return lists[0], lists[1], images.rstrip(os.sep)


def _parse_box(fields: list[str]) -> tuple[tuple[float, float, float, float] | None, str]:
    """The face box of a row, or (None, detail) when a value is not a number or the size is not
    positive."""
    values = []
    for name, text in zip(HEADER[1:5], fields[1:5]):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return None, f"{name} is {text.strip()[:20]!r}, expected a number"
        if name in ("face_width", "face_height") and value <= 0:
            return None, f"{name} is {text.strip()[:20]}, expected a positive number"
        values.append(value)
    return tuple(values), ""


def read_affectnet_list(
    path: str, images: str, num_classes: int, errors: RowErrors, dropped: Counter
) -> list[FaceRecord]:
    """Parses and validates one AffectNet CSV into records (labels 0..num_classes-1).

    Bad rows go to `errors` (each naming the file, row and line); rows whose expression is not
    a class are counted in `dropped` and not checked further (their images are never read).
    Empty lines after the last row are not rows. Face boxes right of or below the image are
    found when decoding (the image size is needed).
    """
    records: list[FaceRecord] = []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, None) or []]
        if not header:
            raise DataFormatError(f"{path}: empty file, expected a header '{','.join(HEADER)}'")
        if tuple(header) != HEADER:
            raise DataFormatError(
                f"{path}: line 1: header is {','.join(header)!r}, expected {','.join(HEADER)!r}"
            )
        empty: list[str] = []  # empty rows, reported once a later row shows they are not trailing
        seen_rows = False

        def bad(where: str, reason: str, detail: str) -> None:
            errors.add("", reason, f"{path}: {where}: {detail}")

        for row, fields in enumerate(reader, 1):
            where = f"row {row} (line {reader.line_num})"
            if not fields or all(not v.strip() for v in fields):
                empty.append(where)
                continue
            seen_rows = True
            for w in empty:
                bad(w, "empty row", "empty row")
            empty.clear()
            if len(fields) != len(HEADER):
                detail = f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(fields)}"
                bad(where, "wrong number of fields", detail)
                continue
            code = fields[6].strip()
            if not (code.isascii() and code.isdigit() and int(code) < len(EXPRESSION_NAMES)):
                bad(
                    where,
                    "expression out of range",
                    f"expression is {code[:20]!r}, expected an integer in 0..10",
                )
                continue
            if int(code) >= num_classes:
                dropped[drop_reason(int(code))] += 1
                continue
            name = fields[0].strip()
            if not name:
                bad(
                    where,
                    "empty image path",
                    "subDirectory_filePath is empty, expected e.g. '689/737db2.jpg'",
                )
                continue
            box, detail = _parse_box(fields)
            if box is None:
                bad(where, "bad face box", detail)
                continue
            x, y, w, h = box
            if x + w <= 0 or y + h <= 0:
                bad(
                    where,
                    "face box outside image",
                    f"face box (x={x:g}, y={y:g}, w={w:g}, h={h:g}) lies left of or above the "
                    "image, expected it to overlap the image",
                )
                continue
            image = os.path.join(images, name)
            if not os.path.isfile(image):
                bad(where, "missing image file", f"image file {image} not found")
                continue
            records.append(FaceRecord(image, int(code), row, reader.line_num, path, box))
    if not seen_rows:
        raise DataFormatError(f"{path}: no data rows after the header")
    return records


def index_affectnet(
    root: str,
    num_classes: int = 7,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
) -> FaceIndex:
    """Parses and validates training.csv (train, val carved) and validation.csv (test) into
    records per split (no pixels); see the module doc for the layout and the dropped codes."""
    class_names = affectnet_classes(num_classes)
    training, validation, images = find_affectnet(root)
    errors = RowErrors(root, on_error)
    dropped: Counter = Counter()
    train = read_affectnet_list(training, images, num_classes, errors, dropped)
    test = read_affectnet_list(validation, images, num_classes, errors, dropped)
    train, val = carve_validation(train, val_fraction, split_seed)
    return FaceIndex(
        class_names=class_names,
        splits={"train": train, "val": val, "test": test},
        errors=errors,
        dropped=dropped,
        source=root,
    )


def load_affectnet(
    root: str,
    image_size: int = 112,
    channels: int = 3,
    num_classes: int = 7,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_error: str = "raise",
    workers: int | None = None,
) -> FerData:
    """Loads AffectNet into a FerData: faces cropped by their box, images uint8[N, S, S, C]
    (S = image_size, C = channels), class names in AffectNet's order (7 or 8 classes)."""
    index = index_affectnet(root, num_classes, val_fraction, split_seed, on_error)
    return load_index(index, image_size, channels, workers)

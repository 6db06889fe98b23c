"""Small copies of real dataset releases, in their exact layouts, drawn with procedural faces.

For tests and benchmarks of the RAF-DB and AffectNet readers without the (licensed) data:
`write_rafdb` writes RAF-DB's `basic/` layout, `write_affectnet` AffectNet's manually annotated
layout. Both can append malformed lines of every kind the readers detect, and return what they
wrote (labels, rows, paths, boxes, the malformed lines) so that tests can compare.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from ferjax.data.dataset import FER2013_CLASSES
from ferjax.data.sources.affectnet import HEADER as AFFECTNET_HEADER
from ferjax.data.sources.affectnet import LIST_FOLDER
from ferjax.data.sources.rafdb import LIST_FILE, RAFDB_CLASSES, image_path
from ferjax.data.sources.synthetic import render_faces

# RAF-DB basic training counts per class (RAF-DB order) and AffectNet's manually annotated
# training counts per expression code 0..10: the generators draw labels in these proportions.
RAFDB_TRAIN_COUNTS = np.array([1290, 281, 717, 4772, 1982, 705, 2524])
AFFECTNET_TRAIN_COUNTS = np.array(
    [74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750, 33088, 11645, 82414]
)
JPEG_QUALITY = 95


@dataclasses.dataclass
class FakeRelease:
    """What a generator wrote. Per split ("train", "test"; AffectNet: training.csv -> "train",
    validation.csv -> "test"), in file order, for every well-formed line:

    labels: int[N] RAF-DB: class index in RAFDB_CLASSES order (label - 1); AffectNet: the
        expression code 0..10 (dropped codes included).
    rows: int[N] the 1-based data row (RAF-DB: line) of each entry.
    paths: image files (RAF-DB: aligned if written, else original).
    boxes: AffectNet only: (x, y, w, h) per entry.
    bad: the malformed lines appended, in order: (list file, row, line, kind, text).
    """

    root: str
    lists: dict[str, str]
    labels: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    paths: dict[str, list[str]]
    boxes: dict[str, list[tuple[int, int, int, int]]] | None = None
    bad: list[tuple[str, int, int, str, str]] = dataclasses.field(default_factory=list)


def _labels(count: int, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every class once (while count allows), then draws in proportion to `shares`."""
    first = np.arange(min(count, len(shares)))
    rest = rng.choice(len(shares), count - len(first), p=shares / shares.sum())
    return np.concatenate([first, rest]).astype(np.int64)


def _faces(fer_labels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Colour procedural faces uint8[N, size, size, 3], rendered a few at a time."""
    chunk = max(1, 64 * 48 * 48 // (size * size))
    parts = [
        render_faces(fer_labels[s : s + chunk], rng, size, channels=3)
        for s in range(0, len(fer_labels), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)


def _save_jpeg(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


def _garbage(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")


def _original_photo(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 'original' photo around an aligned face: a larger coloured canvas, the face pasted at
    a random place (RAF-DB's originals vary in size)."""
    size = face.shape[0]
    h, w = (rng.uniform(1.3, 2.0, 2) * size).astype(int)
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = rng.integers(0, 256, 3)
    canvas = np.clip(canvas + rng.normal(0, 12, canvas.shape), 0, 255).astype(np.uint8)
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    canvas[y : y + size, x : x + size] = face
    return canvas


def write_rafdb(
    root: str,
    num_train: int,
    num_test: int,
    seed: int,
    size: int = 100,
    aligned: bool = True,
    original: bool = False,
    malformed: bool = False,
    trailing: str = "\n",
) -> FakeRelease:
    """Writes RAF-DB's basic/ layout under `root`: EmoLabel/list_patition_label.txt (test lines
    test_0001.jpg.., then train_00001.jpg.., labels 1..7 in RAF-DB numbering), aligned faces
    Image/aligned/<name>_aligned.jpg (size x size JPEGs) and/or original photos
    Image/original/<name> (larger, face pasted in).

    malformed=True appends one line of every kind index_rafdb rejects (FakeRelease.bad, kinds:
    "fields", "label", "prefix", "duplicate", "missing image", "unreadable image", "empty
    line"); `trailing` ends the file (e.g. "" or "\\n\\n\\n").
    """
    if not (aligned or original):
        raise ValueError("write_rafdb: write aligned and/or original images")
    rng = np.random.default_rng(seed)
    list_path = os.path.join(root, LIST_FILE)
    os.makedirs(os.path.dirname(list_path), exist_ok=True)
    lines: list[str] = []
    labels, rows, paths = {}, {}, {}
    for split, count, digits in (("test", num_test, 4), ("train", num_train, 5)):
        split_labels = _labels(count, RAFDB_TRAIN_COUNTS, rng)
        fer = np.array([FER2013_CLASSES.index(RAFDB_CLASSES[k]) for k in split_labels], np.int64)
        faces = _faces(fer, rng, size)
        names = [f"{split}_{k:0{digits}d}.jpg" for k in range(1, count + 1)]
        for name, face, label in zip(names, faces, split_labels):
            if aligned:
                _save_jpeg(image_path(root, name, True), face)
            if original:
                _save_jpeg(image_path(root, name, False), _original_photo(face, rng))
            lines.append(f"{name} {label + 1}")
        labels[split] = split_labels
        rows[split] = np.arange(len(lines) - count + 1, len(lines) + 1, dtype=np.int64)
        paths[split] = [image_path(root, n, aligned) for n in names]
    bad = []
    if malformed:
        duplicate = lines[-1].split()[0] if lines else "train_00001.jpg"
        cases = [
            ("fields", "train_90001.jpg"),
            ("fields", "train_90002.jpg 3 extra"),
            ("label", "train_90003.jpg 8"),
            ("empty line", ""),
            ("label", "train_90004.jpg happy"),
            ("label", "test_9005.jpg 0"),
            ("prefix", "val_90006.jpg 3"),
            ("duplicate", f"{duplicate} 2"),
            ("missing image", "train_90007.jpg 2"),
            ("unreadable image", "test_9008.jpg 4"),
        ]
        for kind, text in cases:
            lines.append(text)
            bad.append((list_path, len(lines), len(lines), kind, text))
            if kind == "unreadable image":
                name = text.split()[0]
                for written, flag in ((aligned, True), (original, False)):
                    if written:
                        _garbage(image_path(root, name, flag))
        lines.append("train_90009.jpg 1")  # a good line after the bad ones
        face = _faces(np.array([FER2013_CLASSES.index("surprise")]), rng, size)[0]
        if aligned:
            _save_jpeg(image_path(root, "train_90009.jpg", True), face)
        if original:
            _save_jpeg(image_path(root, "train_90009.jpg", False), _original_photo(face, rng))
        labels["train"] = np.append(labels["train"], 0)
        rows["train"] = np.append(rows["train"], len(lines))
        paths["train"].append(image_path(root, "train_90009.jpg", aligned))
    with open(list_path, "w", newline="") as f:
        f.write("\n".join(lines) + trailing)
    return FakeRelease(root, {"list": list_path}, labels, rows, paths, None, bad)


def _photo_with_face(
    code: int, rng: np.random.Generator, size_range: tuple[int, int], clipped: bool
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A photo of random size with a face drawn inside a known square box (x, y, w, h). With
    `clipped`, the box sticks out of the image on one side (the face is cut there too). No-Face
    (code 10) photos get the box but no face."""
    h, w = rng.integers(size_range[0], size_range[1] + 1, 2)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    photo = top * (1 - ramp) + bottom * ramp + rng.normal(0, 20, (h, w, 3))
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    side = int(rng.uniform(0.45, 0.75) * min(h, w))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    if clipped:
        if rng.random() < 0.5:
            x = -side // 4 if rng.random() < 0.5 else w - side + side // 4
        else:
            y = -side // 4 if rng.random() < 0.5 else h - side + side // 4
    if code != 10:
        expression = code if code < 7 else int(rng.integers(0, 7))
        fer = FER2013_CLASSES.index(
            ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")[expression]
        )
        face = _faces(np.array([fer]), rng, side)[0]
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + side, h), min(x + side, w)
        photo[y0:y1, x0:x1] = face[y0 - y : y1 - y, x0 - x : x1 - x]
    return photo, (x, y, side, side)


def _landmarks(box: tuple[int, int, int, int], rng: np.random.Generator) -> str:
    x, y, w, h = box
    points = np.stack([x + rng.uniform(0.1, 0.9, 68) * w, y + rng.uniform(0.2, 0.95, 68) * h], 1)
    return ";".join(f"{v:.2f}" for v in points.reshape(-1))


def _affect(code: int, rng: np.random.Generator) -> tuple[str, str]:
    """Valence and arousal as released: in -1..1 for emotions, -2 for None/Uncertain/No-Face."""
    if code >= 8:
        return "-2", "-2"
    return f"{rng.uniform(-1, 1):.6f}", f"{rng.uniform(-1, 1):.6f}"


def write_affectnet(
    root: str,
    num_train: int,
    num_val: int,
    seed: int,
    size_range: tuple[int, int] = (120, 260),
    images: str = "Manually_Annotated_Images",
    lists_in_subfolder: bool = True,
    malformed: bool = False,
    trailing: str = "\n",
) -> FakeRelease:
    """Writes AffectNet's layout under `root`: training.csv and validation.csv (in
    Manually_Annotated_file_lists/ or root/) with the released header, and JPEG photos of varied
    sizes (`size_range`) under `root/<images>/<subdir>/<hash>.jpg`, each with a face inside its
    box (every 6th box sticks out of the photo), 68 landmarks (x;y pairs, quoted in
    training.csv, bare in validation.csv), every expression code 0..10 and valence/arousal.

    malformed=True appends rows of every kind index_affectnet rejects to training.csv and two to
    validation.csv (FakeRelease.bad, kinds: "fields", "expression", "empty line", "empty path",
    "box value", "box size", "box outside", "box outside image", "missing image",
    "unreadable image"). "box outside image" is found only when decoding (right of the photo).
    """
    rng = np.random.default_rng(seed)
    list_dir = os.path.join(root, LIST_FOLDER) if lists_in_subfolder else root
    image_dir = os.path.join(root, images) if images else root
    os.makedirs(list_dir, exist_ok=True)
    lists, labels, rows, paths, boxes, bad = {}, {}, {}, {}, {}, []
    for split, file_name, count in (("train", "training.csv", num_train),
                                    ("test", "validation.csv", num_val)):  # fmt: skip
        path = os.path.join(list_dir, file_name)
        quoted = split == "train"

        def line(fields: list[str], quoted: bool = quoted) -> str:
            if quoted and len(fields) > 5:
                fields = [*fields[:5], f'"{fields[5]}"', *fields[6:]]
            return ",".join(fields)

        codes = _labels(count, AFFECTNET_TRAIN_COUNTS, rng)
        lines = [",".join(AFFECTNET_HEADER)]
        records: list[list[str]] = []
        split_paths, split_boxes = [], []
        for k, code in enumerate(codes):
            photo, box = _photo_with_face(int(code), rng, size_range, clipped=k % 6 == 5)
            name = f"{rng.integers(1, 1000)}/{rng.bytes(20).hex()}.jpg"
            _save_jpeg(os.path.join(image_dir, name), photo)
            fields = [name, *map(str, box), _landmarks(box, rng), str(code), *_affect(code, rng)]
            records.append(fields)
            lines.append(line(fields))
            split_paths.append(os.path.join(image_dir, name))
            split_boxes.append(box)
        good_rows = list(range(1, count + 1))
        if malformed:
            good = records[0] if records else ["1/a.jpg", "0", "0", "9", "9", "1;2", "1", "0", "0"]

            def variant(good: list[str] = good, **change) -> list[str]:
                fields = dict(zip(AFFECTNET_HEADER, good))
                fields.update(change)
                return list(fields.values())

            if split == "train":
                _garbage(os.path.join(image_dir, "900", "unreadable.jpg"))
                cases = [
                    ("fields", good[:8]),
                    ("expression", variant(expression="11")),
                    ("expression", variant(expression="happy")),
                    ("empty line", []),
                    ("expression", variant(expression="-1")),
                    ("empty path", variant(subDirectory_filePath="")),
                    ("box value", variant(face_x="abc")),
                    ("box value", variant(face_height="nan")),
                    ("box size", variant(face_width="0")),
                    ("box size", variant(face_height="-5")),
                    ("box outside", variant(face_x="-100", face_width="100")),  # x + w = 0
                    ("box outside image", variant(face_x=str(size_range[1] + 10))),
                    ("missing image", variant(subDirectory_filePath="900/missing.jpg")),
                    ("unreadable image", variant(subDirectory_filePath="900/unreadable.jpg")),
                ]
            else:
                cases = [
                    ("missing image", variant(subDirectory_filePath="901/missing.jpg")),
                    ("fields", [*good, "extra"]),
                ]
            for kind, fields in cases:
                lines.append(line(fields) if fields else "")
                bad.append((path, len(lines) - 1, len(lines), kind, lines[-1]))
            if records:  # a good row after the bad ones (the first row again)
                lines.append(lines[1])
                good_rows.append(len(lines) - 1)
                codes = np.append(codes, codes[0])
                split_paths.append(split_paths[0])
                split_boxes.append(split_boxes[0])
        with open(path, "w", newline="") as f:
            f.write("\n".join(lines) + trailing)
        lists[split], labels[split] = path, codes
        rows[split] = np.asarray(good_rows, np.int64)
        paths[split], boxes[split] = split_paths, split_boxes
    return FakeRelease(root, lists, labels, rows, paths, boxes, bad)

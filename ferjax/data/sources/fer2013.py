"""Reader for the Kaggle FER2013 file, `fer2013.csv`.

Format: a header `emotion,pixels,Usage`, then one row per face: the class index (0..6, in the
order angry, disgust, fear, happy, sad, surprise, neutral), 2,304 space-separated pixel values
(48x48, row-major, 0..255; the field may be quoted), and the split (`Training`, `PublicTest`,
`PrivateTest`). The real file has 35,887 rows and is 290 MB.

Pixels are parsed by NumPy's C text parser (no per-value Python), and every row is validated.
A file whose rows are all regular (the Kaggle release and anything written like it: three
columns, no quotes, single labels) is read from its bytes in one pass (`parse_regular`, ~3x the
speed of the csv module's path, which also decodes and copies every row twice); any other file,
and every file with a bad row, goes through the csv module. Both give the same arrays. Bad rows
either stop the run (`on_error="raise"`, one line naming the file, the row and what was wrong) or
are dropped and counted by reason (`"skip"`). Parsed arrays are cached as `.npz`, keyed by the
file's content hash.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import mmap
import os
import threading
import warnings
from collections import Counter

import numpy as np

from ferjax.data.dataset import FER2013_CLASSES, USAGE_TO_SPLIT, FerData, Split
from ferjax.data.sources.fer2013_rows import (
    IMAGE_SIZE,
    NUM_PIXELS,
    PIXEL_CHARS,
    REQUIRED_COLUMNS,
    parse_regular,
)
from ferjax.data.sources.rows import RowErrors
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

CACHE_VERSION = 1

WHERE_TO_GET = (
    "FER2013 is a Kaggle download: get fer2013.csv from "
    "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-"
    "recognition-challenge/data (fer2013.tar.gz) and pass --config.data.path=/path/to/fer2013.csv"
)


def _where(row: int, line: int) -> str:
    return f"row {row} (line {line})"


def parse_pixel_strings(strings: list[str]):
    """Parses space-separated pixel strings with NumPy's C text parser, one call per row.

    Returns (values uint8[N, 2304] with bad rows zeroed, problems: dict row_index -> detail).
    """
    out = np.zeros((len(strings), NUM_PIXELS), np.uint8)
    problems: dict[int, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fromstring warns on trailing garbage; we check below
        for k, text in enumerate(strings):
            if text.encode("utf-8", "replace").translate(None, PIXEL_CHARS):
                problems[k] = _diagnose_pixels(text)  # characters other than digits/blanks
                continue
            values = np.fromstring(text, dtype=np.int64, sep=" ")
            if values.size != NUM_PIXELS or values.min() < 0 or values.max() > 255:
                problems[k] = _diagnose_pixels(text)
            else:
                out[k] = values
    return out, problems


def _diagnose_pixels(text: str) -> str:
    """A precise message for one bad pixel string (slow path, bad rows only)."""
    tokens = text.split()
    for k, tok in enumerate(tokens, 1):
        if not (tok.isascii() and tok.isdigit()):
            return f"pixel value {k} is {tok[:20]!r}, expected an integer in 0..255"
        if int(tok) > 255:
            return f"pixel value {k} is {tok[:20]}, expected an integer in 0..255"
    return f"expected {NUM_PIXELS} pixel values (48x48), got {len(tokens)}"


def bytes_digest(data) -> str:
    """128-bit blake2b (hex) of `data`: bytes or a mapped file (hashlib releases the GIL while
    it hashes, so this runs beside the parse on another thread)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str) -> str:
    """bytes_digest of a file's bytes, read through its mapping."""
    with mapped(path) as data:
        return bytes_digest(data)


def file_stamp(path: str) -> list[int]:
    """What identifies a file's version without reading it: device, inode, size, modification
    and status-change times (ns)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _digest_index(cache_dir: str) -> tuple[str, dict]:
    index_file = os.path.join(cache_dir, "digests.json")
    try:
        with open(index_file) as f:
            return index_file, json.load(f)
    except (OSError, ValueError):
        return index_file, {}


def remembered_digest(path: str, cache_dir: str) -> str | None:
    """The digest of `path` remembered in cache_dir/digests.json (remember_digest) for this
    version of the file, by its identity and change stamps (file_stamp), or None: a later run
    finds the parse cache without reading the whole file again (~300 MB for the real FER2013,
    seconds when the page cache no longer holds it). Any change to the file changes its
    status-change time, so it is hashed afresh."""
    entry = _digest_index(cache_dir)[1].get(os.path.abspath(path))
    if isinstance(entry, dict) and entry.get("stamp") == file_stamp(path) and entry.get("digest"):
        return entry["digest"]
    return None


def remember_digest(path: str, cache_dir: str, digest: str, stamp: list[int]) -> None:
    index_file, index = _digest_index(cache_dir)
    index[os.path.abspath(path)] = {"stamp": stamp, "digest": digest}
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{index_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(index, f)
    os.replace(tmp, index_file)


def read_fer2013_rows(path: str, on_error: str = "raise", data=None):
    """Reads and validates fer2013.csv (`data`: its bytes or mapping, when already open). Bad
    rows are all collected, then reported at once (RowErrors.finish: raised under
    on_error="raise", printed and dropped under "skip").

    Returns (images uint8[N,48,48], labels int32[N], usage list[str] (split names),
    rows int64[N] 1-based data rows, errors RowErrors).
    """
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: file not found. {WHERE_TO_GET}")
    errors = RowErrors(path, on_error)
    with mapped(path) if data is None else contextlib.nullcontext(data) as data:
        regular = parse_regular(data)
    if regular is not None:
        return (*regular, errors)
    return read_rows_csv(path, errors)


def read_rows_csv(path: str, errors: RowErrors):
    """read_fer2013_rows through the csv module (any file the csv dialect accepts; names every
    bad row)."""
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path}: empty file, expected a header 'emotion,pixels,Usage'")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataFormatError(
                f"{path}: line 1: header {','.join(header)!r} lacks column(s) "
                f"{', '.join(missing)}; expected 'emotion,pixels,Usage'"
            )
        col = {name: header.index(name) for name in REQUIRED_COLUMNS}
        labels, usage, pixels, rows, lines = [], [], [], [], []
        # Problems are reported in row order once the pixels are parsed too, so that `raise`
        # always names the first bad row of the file.
        pending: list[tuple[int, str, str, str]] = []
        row = last_filled = 0
        for row, fields in enumerate(reader, 1):
            where = _where(row, reader.line_num)
            if not fields or fields == [""]:
                pending.append((row, where, "empty row", "empty row"))
                continue
            last_filled = row
            if len(fields) != len(header):
                detail = f"expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
                pending.append((row, where, "wrong number of fields", detail))
                continue
            emotion = fields[col["emotion"]].strip()
            if not (emotion.isascii() and emotion.isdigit()) or int(emotion) >= len(
                FER2013_CLASSES
            ):
                pending.append(
                    (
                        row,
                        where,
                        "label out of range",
                        f"emotion is {emotion[:20]!r}, expected an integer in 0..6",
                    )
                )
                continue
            split = USAGE_TO_SPLIT.get(fields[col["Usage"]].strip())
            if split is None:
                pending.append(
                    (
                        row,
                        where,
                        "unknown Usage",
                        f"Usage is {fields[col['Usage']][:30]!r}, expected Training, "
                        "PublicTest or PrivateTest",
                    )
                )
                continue
            labels.append(int(emotion))
            usage.append(split)
            pixels.append(fields[col["pixels"]])
            rows.append(row)
            lines.append(reader.line_num)
        if last_filled == 0:
            raise DataFormatError(f"{path}: no data rows after the header")
        # Empty lines after the last row (a final newline, or several) are not rows.
        pending = [p for p in pending if p[0] <= last_filled]

    values, problems = parse_pixel_strings(pixels)
    keep = np.ones(len(pixels), bool)
    for k, detail in problems.items():
        reason = "wrong pixel count" if detail.startswith("expected") else "bad pixel value"
        pending.append((rows[k], _where(rows[k], lines[k]), reason, detail))
        keep[k] = False
    for _, where, reason, detail in sorted(pending):
        errors.add(where, reason, detail)
    errors.finish()
    images = values[keep].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = np.asarray(labels, np.int32)[keep]
    usage = [u for u, k in zip(usage, keep, strict=True) if k]
    rows = np.asarray(rows, np.int64)[keep]
    return images, labels, usage, rows, errors


def split_by_usage(images, labels, usage, rows, targets=None) -> dict[str, Split]:
    """The rows of each Usage as a Split. A split whose rows are contiguous in the file (the
    Kaggle release: Training, then PublicTest, then PrivateTest) is a view, not a copy."""
    usage = np.asarray(usage)
    splits = {}
    for name in USAGE_TO_SPLIT.values():
        where = np.flatnonzero(usage == name)
        if len(where) and where[-1] - where[0] + 1 == len(where):
            where = slice(int(where[0]), int(where[-1]) + 1)
        splits[name] = Split(
            images=images[where],
            labels=labels[where],
            targets=None if targets is None else targets[where],
            rows=rows[where],
        )
    return splits


def default_cache_dir() -> str:
    return os.environ.get("FERJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ferjax"))


def save_npz(path: str, **arrays: np.ndarray) -> None:
    """np.savez(path, **arrays) through a temporary file renamed into place, so that a reader
    (another run sharing the cache) never sees a half-written entry."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _cache_file(cache_dir: str, digest: str, on_error: str) -> str:
    return os.path.join(cache_dir, f"fer2013-v{CACHE_VERSION}-{digest}-{on_error}.npz")


def _load_cached(path: str, cache_file: str) -> FerData | None:
    """The parsed arrays from `cache_file`, or None when it is absent or unreadable (then the
    file is parsed again and the entry overwritten)."""
    if not os.path.isfile(cache_file):
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            skipped = Counter(dict(zip(z["skip_reasons"].tolist(), z["skip_counts"].tolist())))
            return FerData(
                class_names=FER2013_CLASSES,
                splits=split_by_usage(z["images"], z["labels"], z["usage"], z["rows"]),
                source=path,
                skipped=skipped,
            )
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def mapped(path: str):
    """The file's bytes, mapped read-only (no copy: the page cache's pages are read in place);
    b"" for an empty file."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


class _Hashing:
    """bytes_digest(data) on a helper thread (joined before `data` may be unmapped)."""

    def __init__(self, data):
        self._digest: str | None = None
        self._thread = threading.Thread(target=self._run, args=(data,), daemon=True)
        self._thread.start()

    def _run(self, data) -> None:
        self._digest = bytes_digest(data)

    def result(self) -> str:
        self._thread.join()
        assert self._digest is not None
        return self._digest


def load_fer2013(path: str, on_error: str = "raise", cache_dir: str | None = None) -> FerData:
    """Loads fer2013.csv into a FerData (train = Training, val = PublicTest, test = PrivateTest).

    The parsed arrays are cached in `cache_dir` (default ~/.cache/ferjax, or $FERJAX_CACHE),
    keyed by the file's content hash (remembered by the file's change stamps, remembered_digest) and
    the error policy; pass cache_dir="" to disable.
    """
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: file not found. {WHERE_TO_GET}")
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    digest = None
    if cache_dir:
        digest = remembered_digest(path, cache_dir)
        if digest is not None:
            cached = _load_cached(path, _cache_file(cache_dir, digest, on_error))
            if cached is not None:
                return cached
        else:  # a new file (or version): hash its bytes beside the parse
            stamp = file_stamp(path)
    with mapped(path) as data:
        hashing = _Hashing(data) if cache_dir and digest is None else None
        try:
            images, labels, usage, rows, errors = read_fer2013_rows(path, on_error, data)
        finally:
            digest = hashing.result() if hashing is not None else digest
    if cache_dir:
        if hashing is not None:
            remember_digest(path, cache_dir, digest, stamp)
        save_npz(
            _cache_file(cache_dir, digest, on_error),
            images=images,
            labels=labels,
            usage=np.asarray(usage),
            rows=rows,
            skip_reasons=np.asarray(list(errors.counts.keys()), dtype=str),
            skip_counts=np.asarray(list(errors.counts.values()), dtype=np.int64),
        )
    return FerData(
        class_names=FER2013_CLASSES,
        splits=split_by_usage(images, labels, usage, rows),
        source=path,
        skipped=errors.counts,
    )


def write_fer2013_csv(path: str, data: FerData, quote_pixels: bool = False) -> None:
    """Writes a FerData in the exact Kaggle format (rows ordered Training, PublicTest,
    PrivateTest). Used to export the procedural faces and by the tests."""
    split_to_usage = {v: k for k, v in USAGE_TO_SPLIT.items()}
    with open(path, "w", newline="") as f:
        f.write("emotion,pixels,Usage\n")
        for name in ("train", "val", "test"):
            split = data.splits[name]
            for image, label in zip(split.images, split.labels, strict=True):
                pix = " ".join(map(str, image.reshape(-1).tolist()))
                if quote_pixels:
                    pix = f'"{pix}"'
                f.write(f"{int(label)},{pix},{split_to_usage[name]}\n")

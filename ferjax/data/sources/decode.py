"""Face image files -> uint8 arrays, in two steps: index the lists, then decode in parallel.

Datasets released as image files plus annotation lists (RAF-DB, AffectNet) are read in two
steps. The *index* step parses and validates the lists into one `FaceRecord` per example (no
pixels; cheap). The *decode* step turns records into uint8[N, S, S, C] with `decode_face`, on
all cores: a process pool (or threads) over fixed-size chunks, results in record order, so the
output does not depend on the number of workers. Both steps are public and picklable so that an
out-of-core converter can index once and decode shard by shard.

Bad rows found by the index step and unreadable images found by the decode step go to the same
`RowErrors` (the lists' problems first, then the images', each in file order); its `finish()` is
called once, after decoding (`load_index`).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import struct
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from ferjax.data.dataset import SPLITS, FerData, Split
from ferjax.data.sources.folder import stratified_split, to_grayscale, to_rgb
from ferjax.data.sources.rows import RowErrors

# Chunks of about this many output bytes per task: large enough to amortise the pickling of a
# task, small enough to keep both cores busy on a few hundred images.
CHUNK_BYTES = 4 << 20
# Below this many records a pool costs more to start than it saves.
PARALLEL_MIN = 1024
# How decode_records runs in parallel: "process" (a process pool) or "thread"; see there.
POOL = "thread"
EXIF_ORIENTATION = 0x0112
UNREADABLE = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class FaceRecord(NamedTuple):
    """One example of an indexed dataset.

    box: the face box (x, y, width, height) in pixels of the (EXIF-transposed) image, or None
    for the whole image. row / line: 1-based data row and line of the example in `source`, the
    list file it came from (Split.rows holds `row`).
    """

    path: str
    label: int
    row: int
    line: int
    source: str
    box: tuple[float, float, float, float] | None = None

    @property
    def where(self) -> str:
        return f"row {self.row} (line {self.line})"


@dataclasses.dataclass
class FaceIndex:
    """The result of an index step: records per split (train, val, test) in class order.

    errors: bad rows found so far (decoding adds unreadable images; finish() once at the end,
        so an index is loaded once).
    dropped: rows left out by design, not errors (e.g. AffectNet's "none" labels), by reason.
    """

    class_names: tuple[str, ...]
    splits: dict[str, list[FaceRecord]]
    errors: RowErrors
    dropped: Counter = dataclasses.field(default_factory=Counter)
    source: str = ""


class FaceBoxError(ValueError):
    """A face box that does not overlap its image."""


def report(errors: RowErrors, record: FaceRecord, reason: str, detail: str) -> None:
    """Adds a bad row, naming the list file when `errors` collects more than one list."""
    if record.source == errors.path:
        errors.add(record.where, reason, detail)
    else:
        errors.add("", reason, f"{record.source}: {record.where}: {detail}")


def clip_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """(x, y, w, h) -> (left, top, right, bottom) inside a width x height image; FaceBoxError
    when nothing is left."""
    x, y, w, h = box
    left, top = max(x, 0.0), max(y, 0.0)
    right, bottom = min(x + w, float(width)), min(y + h, float(height))
    if right <= left or bottom <= top:
        raise FaceBoxError(
            f"face box (x={x:g}, y={y:g}, w={w:g}, h={h:g}) lies outside the "
            f"{width}x{height} image, expected it to overlap the image"
        )
    return left, top, right, bottom


def _jpeg_draft(im: Image.Image, region: tuple[float, float, float, float], size: int) -> None:
    """Lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the face region still covers at least
    `size` pixels on its shorter side (several times faster for large photos)."""
    if im.format != "JPEG":
        return
    factor = min(region[2] - region[0], region[3] - region[1]) / size
    if factor >= 2:
        width, height = im.size
        im.draft(im.mode, (math.ceil(width / factor), math.ceil(height / factor)))


def decode_face(
    path: str,
    box: tuple[float, float, float, float] | None = None,
    size: int = 100,
    channels: int = 3,
) -> np.ndarray:
    """One image file -> uint8[size, size, channels]: EXIF orientation applied, the face box
    (x, y, w, h in pixels of the oriented image; clipped to it, rounded to whole pixels)
    cropped, then resized bilinearly.
    Grayscale and colour follow folder.to_grayscale / to_rgb (16-bit scaled, transparency on
    white). Large JPEGs are decoded at a reduced scale that still covers `size` pixels.

    Raises FaceBoxError when the box misses the image, OSError/ValueError/... when unreadable.
    """
    if channels not in (1, 3):
        raise TypeError(f"channels must be 1 or 3, got {channels}")  # not an unreadable image
    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
        full = (0.0, 0.0, float(width), float(height))
        region = full if box is None else clip_box(box, width, height)
        _jpeg_draft(im, region, size)
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        im = to_rgb(im) if channels == 3 else to_grayscale(im)
    if im.size != (width, height):  # decoded at a reduced scale
        sx, sy = im.size[0] / width, im.size[1] / height
        region = (region[0] * sx, region[1] * sy, region[2] * sx, region[3] * sy)
    # Whole pixels: nothing outside the box reaches the resampling filter.
    left, top = min(round(region[0]), im.size[0] - 1), min(round(region[1]), im.size[1] - 1)
    right = min(max(round(region[2]), left + 1), im.size[0])
    bottom = min(max(round(region[3]), top + 1), im.size[1])
    if (left, top, right, bottom) != (0, 0, *im.size):
        im = im.crop((left, top, right, bottom))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, np.uint8).reshape(size, size, channels)


def decode_chunk(
    records: Sequence[FaceRecord], size: int, channels: int
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Decodes records in order (one pool task). Returns (uint8[n, size, size, channels], with
    zeros where decoding failed, and failures [(index, reason, detail)])."""
    out = np.zeros((len(records), size, size, channels), np.uint8)
    failures = []
    for k, r in enumerate(records):
        try:
            out[k] = decode_face(r.path, r.box, size, channels)
        except FaceBoxError as e:
            failures.append((k, "face box outside image", f"{r.path}: {e}"))
        except UNREADABLE as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            failures.append((k, "unreadable image", f"{r.path}: unreadable image ({detail[:120]})"))
    return out, failures


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_chunk(size: int, channels: int) -> int:
    return max(8, min(512, CHUNK_BYTES // (size * size * channels)))


def _pool_context():
    """forkserver: workers fork from a clean server process that has imported this module, so
    they never inherit JAX's, gRPC's or TensorFlow's threads (spawn where forkserver does not
    exist). Python still runs the main module's top level in each worker, as `__mp_main__`."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


def decode_records(
    records: Sequence[FaceRecord],
    size: int,
    channels: int,
    errors: RowErrors,
    workers: int | None = None,
    chunk: int | None = None,
    min_parallel: int = PARALLEL_MIN,
    pool: str = POOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes records into uint8[M, size, size, channels] in record order, on `workers`
    processes (default: every core this process may use) over chunks of `chunk` records.

    Fewer than `min_parallel` records, a single chunk, or workers=1 are decoded in this process
    (starting a pool costs more than it saves there). As with any process pool, a script that
    calls this must keep its top level behind `if __name__ == "__main__":`. pool="thread" uses
    threads instead (Pillow releases the GIL while decoding and resizing; no start-up, no
    copies back, but little gain on small images, whose decoding is mostly Python).
    Unreadable images and face boxes outside their image are reported to `errors` (in
    list-file order) and left out; returns (images, kept int64[M]: the index in `records` of
    each image).
    """
    if pool not in ("process", "thread"):
        raise ValueError(f"pool must be 'process' or 'thread', got {pool!r}")
    records = list(records)
    n = len(records)
    chunk = chunk or default_chunk(size, channels)
    workers = default_workers() if workers is None else workers
    starts = list(range(0, n, chunk))
    out = np.empty((n, size, size, channels), np.uint8)

    failed: list[tuple[int, str, str]] = []

    def collect(results) -> None:
        failed.clear()
        for start, (images, failures) in zip(starts, results):
            out[start : start + len(images)] = images
            failed.extend((start + k, reason, detail) for k, reason, detail in failures)

    if workers <= 1 or len(starts) <= 1 or n < min_parallel:
        collect(decode_chunk(records[s : s + chunk], size, channels) for s in starts)
    elif pool == "thread":
        tasks = [records[s : s + chunk] for s in starts]
        with ThreadPoolExecutor(min(workers, len(tasks))) as threads:
            collect(threads.map(decode_chunk, tasks, [size] * len(tasks), [channels] * len(tasks)))
    else:
        tasks = [records[s : s + chunk] for s in starts]
        try:
            with ProcessPoolExecutor(min(workers, len(tasks)), _pool_context()) as pool:
                collect(pool.map(decode_chunk, tasks, [size] * len(tasks), [channels] * len(tasks)))
        except (BrokenProcessPool, OSError) as e:
            print(f"parallel decoding failed ({e}); decoding in this process", file=sys.stderr)
            collect(decode_chunk(task, size, channels) for task in tasks)
    # In list-file order (the order the files first appear in, then rows), whatever the order
    # of the splits: a validation split carved from train does not reorder the report.
    rank: dict[str, int] = {}
    for r in records:
        rank.setdefault(r.source, len(rank))
    failed.sort(key=lambda f: (rank[records[f[0]].source], records[f[0]].row))
    ok = np.ones(n, bool)
    for k, reason, detail in failed:
        ok[k] = False
        report(errors, records[k], reason, detail)
    if ok.all():
        return out, np.arange(n, dtype=np.int64)
    kept = np.flatnonzero(ok)
    return out[kept], kept


def carve_validation(
    records: list[FaceRecord], fraction: float, seed: int
) -> tuple[list[FaceRecord], list[FaceRecord]]:
    """Splits training records into (train, val): a seeded, stratified `fraction` of each class
    (folder.stratified_split), file order kept in both."""
    labels = np.asarray([r.label for r in records], np.int64)
    is_val = stratified_split(labels, fraction, seed)
    train = [r for r, v in zip(records, is_val) if not v]
    val = [r for r, v in zip(records, is_val) if v]
    return train, val


def load_index(
    index: FaceIndex,
    image_size: int,
    channels: int,
    workers: int | None = None,
    pool: str = POOL,
) -> FerData:
    """Decodes every split of an index into a FerData (images uint8[N, S, S, C]), then reports
    the bad rows of index and decode at once (RowErrors.finish)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    records = [r for name in SPLITS for r in index.splits[name]]
    images, kept = decode_records(records, image_size, channels, index.errors, workers, pool=pool)
    index.errors.finish()
    labels = np.asarray([r.label for r in records], np.int32)
    rows = np.asarray([r.row for r in records], np.int64)
    paths = np.asarray([r.path for r in records], dtype=object)
    ends = np.cumsum([len(index.splits[name]) for name in SPLITS])
    bounds = np.searchsorted(kept, np.concatenate([[0], ends]))
    splits = {}
    for k, name in enumerate(SPLITS):
        part = slice(bounds[k], bounds[k + 1])
        take = kept[part]
        splits[name] = Split(
            images=images[part], labels=labels[take], rows=rows[take], paths=paths[take]
        )
    skipped = Counter(index.dropped)
    skipped.update(index.errors.counts)
    return FerData(
        class_names=index.class_names, splits=splits, source=index.source, skipped=skipped
    )

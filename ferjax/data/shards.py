"""Datasets larger than memory: converted once into sharded ArrayRecord files of decoded faces,
then read back by random access, one training batch at a time.

A *store* is a folder:

    manifest.json                       written last (atomically): the store is complete
    labels.npy  rows.npy                int32[N] labels, int64[N] source rows, global order
    embeddings.npy                      float16[N, 256] small face embeddings (neighbour search)
    conversion.json                     how the last conversion went (time, images/s, workers)
    train-00000-of-00042.array_record   one record per face: the raw bytes of uint8[H, W, C]
    ...                                 (splits in the order given, records in the order given)

Records are written uncompressed, one record per chunk (`group_size:1`): a random read is one
`pread` of exactly one face and no decompression, which is what training with random indices
needs (a larger group would make every random read decode its whole group; zstd would save
little on photographs and cost CPU on every read).

Conversion is resumable: each worker writes whole shards under a temporary name and renames them
when complete, so a shard on disk is a finished shard and a rerun converts only missing ones.
`open_or_convert` keys a store by the source's fingerprint, the record list and the settings, so
a changed source or setting is never served from stale shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ferjax.data.fer2013 import file_digest
from ferjax.errors import DataFormatError, DataNotFoundError
from ferjax.progress import duration

FORMAT = "ferjax-shards"
VERSION = 2  # 2: per-face pixel std and content hash (for cleaning without a pass over the data)
WRITER_OPTIONS = "group_size:1,uncompressed"
# No readahead and no internal thread pool: random single-record reads (ArrayRecord's advice).
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
MANIFEST = "manifest.json"
PLAN = "plan.json"
EMBEDDING_SIDE = 16
EMBEDDING_KIND = f"gray{EMBEDDING_SIDE}x{EMBEDDING_SIDE}-box-mean-centred"
MAX_ERRORS_SHOWN = 20
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TMP = ".tmp-"


class FaceRecord(NamedTuple):
    """One face of a reader's index. Any object with these four attributes will do.

    path: image file; box: crop box as the reader's decode function expects it, or None;
    label: class index; row: 1-based row (or file index) of the face in its source.
    """

    path: str
    box: tuple | None
    label: int
    row: int


Decode = Callable[[str, Any, int, int], np.ndarray]


# ----------------------------------------------------------------------------- fingerprints


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _plain_box(box) -> list | None:
    """A box as a JSON list of Python numbers (numpy scalars would hash differently)."""
    if box is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in box]


def source_fingerprint(
    records: Mapping[str, Sequence[FaceRecord]], list_files: Sequence[str] = ()
) -> str:
    """A cheap content fingerprint of a source: the hashes of its list/CSV files plus the size
    and modification time (ns) of every image. Recomputing it costs one `stat` per image.

    An image rewritten with the same size and mtime is not noticed (as with make or rsync)."""
    h = hashlib.blake2b(digest_size=16)
    for path in list_files:
        if not os.path.isfile(path):
            raise DataNotFoundError(f"{path}: list file not found")
        h.update(f"list {os.fspath(path)} {file_digest(path)}\n".encode())
    seen = set()
    for split in records:
        for r in records[split]:
            path = os.fspath(r.path)
            if path in seen:
                continue
            seen.add(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise DataNotFoundError(f"{path}: image file not found") from None
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def records_digest(records: Mapping[str, Sequence[FaceRecord]]) -> str:
    """Hash of the record list itself (split, path, box, label, row of every face, in order)."""
    h = hashlib.blake2b(digest_size=16)
    for split in records:
        for r in records[split]:
            line = [split, os.fspath(r.path), _plain_box(r.box), int(r.label), int(r.row)]
            h.update(json.dumps(line).encode() + b"\n")
    return h.hexdigest()


def store_key(
    image_shape: tuple[int, int, int], settings: Mapping, fingerprint: str, digest: str
) -> str:
    """What a store's content depends on: format version, image shape, settings, source."""
    return _digest(
        json.dumps(
            {
                "version": VERSION,
                "image_shape": list(image_shape),
                "settings": settings,
                "source_fingerprint": fingerprint,
                "records_digest": digest,
            },
            sort_keys=True,
        ).encode()
    )


# ----------------------------------------------------------------------------- manifest


@dataclasses.dataclass(frozen=True)
class Shard:
    file: str
    records: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a store holds. `splits` maps split name -> its shards, in global order.

    `conversion` is how the last conversion went (not part of manifest.json, so that the same
    inputs always give a byte-identical manifest).
    """

    directory: str
    image_shape: tuple[int, int, int]
    splits: dict[str, tuple[Shard, ...]]
    settings: dict
    source_fingerprint: str
    records_digest: str
    key: str
    conversion: dict | None = None

    @property
    def split_sizes(self) -> dict[str, int]:
        return {s: sum(sh.records for sh in shards) for s, shards in self.splits.items()}

    @property
    def split_offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for s, n in self.split_sizes.items():
            out[s], at = at, at + n
        return out

    @property
    def num_records(self) -> int:
        return sum(self.split_sizes.values())

    def to_json(self) -> dict:
        h, w, c = self.image_shape
        offsets = self.split_offsets
        return {
            "format": FORMAT,
            "version": VERSION,
            "image_shape": [h, w, c],
            "dtype": "uint8",
            "record_bytes": h * w * c,
            "writer_options": WRITER_OPTIONS,
            "num_records": self.num_records,
            "splits": {
                s: {
                    "records": self.split_sizes[s],
                    "offset": offsets[s],
                    "shards": [dataclasses.asdict(sh) for sh in shards],
                }
                for s, shards in self.splits.items()
            },
            "labels": {"file": "labels.npy", "dtype": "int32"},
            "rows": {"file": "rows.npy", "dtype": "int64"},
            "embeddings": {
                "file": "embeddings.npy",
                "kind": EMBEDDING_KIND,
                "dtype": "float16",
                "dim": EMBEDDING_SIDE * EMBEDDING_SIDE,
            },
            "settings": self.settings,
            "source_fingerprint": self.source_fingerprint,
            "records_digest": self.records_digest,
            "key": self.key,
        }

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        """Reads `directory/manifest.json`; raises DataNotFoundError or DataFormatError."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise DataNotFoundError(
                f"{path}: not found; expected a sharded store written by ferjax.data.shards"
            )
        try:
            m = json.loads(path.read_text())
            if m.get("format") != FORMAT or m.get("version") != VERSION:
                raise DataFormatError(
                    f"{path}: format {m.get('format')!r} version {m.get('version')!r}, expected "
                    f"{FORMAT!r} version {VERSION}"
                )
            splits = {
                s: tuple(Shard(str(sh["file"]), int(sh["records"])) for sh in v["shards"])
                for s, v in m["splits"].items()
            }
            conversion = None
            log = Path(directory) / "conversion.json"
            if log.is_file():
                conversion = json.loads(log.read_text())
            return cls(
                directory=str(directory),
                image_shape=tuple(int(v) for v in m["image_shape"]),
                splits=splits,
                settings=m["settings"],
                source_fingerprint=m["source_fingerprint"],
                records_digest=m["records_digest"],
                key=m["key"],
                conversion=conversion,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{path}: malformed manifest ({e!r})") from None


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}{_TMP}{os.getpid()}{path.suffix}")
    write(str(tmp))
    os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
    _write_atomic(path, lambda t: Path(t).write_text(json.dumps(obj, indent=1) + "\n"))


def _save_npy(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda t: np.save(t, array))


# ----------------------------------------------------------------------------- conversion


def face_embedding(face: np.ndarray) -> np.ndarray:
    """float16[256]: a 16x16 box-filtered grayscale thumbnail of uint8[H, W, C], in 0..1 with
    its own mean removed.

    Why: neighbours for SMOTE/ADASYN must be found without reading the pixels again. 16x16
    keeps pose and the layout of eyes, brows and mouth (what decides whether two faces blend
    into a plausible one) and drops identity detail and noise; removing the mean stops global
    brightness from dominating the distance. 512 bytes a face: 147 MB for AffectNet's 287k."""
    from PIL import Image

    gray = face[..., 0] if face.shape[-1] == 1 else None
    im = Image.fromarray(gray) if gray is not None else Image.fromarray(face).convert("L")
    thumb = im.resize((EMBEDDING_SIDE, EMBEDDING_SIDE), Image.Resampling.BOX)
    x = np.asarray(thumb, np.float32).reshape(-1) / 255.0
    return (x - x.mean()).astype(np.float16)


@dataclasses.dataclass
class _ShardJob:
    out_dir: str
    name: str
    index: int  # position in the global shard order (for ordering errors)
    items: list  # [(path, box)]
    decode: Decode
    image_shape: tuple[int, int, int]


@dataclasses.dataclass
class _ShardResult:
    name: str
    index: int
    images: int
    errors: list[str]


def pixel_summary(face: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """(pixel std, 128-bit content hash) of one uint8[H, W, C] face, exactly as
    ferjax.data.cleaning computes them, so cleaning a stored split needs no pass over it."""
    std = face.reshape(1, -1).std(1, np.float32)[0]
    digest = np.frombuffer(hashlib.blake2b(face.tobytes(), digest_size=16).digest(), np.uint8)
    return std, digest


def _decode_checked(job: _ShardJob, path: str, box) -> np.ndarray:
    h, w, c = job.image_shape
    face = job.decode(path, box, h, c)
    face = np.asarray(face)
    if face.ndim == 2 and c == 1:
        face = face[..., None]
    if face.dtype != np.uint8 or face.shape != (h, w, c):
        raise ValueError(
            f"decode returned {face.dtype}{list(face.shape)}, expected uint8{[h, w, c]}"
        )
    return face


def _convert_shard(job: _ShardJob) -> _ShardResult:
    """Decodes one shard's faces and writes the shard; runs in a worker process. A shard with
    a face that fails to decode is not written (its errors are returned)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    out = Path(job.out_dir)
    final = out / job.name
    tmp = out / f".{job.name}{_TMP}{os.getpid()}"
    errors: list[str] = []
    embeddings = np.zeros((len(job.items), EMBEDDING_SIDE * EMBEDDING_SIDE), np.float16)
    stds = np.zeros(len(job.items), np.float32)
    hashes = np.zeros((len(job.items), 16), np.uint8)
    try:
        writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
        try:
            for k, (path, box) in enumerate(job.items):
                try:
                    face = _decode_checked(job, path, box)
                except Exception as e:  # any failure of the reader's decode names the file
                    detail = str(e).splitlines()[0] if str(e) else ""
                    errors.append(f"{path}: cannot decode ({type(e).__name__}: {detail[:160]})")
                    continue
                if not errors:
                    writer.write(face.tobytes())
                    embeddings[k] = face_embedding(face)
                    stds[k], hashes[k] = pixel_summary(face)
        finally:
            writer.close()
    except RuntimeError as e:  # ArrayRecord's I/O errors (disk full...) do not name the file
        raise OSError(f"{tmp}: writing shard {job.name} failed ({e})") from None
    if errors:
        tmp.unlink(missing_ok=True)
        return _ShardResult(job.name, job.index, 0, errors)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    _save_npy(out / f"{job.name}.std.npy", stds)
    _save_npy(out / f"{job.name}.hash.npy", hashes)
    _save_npy(out / f"{job.name}.emb.npy", embeddings)  # last: its presence marks the shard done
    os.replace(tmp, final)
    return _ShardResult(job.name, job.index, len(job.items), [])


def _shard_is_complete(out: Path, shard: Shard) -> bool:
    from array_record.python.array_record_module import ArrayRecordReader

    path, emb = out / shard.file, out / f"{shard.file}.emb.npy"
    extra = [out / f"{shard.file}.{part}.npy" for part in ("std", "hash")]
    if not (path.is_file() and emb.is_file() and all(p.is_file() for p in extra)):
        return False
    try:
        reader = ArrayRecordReader(str(path), READER_OPTIONS)
        count = reader.num_records()
        reader.close()
        return count == shard.records and len(np.load(emb, mmap_mode="r")) == shard.records
    except (OSError, RuntimeError, ValueError):
        return False


def _layout(sizes: Mapping[str, int], shard_size: int) -> dict[str, tuple[Shard, ...]]:
    out = {}
    for split, n in sizes.items():
        count = max(1, -(-n // shard_size)) if n else 0
        out[split] = tuple(
            Shard(
                f"{split}-{k:05d}-of-{count:05d}.array_record", min(shard_size, n - k * shard_size)
            )
            for k in range(count)
        )
    return out


class _Progress:
    """A tqdm bar on a terminal, otherwise a line every `seconds`: shards, images/s, ETA."""

    def __init__(self, shards: int, images: int, stream, seconds: float, label: str):
        self.shards, self.images, self.stream, self.seconds = shards, images, stream, seconds
        self.label = label
        self.done_shards = self.done_images = 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        if getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=images, unit="img", file=stream, desc=label, smoothing=0.1)

    def update(self, images: int) -> None:
        self.done_shards += 1
        self.done_images += images
        if self.bar is not None:
            self.bar.update(images)
            return
        now = time.perf_counter()
        if now - self.last >= self.seconds:
            self.last = now
            rate = self.done_images / max(now - self.start, 1e-9)
            eta = (self.images - self.done_images) / rate if rate else float("inf")
            print(
                f"{self.label}: {self.done_shards}/{self.shards} shards, "
                f"{self.done_images:,}/{self.images:,} images, {rate:,.0f} images/s, "
                f"ETA {duration(eta)}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.start


def _split_columns(records: Mapping[str, Sequence[FaceRecord]]):
    for split in records:
        if not _SPLIT_NAME.match(split):
            raise ValueError(f"split name {split!r}: expected letters, digits and _ only")
    items = {s: [(os.fspath(r.path), r.box) for r in records[s]] for s in records}
    labels = np.asarray([int(r.label) for s in records for r in records[s]], np.int32)
    rows = np.asarray([int(r.row) for s in records for r in records[s]], np.int64)
    return items, labels, rows


@contextlib.contextmanager
def _locked(out: Path, stream):
    """One conversion per store folder at a time (a second one waits, then resumes)."""
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"shards: {out}: waiting for another conversion to finish", file=stream)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _check_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] not in (1, 3) or shape[0] < 1:
        raise ValueError(f"image_shape {image_shape}: expected (size, size, 1 or 3)")
    return shape


def convert(
    records: Mapping[str, Sequence[FaceRecord]],
    decode: Decode,
    out_dir: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int],
    source_fingerprint: str,
    settings: Mapping[str, Any],
    shard_size: int = 1024,
    workers: int | None = None,
    progress_seconds: float = 10.0,
    stream=None,
) -> Manifest:
    """Converts every face of `records` (split -> records, in order) into a store in `out_dir`.

    decode: top-level (picklable) `decode(path, box, size, channels) -> uint8[size, size, C]`.
    settings: JSON-ready conversion settings (image size, channels, crop policy, reader
    version...): they and `source_fingerprint` identify the store. workers: processes
    (default: all cores); each decodes and writes whole shards of `shard_size` faces.

    Resumable: shards already in `out_dir` (from an interrupted run of the same conversion) are
    kept, only missing ones are converted. Every face that fails to decode is collected; then one
    DataFormatError lists them (completed shards are kept). Returns the Manifest, whose
    `conversion` says which shards this call converted.
    """
    stream = sys.stderr if stream is None else stream
    image_shape = _check_shape(image_shape)
    settings = json.loads(json.dumps(dict(settings), sort_keys=True))
    if shard_size < 1:
        raise ValueError(f"shard_size {shard_size}: expected a positive number of faces")
    workers = workers or len(os.sched_getaffinity(0))
    items, labels, rows = _split_columns(records)
    digest = records_digest(records)
    key = store_key(image_shape, settings, source_fingerprint, digest)
    layout = _layout({s: len(v) for s, v in items.items()}, shard_size)
    manifest = Manifest(
        str(out_dir), image_shape, layout, settings, source_fingerprint, digest, key
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out, stream):
        if (out / MANIFEST).is_file():
            existing = Manifest.load(out)
            if existing.key != key:
                raise DataFormatError(
                    f"{out / MANIFEST}: this store was converted from another source or with "
                    "other settings; expected an empty folder or the same conversion"
                )
            files = [sh.file for shards in existing.splits.values() for sh in shards]
            for kind in ("emb", "std", "hash"):  # left by a run killed just after the manifest
                for part in out.glob(f"*.{kind}.npy"):
                    part.unlink()
            nothing = {"converted_shards": [], "reused_shards": files, "images_converted": 0}
            return dataclasses.replace(existing, conversion=nothing)
        plan = {"key": key, "layout": manifest.to_json()["splits"], "version": VERSION}
        if (out / PLAN).is_file() and json.loads((out / PLAN).read_text()) != plan:
            raise DataFormatError(
                f"{out / PLAN}: a partial conversion of another source, settings or shard size "
                "is in this folder; expected a matching one (remove the folder to start over)"
            )
        _write_json(out / PLAN, plan)
        for stale in out.glob(f".*{_TMP}*"):
            stale.unlink()
        jobs, reused, index = [], [], 0
        for split, shards in layout.items():
            at = 0
            for shard in shards:
                if _shard_is_complete(out, shard):
                    reused.append(shard.file)
                else:
                    chunk = items[split][at : at + shard.records]
                    jobs.append(_ShardJob(str(out), shard.file, index, chunk, decode, image_shape))
                at += shard.records
                index += 1
        results = _run_jobs(jobs, workers, progress_seconds, stream, f"shards {out.name}")
        errors = [e for r in sorted(results, key=lambda r: r.index) for e in r.errors]
        seconds = results.seconds if results else 0.0
        if errors:
            shown = [f"  {e}" for e in errors[:MAX_ERRORS_SHOWN]]
            if len(errors) > MAX_ERRORS_SHOWN:
                shown.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
            raise DataFormatError(
                "\n".join(
                    [
                        f"{out}: {len(errors)} image(s) failed to decode during conversion, "
                        "expected every listed image to decode (completed shards are kept; fix "
                        "or drop these images and rerun to convert the rest):",
                        *shown,
                    ]
                )
            )
        _finish(out, manifest, labels, rows)
        converted = [j.name for j in jobs]
        images = sum(r.images for r in results)
        conversion = {
            "converted_shards": converted,
            "reused_shards": reused,
            "images_converted": images,
            "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1) if seconds else None,
            "workers": min(workers, max(len(jobs), 1)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_json(out / "conversion.json", conversion)
        rate = f"{images / seconds:,.0f} images/s" if seconds else "nothing to convert"
        print(
            f"shards: {out}: converted {images:,} images ({len(converted)} shards, "
            f"{len(reused)} reused) in {seconds:.1f} s: {rate} with {conversion['workers']} "
            "worker(s)",
            file=stream,
            flush=True,
        )
        return dataclasses.replace(manifest, conversion=conversion)


class _Results(list):
    seconds = 0.0


def _run_jobs(jobs: list[_ShardJob], workers: int, progress_seconds: float, stream, label: str):
    results = _Results()
    if not jobs:
        return results
    total = sum(len(j.items) for j in jobs)
    progress = _Progress(len(jobs), total, stream, progress_seconds, label)
    try:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                results.append(_convert_shard(job))
                progress.update(results[-1].images)
        else:
            try:
                pickle.dumps(jobs[0].decode)
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise TypeError(
                    f"decode {jobs[0].decode!r} must be a top-level function to run in worker "
                    f"processes ({e})"
                ) from None
            context = multiprocessing.get_context("forkserver")
            with context.Pool(min(workers, len(jobs))) as pool:
                for result in pool.imap_unordered(_convert_shard, jobs, chunksize=1):
                    results.append(result)
                    progress.update(result.images)
    finally:
        results.seconds = progress.close()
    return results


def _finish(out: Path, manifest: Manifest, labels: np.ndarray, rows: np.ndarray) -> None:
    """Writes labels, rows and embeddings, then the manifest (last), then tidies up."""
    files = [sh.file for shards in manifest.splits.values() for sh in shards]
    parts = []
    for kind, name in (("emb", "embeddings"), ("std", "pixel_std"), ("hash", "pixel_hash")):
        pieces = [out / f"{f}.{kind}.npy" for f in files]
        _save_npy(out / f"{name}.npy", np.concatenate([np.load(p) for p in pieces]))
        parts += pieces
    _save_npy(out / "labels.npy", labels)
    _save_npy(out / "rows.npy", rows)
    _write_json(out / MANIFEST, manifest.to_json())
    for part in parts:
        part.unlink()
    (out / PLAN).unlink(missing_ok=True)


def _describe_difference(old: Manifest, shape, settings, fingerprint, digest) -> str:
    what = []
    if tuple(old.image_shape) != tuple(shape):
        what.append(f"image shape {list(old.image_shape)} -> {list(shape)}")
    for k in sorted(set(old.settings) | set(settings)):
        if old.settings.get(k) != settings.get(k):
            what.append(f"setting {k} {old.settings.get(k)!r} -> {settings.get(k)!r}")
    if old.source_fingerprint != fingerprint:
        what.append("source files changed (an image or list file was added, removed or modified)")
    if old.records_digest != digest:
        what.append("the record list changed (paths, boxes, labels or rows)")
    return "; ".join(what) or "format changed"


def open_or_convert(
    records: Mapping[str, Sequence[FaceRecord]],
    decode: Decode,
    root: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int],
    source_fingerprint: str,
    settings: Mapping[str, Any],
    shard_size: int = 1024,
    workers: int | None = None,
    allow_reconvert: bool = True,
    split: str | None = None,
    stream=None,
) -> ShardedImages:
    """The store of these records and settings under `root`, converted first if needed.

    Stores live in `root/<H>x<W>x<C>-<key>`, the key hashing the source fingerprint, the record
    list and the settings, so a store is reused only when all three match. When other stores
    under `root` do not match (a changed image or list, another setting), a fresh store is
    converted next to them (and they are named on `stream`, to be deleted), or, with
    `allow_reconvert=False`, one DataFormatError says what changed. An interrupted conversion
    of the same key resumes.
    """
    stream = sys.stderr if stream is None else stream
    image_shape = _check_shape(image_shape)
    settings = json.loads(json.dumps(dict(settings), sort_keys=True))
    digest = records_digest(records)
    key = store_key(image_shape, settings, source_fingerprint, digest)
    h, w, c = image_shape
    root = Path(root)
    directory = root / f"{h}x{w}x{c}-{key[:16]}"
    if (directory / MANIFEST).is_file():
        if Manifest.load(directory).key != key:
            raise DataFormatError(f"{directory / MANIFEST}: key differs from the folder's name")
        return ShardedImages(directory, split)
    others = []
    if root.is_dir():
        others = sorted(p for p in root.iterdir() if (p / MANIFEST).is_file() and p != directory)
    if others:
        old = Manifest.load(others[-1])
        change = _describe_difference(old, image_shape, settings, source_fingerprint, digest)
        if not allow_reconvert:
            raise DataFormatError(
                f"{others[-1]}: sharded store is stale ({change}); expected a store matching the "
                f"current source and settings (allow reconversion, or delete it)"
            )
        for other in others:
            print(
                f"shards: {other}: stale store ({change}); converting afresh into {directory} "
                "(delete the stale one to free its disk space)",
                file=stream,
            )
    convert(
        records,
        decode,
        directory,
        image_shape=image_shape,
        source_fingerprint=source_fingerprint,
        settings=settings,
        shard_size=shard_size,
        workers=workers,
        stream=stream,
    )
    return ShardedImages(directory, split)


# ----------------------------------------------------------------------------- reading


class ShardedImages:
    """Random access to the faces of a store: `gather(indices) -> uint8[B, H, W, C]`.

    split: None for every record (global order: splits in the manifest's order), or one split's
    records (indices local to that split, as the sampler's index records are). Memory is
    O(batch): each face is read with one `pread` straight into the output array; nothing is
    cached but ~30 KB of index per open shard. Thread-safe: gather may be called from tf.data
    (`tf_gather`), from `prefetch_batches` threads, or both; readers open lazily.
    """

    def __init__(self, directory: str | os.PathLike, split: str | None = None, threads: int = 4):
        self.directory = Path(directory)
        self.manifest = Manifest.load(self.directory)
        m = self.manifest
        if split is not None and split not in m.splits:
            raise DataFormatError(
                f"{self.directory / MANIFEST}: no split {split!r}; expected one of "
                f"{', '.join(m.splits)}"
            )
        self.split = split
        names = [split] if split is not None else list(m.splits)
        self._files = [self.directory / sh.file for s in names for sh in m.splits[s]]
        for f in self._files:
            if not f.is_file():
                raise DataNotFoundError(f"{f}: shard listed in {MANIFEST} not found")
        counts = [sh.records for s in names for sh in m.splits[s]]
        self._counts = np.asarray(counts, np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._len = int(self._counts.sum())
        self._offset = m.split_offsets[split] if split is not None else 0
        self.shape = tuple(m.image_shape)
        self.dtype = np.dtype(np.uint8)
        self.threads = threads
        self._record_bytes = int(np.prod(self.shape))
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._readers: list = [None] * len(self._files)
        self._open_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_readers", "_open_lock", "_pool"):
            del state[k]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        part = f"split={self.split!r}, " if self.split else ""
        return (
            f"ShardedImages({str(self.directory)!r}, {part}records={self._len}, shape={self.shape})"
        )

    @property
    def splits(self) -> dict[str, int]:
        """Records per split of the whole store."""
        return self.manifest.split_sizes

    def _slice(self, name: str, split: str | None) -> np.ndarray:
        split = self.split if split is None else split
        array = np.load(self.directory / name, mmap_mode="r")
        if split is None:
            return np.array(array)
        if split not in self.manifest.splits:
            raise KeyError(f"split {split!r}: expected one of {', '.join(self.manifest.splits)}")
        at = self.manifest.split_offsets[split]
        return np.array(array[at : at + self.manifest.split_sizes[split]])

    def labels(self, split: str | None = None) -> np.ndarray:
        """int32[N] labels of `split` (default: this view's records)."""
        return self._slice("labels.npy", split)

    def rows(self, split: str | None = None) -> np.ndarray:
        """int64[N] source rows of `split` (default: this view's records)."""
        return self._slice("rows.npy", split)

    def embeddings(self, split: str | None = None) -> np.ndarray:
        """float16[N, 256] face embeddings (see `face_embedding`) of `split`."""
        return self._slice("embeddings.npy", split)

    def pixel_std(self, split: str | None = None) -> np.ndarray:
        """float32[N] pixel standard deviation of each face (see `pixel_summary`)."""
        return self._slice("pixel_std.npy", split)

    def pixel_hash(self, split: str | None = None) -> np.ndarray:
        """uint8[N, 16] content hash of each face (see `pixel_summary`)."""
        return self._slice("pixel_hash.npy", split)

    def _reader(self, shard: int):
        reader = self._readers[shard]
        if reader is not None:
            return reader
        from array_record.python.array_record_module import ArrayRecordReader

        with self._open_lock:
            if self._readers[shard] is None:
                path = self._files[shard]
                reader = ArrayRecordReader(str(path), READER_OPTIONS)
                if reader.num_records() != self._counts[shard]:
                    raise DataFormatError(
                        f"{path}: {reader.num_records()} records, expected "
                        f"{self._counts[shard]} (per {MANIFEST})"
                    )
                self._readers[shard] = reader
        return self._readers[shard]

    def _read_shard(self, shard: int, positions: np.ndarray, slots: np.ndarray, out) -> None:
        """Reads records `positions` of one shard into rows `slots` of out (uint8[B, bytes]).
        One record per call: a batched read would hold every record of the batch twice more."""
        reader = self._reader(shard)
        for pos, slot in zip(positions.tolist(), slots.tolist()):
            blob = reader.read([pos])[0]
            if len(blob) != self._record_bytes:
                raise DataFormatError(
                    f"{self._files[shard]}: record {pos} has {len(blob)} bytes, expected "
                    f"{self._record_bytes} (uint8{list(self.shape)})"
                )
            out[slot] = np.frombuffer(blob, np.uint8)

    def gather(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8[B, H, W, C]: the faces at int[B] `indices` (any order, repeats allowed; each
        distinct face is read once). Shards are read in parallel on `threads` threads."""
        idx = np.asarray(indices).reshape(-1).astype(np.int64, copy=False)
        if out is None:
            out = np.empty((len(idx), *self.shape), np.uint8)
        elif out.shape != (len(idx), *self.shape) or out.dtype != np.uint8:
            raise ValueError(f"out: {out.dtype}{list(out.shape)}, expected uint8 [B, *shape]")
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= self._len:
            bad = idx[(idx < 0) | (idx >= self._len)][0]
            raise IndexError(
                f"index {bad} out of range for {self._len} records in {self.directory}"
            )
        flat = out.reshape(len(idx), -1)
        unique, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
        shard = np.searchsorted(self._starts, unique, side="right") - 1
        positions = unique - self._starts[shard]
        cuts = np.flatnonzero(np.diff(shard)) + 1
        groups = [
            (int(shard[g[0]]), positions[g], first[g])
            for g in np.split(np.arange(len(unique)), cuts)
        ]
        if self.threads <= 1 or len(groups) == 1:
            for s, p, slots in groups:
                self._read_shard(s, p, slots, flat)
        else:
            if self._pool is None:
                with self._open_lock:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(self.threads, "ferjax-shards")
            futures = [self._pool.submit(self._read_shard, s, p, sl, flat) for s, p, sl in groups]
            for f in futures:
                f.result()
        repeats = np.flatnonzero(first[inverse] != np.arange(len(idx)))
        if len(repeats):
            out[repeats] = out[first[inverse[repeats]]]
        return out

    def gather_pairs(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xi, xj), uint8[B, H, W, C] each, for a batch of index records: faces shared by i
        and j (j = i for real examples) are read once. Both are views of one uint8[2B, ...]
        array: a prefetched pair batch costs twice an image batch (75 MiB at 256 x 224 px)."""
        both = self.gather(np.concatenate([np.ravel(i), np.ravel(j)]))
        return both[: len(both) // 2], both[len(both) // 2 :]

    def tf_gather(self, indices):
        """For tf.data `map`: int tensor [B] -> uint8 tensor [B, H, W, C] via tf.numpy_function
        (TensorFlow runs it on its own threads; gather is thread-safe)."""
        from ferjax.data.pipeline import import_tensorflow

        tf = import_tensorflow()
        out = tf.numpy_function(self.gather, [indices], tf.uint8, stateful=False)
        out.set_shape([indices.shape[0], *self.shape])
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for k, reader in enumerate(self._readers):
            if reader is not None:
                reader.close()
                self._readers[k] = None

    def __enter__(self) -> ShardedImages:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


T = TypeVar("T")
U = TypeVar("U")


def prefetch_batches(
    index_batches: Iterable[T], gather: Callable[[T], U], depth: int = 2
) -> Iterator[U]:
    """Yields gather(b) for each b of `index_batches`, in order, with up to `depth` batches
    gathered ahead on background threads (so reading overlaps the device step). Host memory:
    up to depth + 1 gathered batches alive at once, plus the one the caller still holds (at
    256 x 224x224x3, 37.6 MB a batch: depth 2 -> ~150 MB; measured peaks in bench/shards.py).

    Example: `prefetch_batches(batches, lambda b: {**b, "x": store.gather(b["i"])}, 3)`."""
    if depth < 1:
        raise ValueError(f"depth {depth}: expected at least 1")
    pending: deque = deque()
    batches = iter(index_batches)
    with ThreadPoolExecutor(depth, "ferjax-prefetch") as pool:
        try:
            for b in batches:
                pending.append(pool.submit(gather, b))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

"""Conversion of an index of face records into a shard store: parallel, resumable, one
shard per job; `open_or_convert` reuses a store while its source and settings are unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferjax.data.store.manifest import (
    EMBEDDING_SIDE,
    MANIFEST,
    MAX_ERRORS_SHOWN,
    PLAN,
    READER_OPTIONS,
    SPLIT_NAME,
    TMP_MARK,
    VERSION,
    WRITER_OPTIONS,
    Decode,
    FaceRecord,
    Manifest,
    Shard,
    records_digest,
    save_npy,
    store_key,
    write_json,
)
from ferjax.data.store.reader import ShardedImages
from ferjax.runtime.errors import DataFormatError
from ferjax.runtime.progress import duration


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
    tmp = out / f".{job.name}{TMP_MARK}{os.getpid()}"
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
    save_npy(out / f"{job.name}.std.npy", stds)
    save_npy(out / f"{job.name}.hash.npy", hashes)
    save_npy(out / f"{job.name}.emb.npy", embeddings)  # last: its presence marks the shard done
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
        if not SPLIT_NAME.match(split):
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
        write_json(out / PLAN, plan)
        for stale in out.glob(f".*{TMP_MARK}*"):
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
        write_json(out / "conversion.json", conversion)
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
        save_npy(out / f"{name}.npy", np.concatenate([np.load(p) for p in pieces]))
        parts += pieces
    save_npy(out / "labels.npy", labels)
    save_npy(out / "rows.npy", rows)
    write_json(out / MANIFEST, manifest.to_json())
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

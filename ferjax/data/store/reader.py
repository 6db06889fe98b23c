"""Reading a shard store: `ShardedImages` gathers faces by random access (one pread per face),
`prefetch_batches` reads the next batches in background threads."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from ferjax.data.store.manifest import (
    MANIFEST,
    READER_OPTIONS,
    Manifest,
)
from ferjax.runtime.errors import DataFormatError, DataNotFoundError


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
        from ferjax.runtime.tensorflow import import_tensorflow

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
    256 x 224x224x3, 38.5 MB a batch: depth 2 -> ~150 MB; measured peaks in bench/shards.py).

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

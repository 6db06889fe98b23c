"""Datasets larger than memory: a reader's index converted once into a shard store
(ferjax.data.store) and splits whose images are read from it on demand.

`data.placement=disk` (or `auto` when the training images would not fit in host memory) turns
an indexed source (a format with an index: rafdb, affectnet) into a FerData whose
training split holds a
`StoredImages`: an array-like view of uint8[N, H, W, C] that reads faces only when sliced or
gathered. Cleaning, class selection and the sampler work on it without reading the pixels
(the store keeps each face's pixel std, content hash and a small embedding from the
conversion); the training loop gathers each step's faces from it on background threads. The
validation and test splits are read into memory (they are evaluated as a whole every epoch).
"""

from __future__ import annotations

import os
from collections import Counter

import ml_collections
import numpy as np

from ferjax.data.dataset import SPLITS, FerData, Split
from ferjax.data.sources.decode import FaceIndex, decode_face
from ferjax.data.sources.fer2013 import default_cache_dir
from ferjax.data.store.manifest import source_fingerprint
from ferjax.data.store.reader import ShardedImages
from ferjax.data.store.writer import open_or_convert

# Bump when the readers' decoding changes the pixels of a face (it is part of a store's key).
READER_VERSION = 1
# Largest chunk of faces read at once by the array interface (slices, iteration).
CHUNK_BYTES = 64 << 20


class StoredImages:
    """uint8[N, H, W, C] faces of a shard store, read on demand.

    Indexing with an integer or boolean array returns another StoredImages (a view: nothing is
    read); an integer or a slice reads the faces into memory. Iteration reads chunks of at most
    CHUNK_BYTES. `gather(idx)` reads the faces at positions idx of this view."""

    def __init__(self, store: ShardedImages, index: np.ndarray | None = None):
        self.store = store
        self.index = np.arange(len(store), dtype=np.int64) if index is None else index
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.store.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"StoredImages({len(self)} x {self.store.shape} in {self.store.directory})"

    def gather(self, idx) -> np.ndarray:
        return self.store.gather(self.index[np.asarray(idx, np.int64)])

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.gather([key])[0]
        if isinstance(key, slice):
            return self.gather(np.arange(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return StoredImages(self.store, self.index[key])

    def chunk(self) -> int:
        return max(1, CHUNK_BYTES // int(np.prod(self.store.shape)))

    def __iter__(self):
        for start in range(0, len(self), self.chunk()):
            yield from self.gather(np.arange(start, min(start + self.chunk(), len(self))))

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"{self!r}: reading every face into memory is not allowed for data.placement=disk"
        )

    # The conversion's per-face summaries, in this view's order.
    def pixel_std(self) -> np.ndarray:
        return self.store.pixel_std()[self.index]

    def pixel_hashes(self) -> list[bytes]:
        return [bytes(h) for h in self.store.pixel_hash()[self.index]]

    def embeddings(self) -> np.ndarray:
        """float16[N, 256] face embeddings (ferjax.data.store.writer.face_embedding)."""
        return self.store.embeddings()[self.index]


def shards_root(cfg: ml_collections.ConfigDict) -> str:
    """Where the stores of `data.name` live: data.shards_dir, or <cache>/shards/<name>."""
    base = cfg.shards_dir or os.path.join(cfg.cache_dir or default_cache_dir(), "shards")
    return os.path.join(base, cfg.name)


def list_files(index: FaceIndex) -> list[str]:
    return sorted({r.source for records in index.splits.values() for r in records})


def stored_data(index: FaceIndex, cfg: ml_collections.ConfigDict) -> FerData:
    """The index converted (once; reused while the source and settings are unchanged) into a
    store under shards_root(cfg): train as StoredImages, val and test read into memory."""
    size, channels = cfg.image_size, cfg.channels
    records = {name: index.splits[name] for name in SPLITS}
    settings = {
        "image_size": size,
        "channels": channels,
        "crop": "box",
        "reader": cfg.name,
        "reader_version": READER_VERSION,
    }
    store = open_or_convert(
        records,
        decode_face,
        shards_root(cfg),
        image_shape=(size, size, channels),
        source_fingerprint=source_fingerprint(records, list_files(index)),
        settings=settings,
        workers=cfg.workers or None,
    )
    index.errors.finish()  # the index's bad rows (decode failures stopped the conversion)
    splits = {}
    for name in SPLITS:
        view = ShardedImages(store.directory, name)
        images = StoredImages(view)
        if name != "train":
            images = images[:]  # evaluated as a whole: in memory
        paths = np.asarray([r.path for r in records[name]], dtype=object)
        splits[name] = Split(images=images, labels=view.labels(), rows=view.rows(), paths=paths)
    skipped = Counter(index.dropped)
    skipped.update(index.errors.counts)
    return FerData(
        class_names=index.class_names,
        splits=splits,
        source=f"{index.source} (streamed from {store.directory})",
        skipped=skipped,
    )

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

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ferjax.data.sources.fer2013 import file_digest
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

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
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
TMP_MARK = ".tmp-"


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
                f"{path}: not found; expected a sharded store written by ferjax.data.store.writer"
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


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}{path.suffix}")
    write(str(tmp))
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda t: Path(t).write_text(json.dumps(obj, indent=1) + "\n"))


def save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda t: np.save(t, array))


# ----------------------------------------------------------------------------- conversion

"""Cleaning of a FerData: blank images, duplicates, cross-split leakage, label-noise lists.

FER2013 has all-black and all-white frames, repeated images, and images that appear in both
the training and the test splits. Each step is a switch in `data.clean`; every removed (or
relabelled) row is counted by reason, split and class, so the data report says exactly what
happened. Steps run in this order and a row is counted under the first reason that removes it:

  blank           pixel std below `blank_std` (all splits)
  duplicate       exact copy of an earlier image in the same split (first one kept)
  leak            a train image that also appears in val/test is removed from train, and a
                  val image that also appears in test is removed from val: test stays intact
  near duplicate  perceptual-hash (DCT pHash, 256 bits) distance <= `near_hamming` to an earlier
                  image of the same split, or (train only) to any val/test image (opt-in)
  label noise     rows listed in `label_noise_file` dropped or relabelled (opt-in)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import ml_collections
import numpy as np

from ferjax.data.classes import canonical
from ferjax.data.dataset import FerData, Split, to_channels
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

SPLIT_ORDER = ("train", "val", "test")
REMOVALS = ("blank", "duplicate", "leak", "near duplicate", "label noise dropped")


def pixel_std(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per-image pixel standard deviation of uint8[N, H, W(, C)] -> float32[N] (chunked; a
    stored split gives the values its conversion computed)."""
    if hasattr(images, "pixel_std"):
        return images.pixel_std()
    out = np.empty(len(images), np.float32)
    for s in range(0, len(images), chunk):
        out[s : s + chunk] = images[s : s + chunk].reshape(-1, images[0].size).std(1, np.float32)
    return out


def pixel_hashes(images: np.ndarray) -> list[bytes]:
    """A 128-bit content hash of each image's pixels (a stored split gives the hashes its
    conversion computed)."""
    if hasattr(images, "pixel_hashes"):
        return images.pixel_hashes()
    return [hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in images]


def _dct_matrix(n: int, k: int) -> np.ndarray:
    i = np.arange(n)
    return np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * n))


HASH_SIZE = 16  # DCT frequencies per axis: 256-bit hashes


def perceptual_hashes(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """DCT perceptual hash of uint8[N, H, W(, C)] -> packed bits uint8[N, 32] (256 bits).

    Bit k says whether the k-th of the 16x16 lowest DCT frequencies is above the image's median
    frequency (DC excluded from the median): invariant to brightness and contrast, robust to
    noise, blur and re-encoding. 16x16 rather than the classic 8x8 because aligned 48x48 faces
    are too alike at 8x8: distinct faces often land within a few bits of each other.
    """
    h, w = images.shape[1:3]
    # Bounded chunks (stored splits are read from disk chunk by chunk).
    chunk = max(1, min(chunk, (64 << 20) // int(np.prod(images.shape[1:]))))
    dh = _dct_matrix(h, HASH_SIZE).astype(np.float32)
    dw = _dct_matrix(w, HASH_SIZE).astype(np.float32)
    out = np.empty((len(images), HASH_SIZE * HASH_SIZE // 8), np.uint8)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk]
        if x.ndim == 4:  # hashed on the luma of colour images
            x = to_channels(x, 1)[..., 0]
        x = x.astype(np.float32)
        coeffs = (dh @ x @ dw.T).reshape(len(x), -1)  # 2D DCT, lowest frequencies only
        med = np.median(coeffs[:, 1:], axis=1, keepdims=True)
        out[s : s + chunk] = np.packbits(coeffs > med, axis=1)
    return out


def _signs(hashes: np.ndarray) -> np.ndarray:
    return np.unpackbits(hashes, axis=1).astype(np.float32) * 2.0 - 1.0


def near_duplicate_mask(
    hashes: np.ndarray, threshold: int, against: np.ndarray | None = None, chunk: int = 512
) -> np.ndarray:
    """bool[N]: hash i is within `threshold` bits of an earlier hash (against=None) or of any
    hash in `against`. Hamming distances of all pairs via a matrix product of +-1 codes
    (d = (bits - x.y) / 2): O(N*M) but at BLAS speed, in chunks of `chunk` rows."""
    mask = np.zeros(len(hashes), bool)
    if len(hashes) == 0 or (against is not None and len(against) == 0):
        return mask
    x = _signs(hashes)
    ref = x if against is None else _signs(against)
    min_dot = x.shape[1] - 2 * threshold - 0.5  # distance <= threshold  <=>  x.y >= min_dot
    for s in range(0, len(x), chunk):
        block = x[s : s + chunk]
        if against is not None:
            mask[s : s + chunk] = (block @ ref.T >= min_dot).any(axis=1)
            continue
        near = np.tril(block @ block.T >= min_dot, k=-1).any(axis=1)  # earlier in this chunk
        if s:
            near |= (block @ ref[:s].T >= min_dot).any(axis=1)
        mask[s : s + chunk] = near
    return mask


class CleaningLog:
    """Counts rows removed (or relabelled) per reason, split and class, and lists them.

    counts[reason] = {"total": n, "by_split": {split: n}, "by_class": {class: n},
    "rows": {split: [Split.rows ids]}, and "paths": {split: [files]} for image folders}.
    """

    def __init__(self, class_names: tuple[str, ...]):
        self.class_names = class_names
        self.counts: dict[str, dict] = {}

    def enable(self, reason: str) -> None:
        self.counts.setdefault(reason, {"total": 0, "by_split": {}, "by_class": {}, "rows": {}})

    def add(self, reason: str, split: str, part: Split) -> None:
        """Records the examples of `part` (taken from `split`) under `reason`."""
        self.enable(reason)
        entry = self.counts[reason]
        entry["total"] += len(part)
        if not len(part):
            return
        entry["by_split"][split] = entry["by_split"].get(split, 0) + len(part)
        for c, n in enumerate(np.bincount(part.labels, minlength=len(self.class_names))):
            if n:
                name = self.class_names[c]
                entry["by_class"][name] = entry["by_class"].get(name, 0) + int(n)
        entry["rows"].setdefault(split, []).extend(int(r) for r in part.rows)
        if part.paths is not None:
            entry.setdefault("paths", {}).setdefault(split, []).extend(map(str, part.paths))


def summary_line(counts: dict) -> str:
    """One line for the console, e.g. 'cleaning: removed 12 row(s) (blank 3, duplicate 9)'."""
    parts = [f"{r} {e['total']}" for r, e in counts.items()]
    removed = sum(e["total"] for r, e in counts.items() if r in REMOVALS)
    return f"cleaning: removed {removed} row(s) (" + ", ".join(parts) + ")"


def _drop(splits: dict[str, Split], name: str, remove: np.ndarray, reason: str, log) -> None:
    log.add(reason, name, splits[name].take(remove))
    if remove.any():  # else the split as it is (no copy of its images)
        splits[name] = splits[name].take(~remove)


def read_label_noise_file(path: str, class_names: tuple[str, ...]):
    """Parses a label-noise file: one entry per line, `[split:]row` (drop) or `[split:]row,class`
    (relabel); `#` starts a comment. Rows are Split.rows (1-based source rows / file indices).

    Returns a list of (split or None, row, new label or None).
    """
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: file not found (data.clean.label_noise_file)")
    index = {canonical(n): i for i, n in enumerate(class_names)}
    entries = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            row_text, _, label_text = (t.strip() for t in text.partition(","))
            split, _, row_text = row_text.rpartition(":")
            if split and split not in SPLIT_ORDER:
                raise DataFormatError(
                    f"{path}: line {line_no}: split {split!r}, expected train, val or test"
                )
            if not (row_text.isascii() and row_text.isdigit()) or int(row_text) < 1:
                raise DataFormatError(
                    f"{path}: line {line_no}: row id {row_text!r}, expected a row number >= 1 "
                    "as '[split:]row' or '[split:]row,class'"
                )
            label = None
            if label_text and label_text.lower() != "drop":
                if canonical(label_text) not in index:
                    raise DataFormatError(
                        f"{path}: line {line_no}: class {label_text!r}, expected 'drop' or one "
                        f"of {', '.join(class_names)}"
                    )
                label = index[canonical(label_text)]
            entries.append((split or None, int(row_text), label))
    return entries


def apply_label_noise(splits, entries, num_classes: int, log: CleaningLog) -> None:
    log.enable("label noise dropped")
    log.enable("relabelled")
    log.enable("label noise id not found")
    present = {(n, int(r)) for n in SPLIT_ORDER for r in splits[n].rows}
    present |= {(None, r) for _, r in present}
    # Not in the data, or already removed by an earlier cleaning step.
    log.counts["label noise id not found"]["total"] = sum(
        1 for s, r, _ in entries if (s, r) not in present
    )
    for name in SPLIT_ORDER:
        split = splits[name]
        pos = {int(r): k for k, r in enumerate(split.rows)}
        drop = np.zeros(len(split), bool)
        labels = split.labels.copy()
        targets = None if split.targets is None else split.targets.copy()
        relabelled = np.zeros(len(split), bool)
        for s, row, label in entries:
            if (s is not None and s != name) or row not in pos:
                continue
            k = pos[row]
            if label is None:
                drop[k] = True
            elif label != labels[k]:
                relabelled[k] = True
                labels[k] = label
                if targets is not None:
                    targets[k] = np.eye(num_classes, dtype=np.float32)[label]
        log.add("relabelled", name, split.take(relabelled))  # counted under the original class
        splits[name] = dataclasses.replace(split, labels=labels, targets=targets)
        _drop(splits, name, drop, "label noise dropped", log)


def clean(data: FerData, cfg: ml_collections.ConfigDict) -> FerData:
    """Applies the `data.clean` steps; returns the cleaned FerData with `cleaning` counts."""
    log = CleaningLog(data.class_names)
    splits = {n: data.splits[n] for n in SPLIT_ORDER}
    if cfg.blank:
        log.enable("blank")
        for name in SPLIT_ORDER:
            _drop(splits, name, pixel_std(splits[name].images) < cfg.blank_std, "blank", log)
    hashes = {}
    if cfg.duplicates or cfg.cross_split:
        hashes = {n: pixel_hashes(splits[n].images) for n in SPLIT_ORDER}
    if cfg.duplicates:
        log.enable("duplicate")
        for name in SPLIT_ORDER:
            seen, remove = set(), np.zeros(len(hashes[name]), bool)
            for k, h in enumerate(hashes[name]):
                remove[k] = h in seen
                seen.add(h)
            _drop(splits, name, remove, "duplicate", log)
            hashes[name] = [h for h, r in zip(hashes[name], remove) if not r]
    if cfg.cross_split:
        log.enable("leak")
        test = set(hashes["test"])
        held_out = test | set(hashes["val"])
        _drop(
            splits, "train", np.array([h in held_out for h in hashes["train"]], bool), "leak", log
        )
        _drop(splits, "val", np.array([h in test for h in hashes["val"]], bool), "leak", log)
    if cfg.near_duplicates:
        log.enable("near duplicate")
        t = int(cfg.near_hamming)
        ph = {n: perceptual_hashes(splits[n].images) for n in SPLIT_ORDER}
        for name in SPLIT_ORDER:
            remove = near_duplicate_mask(ph[name], t)
            _drop(splits, name, remove, "near duplicate", log)
            ph[name] = ph[name][~remove]
        held_out = np.concatenate([ph["val"], ph["test"]])  # uint8[M, 32]
        _drop(splits, "train", near_duplicate_mask(ph["train"], t, held_out), "near duplicate", log)
    if cfg.label_noise_file:
        entries = read_label_noise_file(cfg.label_noise_file, data.class_names)
        apply_label_noise(splits, entries, data.num_classes, log)
    return dataclasses.replace(data, splits=splits, cleaning=log.counts)

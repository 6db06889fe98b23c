"""Reader for Microsoft's FER+ relabelling, `fer2013new.csv`, read together with `fer2013.csv`.

Format: a header `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,
contempt,unknown,NF`, then one row per row of fer2013.csv (same order): the split, the image's
file name (empty for non-faces) and the vote counts of 10 annotators. Pixels come from
fer2013.csv. FER+ has 8 classes in its own order (below); `unknown` and `NF` (not a face) are
not classes: rows whose top vote is one of them are dropped and counted.

Label modes: `majority` keeps rows where one emotion has strictly more than half of the row's
votes (as in the FER+ reference code; ties are never a majority); `probability` keeps every row
whose top vote is an emotion and gives soft targets, the votes normalised over the 8 emotions.
"""

from __future__ import annotations

import csv
import os
from collections import Counter

import numpy as np

from ferjax.data.classes import canonical
from ferjax.data.dataset import USAGE_TO_SPLIT, FerData
from ferjax.data.sources.fer2013 import load_fer2013, split_by_usage
from ferjax.data.sources.rows import RowErrors
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

VOTE_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_CLASSES = tuple(canonical(c) for c in VOTE_COLUMNS[:8])
HEADER = ("Usage", "Image name") + VOTE_COLUMNS
MODES = ("majority", "probability")

WHERE_TO_GET = (
    "FER+ labels are fer2013new.csv from https://github.com/microsoft/FERPlus; put it next to "
    "fer2013.csv or pass --config.data.ferplus_path=/path/to/fer2013new.csv"
)


def read_ferplus_votes(path: str, on_error: str = "raise"):
    """Reads and validates fer2013new.csv.

    Bad rows are counted under reasons starting with "ferplus " (fer2013.csv's own reasons do
    not), so the data report says which file a problem came from.
    Returns (votes int32[R, 10] in VOTE_COLUMNS order, usage list[str|None] split names,
    valid bool[R], errors RowErrors); R is the number of data rows, and rows with bad fields
    are kept in place (valid=False) so that row r still lines up with fer2013.csv's row r.
    """
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: file not found. {WHERE_TO_GET}")
    errors = RowErrors(path, on_error)
    votes, usage, valid = [], [], []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path}: empty file, expected a header '{','.join(HEADER)}'")
        header = [h.strip() for h in header]
        if tuple(header) != HEADER:
            raise DataFormatError(
                f"{path}: line 1: header is {','.join(header)!r}, expected {','.join(HEADER)!r}"
            )
        pending: list[tuple[int, str, str, str]] = []
        last_filled = 0
        for row, fields in enumerate(reader, 1):
            where = f"row {row} (line {reader.line_num})"
            usage.append(None)
            votes.append([0] * len(VOTE_COLUMNS))
            valid.append(False)
            if not fields or fields == [""]:
                pending.append((row, where, "ferplus empty row", "empty row"))
                continue
            last_filled = row
            if len(fields) != len(HEADER):
                detail = f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(fields)}"
                pending.append((row, where, "ferplus wrong number of fields", detail))
                continue
            split = USAGE_TO_SPLIT.get(fields[0].strip())
            if split is None:
                detail = (
                    f"Usage is {fields[0][:30]!r}, expected Training, PublicTest or PrivateTest"
                )
                pending.append((row, where, "ferplus unknown Usage", detail))
                continue
            counts = [v.strip() for v in fields[2:]]
            bad = next((k for k, v in enumerate(counts) if not (v.isascii() and v.isdigit())), None)
            if bad is not None:
                detail = f"{VOTE_COLUMNS[bad]} is {counts[bad][:20]!r}, expected a vote count >= 0"
                pending.append((row, where, "ferplus bad vote count", detail))
                continue
            counts = [int(v) for v in counts]
            if sum(counts) == 0:
                detail = "all vote counts are 0, expected at least one vote"
                pending.append((row, where, "ferplus no votes", detail))
                continue
            usage[-1], votes[-1], valid[-1] = split, counts, True
    # Empty lines after the last row (a final newline, or several) are not rows.
    del usage[last_filled:], votes[last_filled:], valid[last_filled:]
    for row, where, reason, detail in pending:
        if row <= last_filled:
            errors.add(where, reason, detail)
    if not votes:
        raise DataFormatError(f"{path}: no data rows after the header")
    return np.asarray(votes, np.int32).reshape(-1, 10), usage, np.asarray(valid), errors


def labels_from_votes(votes: np.ndarray, mode: str):
    """Applies a FER+ label mode to vote counts int[N, 10] (VOTE_COLUMNS order).

    Returns (keep bool[N], labels int32[N], targets float32[N, 8] or None, reason str[N]):
    reason is "" for kept rows, otherwise why the row was dropped.
    """
    if mode not in MODES:
        raise ValueError(f"FER+ mode must be one of {MODES}, got {mode!r}")
    votes = np.asarray(votes, np.int64)
    top = votes.max(axis=1)
    emotions = votes[:, :8]
    labels = emotions.argmax(axis=1).astype(np.int32)
    reason = np.full(len(votes), "", dtype=object)
    # A tie between an emotion and unknown/NF at the top counts as unknown/NF: not a clear face.
    reason[votes[:, 8] == top] = "ferplus top vote unknown"
    reason[votes[:, 9] == top] = "ferplus top vote NF"
    if mode == "majority":
        no_majority = (reason == "") & (2 * emotions.max(axis=1) <= votes.sum(axis=1))
        reason[no_majority] = "ferplus no majority"
    keep = reason == ""
    targets = None
    if mode == "probability":
        targets = (emotions / np.maximum(emotions.sum(axis=1, keepdims=True), 1)).astype(np.float32)
    return keep, labels, targets, reason


def default_ferplus_path(fer2013_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(fer2013_path)), "fer2013new.csv")


def load_ferplus(
    fer2013_path: str,
    ferplus_path: str = "",
    mode: str = "majority",
    on_error: str = "raise",
    cache_dir: str | None = None,
) -> FerData:
    """Loads FER+ labels (fer2013new.csv) with the pixels of fer2013.csv.

    Class names are FER+'s, in FER+'s order (canonical spellings): neutral, happy, surprise,
    sad, angry, disgust, fear, contempt. Splits follow fer2013.csv's Usage column.
    """
    ferplus_path = ferplus_path or default_ferplus_path(fer2013_path)
    if not os.path.isfile(ferplus_path):
        raise DataNotFoundError(f"{ferplus_path}: file not found. {WHERE_TO_GET}")
    base = load_fer2013(fer2013_path, on_error, cache_dir)
    votes, ferplus_usage, valid, errors = read_ferplus_votes(ferplus_path, on_error)
    parts = [base.splits[s] for s in USAGE_TO_SPLIT.values()]
    rows = np.concatenate([p.rows for p in parts])
    total_rows = len(rows) + sum(base.skipped.values())
    if total_rows != len(votes):
        raise DataFormatError(
            f"{ferplus_path}: has {len(votes)} data rows but {fer2013_path} has {total_rows}; "
            "expected the same rows in the same order"
        )
    images = np.concatenate([p.images for p in parts])
    usage = np.concatenate([np.full(len(p), s) for p, s in zip(parts, USAGE_TO_SPLIT.values())])
    order = np.argsort(rows, kind="stable")
    images, usage, rows = images[order], usage[order], rows[order]
    index = rows - 1
    for k in np.flatnonzero(valid[index] & (np.asarray(ferplus_usage, object)[index] != usage)):
        errors.add(
            f"row {rows[k]}",
            "ferplus Usage differs from fer2013.csv",
            f"Usage is {ferplus_usage[index[k]]!r} here but {usage[k]!r} in {fer2013_path} "
            "(split names: train=Training, val=PublicTest, test=PrivateTest)",
        )
        valid[index[k]] = False
    errors.finish()
    ok = valid[index]
    images, usage, rows, index = images[ok], usage[ok], rows[ok], index[ok]
    keep, labels, targets, reason = labels_from_votes(votes[index], mode)
    skipped = Counter(base.skipped)
    skipped.update(errors.counts)
    skipped.update(Counter(reason[~keep].tolist()))
    return FerData(
        class_names=FERPLUS_CLASSES,
        splits=split_by_usage(
            images[keep],
            labels[keep],
            usage[keep],
            rows[keep],
            None if targets is None else targets[keep],
        ),
        source=f"{fer2013_path} + {ferplus_path} ({mode})",
        skipped=skipped,
    )

"""Faces followed across video frames, and their probabilities smoothed per face (pure NumPy).

`Tracker.update(boxes)` matches a frame's detections to the live tracks greedily by
intersection over union (the best remaining pair first, pairs under `min_iou` never), starts a
new track (a new id, never reused) for each unmatched detection, and drops a track once it has
gone unmatched in more than `max_missed` consecutive updates: a face that comes back within
that many frames keeps its id, later it gets a new one.

`Smoother` keeps an exponential moving average of each track's class probabilities:
s_t = a s_(t-1) + (1 - a) p_t, starting from the first p; a = 0 is no smoothing at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def iou_matrix(a, b) -> np.ndarray:
    """float64[len(a), len(b)]: intersection over union of boxes (x, y, w, h)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, aw, ah = (a[:, k, None] for k in range(4))
    bx0, by0, bw, bh = (b[None, :, k] for k in range(4))
    iw = np.clip(np.minimum(ax0 + aw, bx0 + bw) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay0 + ah, by0 + bh) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """(row, column) pairs, the highest IoU first, each row and column used at most once, none
    under min_iou. Ties go to the lower row, then the lower column."""
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    used_r, used_c = set(), set()
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou or iou[r, c] <= 0:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


@dataclasses.dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]
    missed: int = 0  # consecutive updates without a matching detection
    hits: int = 1  # updates with one


class Tracker:
    """Track ids for each frame's face boxes (see the module's docstring)."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5):
        if not 0 <= min_iou <= 1:
            raise ValueError(f"min_iou must be in [0, 1], got {min_iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.next_id = 1

    def update(self, boxes) -> list[int]:
        """The track id of each box (x, y, w, h), in the order given."""
        boxes = [tuple(int(v) for v in b) for b in boxes]
        ids = [0] * len(boxes)
        pairs = greedy_match(iou_matrix([t.box for t in self.tracks], boxes), self.min_iou)
        matched = set()
        for r, c in pairs:
            track = self.tracks[r]
            track.box, track.missed = boxes[c], 0
            track.hits += 1
            ids[c] = track.id
            matched.add(r)
        for r, track in enumerate(self.tracks):
            if r not in matched:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for c, box in enumerate(boxes):
            if not ids[c]:
                self.tracks.append(Track(self.next_id, box))
                ids[c] = self.next_id
                self.next_id += 1
        return ids

    @property
    def live_ids(self) -> set[int]:
        return {t.id for t in self.tracks}


class Smoother:
    """Exponential moving average of each track's probabilities (see the module's docstring)."""

    def __init__(self, alpha: float):
        if not 0 <= alpha < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.state: dict[int, np.ndarray] = {}

    def __call__(self, track_id: int, probs) -> np.ndarray:
        """The smoothed probabilities of `track_id` after this frame's `probs`."""
        probs = np.asarray(probs, np.float64)
        prev = self.state.get(track_id)
        out = (
            probs
            if prev is None or not self.alpha
            else self.alpha * prev + (1 - self.alpha) * probs
        )
        self.state[track_id] = out
        return out

    def keep_only(self, ids) -> None:
        """Forgets the tracks not in `ids` (ids are never reused, so they cannot come back)."""
        self.state = {k: v for k, v in self.state.items() if k in ids}

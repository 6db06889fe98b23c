"""Per-epoch *index records* for the training split: plain shuffling, oversampling, class weights.

A record is (i, j, lam, weight): the train step builds the example x = x_i + lam * (x_j - x_i)
on the device (lam = 0 and j = i for real examples) and scales its loss by `weight`. The
resampled dataset is never materialised: memory is O(records), not O(records x pixels).

Records are a pure function of (seed, epoch), so an interrupted epoch can be replayed exactly.
"""

from __future__ import annotations

import numpy as np

from ferjax.errors import ConfigError

METHODS = ("none", "random", "smote", "adasyn", "class_weight")


def parse_strategy(text, class_names: tuple[str, ...]):
    """Turns the config's `sampling.strategy` into imbalanced-learn's sampling_strategy."""
    from ferjax.data.classes import canonical

    text = str(text).strip()
    if ":" in text:
        index = {canonical(n): k for k, n in enumerate(class_names)}
        counts = {}
        for part in text.split(","):
            name, _, value = part.partition(":")
            if canonical(name) not in index or not value.strip().isdigit():
                raise ConfigError(
                    f"sampling.strategy: bad entry {part.strip()!r}, expected class:count with a "
                    f"class among {', '.join(class_names)}"
                )
            counts[index[canonical(name)]] = int(value)
        return counts
    try:
        return float(text)
    except ValueError:
        return text


def oversampling_targets(labels: np.ndarray, num_classes: int, strategy) -> np.ndarray:
    """Number of *extra* examples to draw per class, with imbalanced-learn's semantics."""
    from imblearn.utils import check_sampling_strategy

    try:
        extra = check_sampling_strategy(strategy, labels, "over-sampling")
    except ValueError as e:
        raise ConfigError(f"sampling.strategy: {e}".splitlines()[0]) from None
    out = np.zeros(num_classes, np.int64)
    for c, n in extra.items():
        out[int(c)] = n
    return out


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, normalised so the average training example has weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


class Sampler:
    """Draws the index records of each epoch.

    labels: int[N] training labels. `epoch_records(epoch)` returns a dict of equal-length
    arrays i int32, j int32, lam float32, weight float32, shuffled. The number of records is the
    same every epoch.
    """

    def __init__(self, labels: np.ndarray, num_classes: int, method: str, seed: int, strategy):
        if method not in METHODS:
            raise ConfigError(f"sampling.method: unknown {method!r}, expected one of {METHODS}")
        self.labels = np.asarray(labels, np.int32)
        self.num_classes = num_classes
        self.method = method
        self.seed = seed
        self.extra = np.zeros(num_classes, np.int64)
        self.weights = np.ones(num_classes, np.float32)
        if method == "random":
            self.extra = oversampling_targets(self.labels, num_classes, strategy)
        elif method == "class_weight":
            self.weights = class_weights(self.labels, num_classes)
        elif method in ("smote", "adasyn"):
            raise ConfigError(f"sampling.method={method} is not available in this version")

    def __len__(self) -> int:
        return len(self.labels) + int(self.extra.sum())

    def counts_after(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes) + self.extra

    def epoch_records(self, epoch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        i = [np.arange(len(self.labels), dtype=np.int64)]
        for c in np.flatnonzero(self.extra):
            members = np.flatnonzero(self.labels == c)
            i.append(rng.choice(members, size=self.extra[c], replace=True))
        i = np.concatenate(i)
        i = i[rng.permutation(len(i))].astype(np.int32)
        return {
            "i": i,
            "j": i.copy(),
            "lam": np.zeros(len(i), np.float32),
            "weight": self.weights[self.labels[i]],
        }

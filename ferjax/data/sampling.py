"""Per-epoch *index records* for the training split: shuffling, oversampling, SMOTE, ADASYN,
class weights.

A record is (i, j, lam, weight): the train step builds the example x = x_i + lam * (x_j - x_i)
on the device (lam = 0 and j = i for real examples) and scales its loss by `weight`. The
resampled dataset is never materialised: memory is O(records), not O(records x pixels), and
SMOTE/ADASYN draw fresh pairs and lambdas every epoch instead of freezing one draw.

Records are a pure function of (seed, epoch), so an interrupted epoch can be replayed exactly.
Only the training split is resampled: neighbours are searched among training examples only, so
no synthetic example is ever built from a validation or test face.
"""

from __future__ import annotations

import time

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

    labels: int[N] training labels; images: uint8[N, H, W] training images, needed by smote and
    adasyn only (neighbour search, once, here). `epoch_records(epoch)` returns a dict of
    equal-length arrays i int32, j int32, lam float32, weight float32, shuffled. The number of
    records, and of records per class, is the same every epoch.

    smote: every real example once, plus for each class the number of synthetic records that
    imblearn's `check_sampling_strategy` asks for; each draws i uniformly from the class, j
    uniformly from i's k nearest same-class neighbours, lam ~ U(0, 1) (imblearn SMOTE).
    adasyn: the same, but i is drawn with probability proportional to the fraction of its k
    nearest neighbours (all classes) of another class (imblearn ADASYN's weights; imblearn rounds
    per-example counts, here each record draws i, so class totals are exact). A class whose
    examples have no other-class neighbour falls back to uniform (SMOTE) weights.
    Classes smaller than k + 1 use all their other members as neighbours.
    """

    def __init__(
        self,
        labels: np.ndarray,
        num_classes: int,
        method: str,
        seed: int,
        strategy,
        images: np.ndarray | None = None,
        k_neighbors: int = 5,
        features: str = "pca",
        pca_components: int = 64,
        class_names: tuple[str, ...] | None = None,
    ):
        if method not in METHODS:
            raise ConfigError(f"sampling.method: unknown {method!r}, expected one of {METHODS}")
        self.labels = np.asarray(labels, np.int32)
        self.num_classes = num_classes
        self.method = method
        self.seed = seed
        self.class_names = tuple(class_names or (str(c) for c in range(num_classes)))
        self.extra = np.zeros(num_classes, np.int64)
        self.weights = np.ones(num_classes, np.float32)
        self.settings: dict = {}
        # Per class needing synthetic records: members int[n_c], neighbours int32[n_c, k'],
        # draw probabilities of i float64[n_c] (None = uniform).
        self.members: dict[int, np.ndarray] = {}
        self.neighbours: dict[int, np.ndarray] = {}
        self.probs: dict[int, np.ndarray | None] = {}
        self.prep_seconds = 0.0
        if method in ("random", "smote", "adasyn"):
            self.extra = oversampling_targets(self.labels, num_classes, strategy)
        elif method == "class_weight":
            self.weights = class_weights(self.labels, num_classes)
        if method in ("smote", "adasyn"):
            if images is None or len(images) != len(self.labels):
                raise ValueError(f"Sampler({method}) needs the training images, one per label")
            t = time.perf_counter()
            self._find_neighbours(images, k_neighbors, features, pca_components)
            self.prep_seconds = time.perf_counter() - t
            self.settings = {
                "k_neighbors": k_neighbors,
                "features": features,
                **({"pca_components": pca_components} if features == "pca" else {}),
            }

    def _find_neighbours(self, images, k: int, features: str, pca_components: int) -> None:
        from ferjax.data.neighbours import FeatureSpace, adasyn_difficulty, same_class_neighbours

        needed = [int(c) for c in np.flatnonzero(self.extra)]
        for c in needed:
            members = np.flatnonzero(self.labels == c)
            if len(members) < 2:
                raise ConfigError(
                    f"sampling.method: {self.method} needs at least 2 training examples of class "
                    f"{self.class_names[c]!r}, found {len(members)} (use random, or drop the class "
                    "with data.classes)"
                )
            self.members[c] = members
        if not needed:
            return
        space = FeatureSpace(images, features, pca_components, self.seed)
        for c in needed:
            self.neighbours[c] = same_class_neighbours(space, self.members[c], k)
            self.probs[c] = None
        if self.method == "adasyn":
            query = np.concatenate([self.members[c] for c in needed])
            ratio = adasyn_difficulty(space, self.labels, query, k)
            for c in needed:
                r, ratio = ratio[: len(self.members[c])], ratio[len(self.members[c]) :]
                self.probs[c] = r / r.sum() if r.sum() > 0 else None

    def __len__(self) -> int:
        return len(self.labels) + int(self.extra.sum())

    def counts_after(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes) + self.extra

    def epoch_records(self, epoch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.labels)
        i, j = [np.arange(n, dtype=np.int64)], [np.arange(n, dtype=np.int64)]
        lam = [np.zeros(n, np.float32)]
        for c in np.flatnonzero(self.extra):
            count = int(self.extra[c])
            if self.method == "random":  # copies: j = i, no interpolation
                picked = rng.choice(np.flatnonzero(self.labels == c), size=count, replace=True)
                i.append(picked)
                j.append(picked)
                lam.append(np.zeros(count, np.float32))
                continue
            members, nbrs = self.members[c], self.neighbours[c]
            rows = rng.choice(len(members), size=count, replace=True, p=self.probs[c])
            cols = rng.integers(0, nbrs.shape[1], size=count)
            i.append(members[rows])
            j.append(nbrs[rows, cols])
            lam.append(rng.random(count, dtype=np.float32))
        i, j, lam = np.concatenate(i), np.concatenate(j), np.concatenate(lam)
        order = rng.permutation(len(i))
        i, j, lam = i[order].astype(np.int32), j[order].astype(np.int32), lam[order]
        return {"i": i, "j": j, "lam": lam, "weight": self.weights[self.labels[i]]}

    def report(self) -> dict:
        """Sampling statistics of one run (JSON-ready): per-class counts before and after."""
        before = np.bincount(self.labels, minlength=self.num_classes)
        after = self.counts_after()
        out = {
            "method": self.method,
            "records_per_epoch": len(self),
            "real_records": int(len(self.labels)),
            "extra_records": int(self.extra.sum()),
            "synthetic_records": int(self.extra.sum()) if self.method in ("smote", "adasyn") else 0,
            "counts_before": dict(zip(self.class_names, before.tolist(), strict=True)),
            "counts_after": dict(zip(self.class_names, after.tolist(), strict=True)),
            **self.settings,
        }
        if self.method == "class_weight":
            out["class_weights"] = dict(
                zip(self.class_names, [float(w) for w in self.weights], strict=True)
            )
        if self.method in ("smote", "adasyn"):
            out["neighbour_search_seconds"] = round(self.prep_seconds, 3)
        if self.method == "adasyn":
            uniform = [self.class_names[c] for c, p in self.probs.items() if p is None]
            out["adasyn_uniform_fallback"] = uniform
        return out

    def summary_line(self) -> str:
        """One log line: counts before -> after per class, and the synthetic records."""
        r = self.report()
        per_class = " ".join(
            f"{n}={r['counts_before'][n]}->{r['counts_after'][n]}" for n in self.class_names
        )
        return (
            f"sampling: {self.method} {per_class} | {r['records_per_epoch']} records/epoch, "
            f"{r['synthetic_records']} synthetic"
        )

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

from ferjax.data.classes import canonical
from ferjax.data.neighbours import FeatureSpace, adasyn_difficulty, same_class_neighbours
from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import Registry

# sampling.method -> a Method class (below).
SAMPLERS = Registry("sampling.method")


def parse_strategy(text, class_names: tuple[str, ...]):
    """Turns the config's `sampling.strategy` into imbalanced-learn's sampling_strategy."""
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


# imbalanced-learn's named over-sampling strategies: which classes are raised to the largest.
_NAMED = ("auto", "not majority", "all", "minority", "not minority")


def oversampling_targets(labels: np.ndarray, num_classes: int, strategy) -> np.ndarray:
    """Number of *extra* examples to draw per class, with imbalanced-learn's semantics
    (`imblearn.utils.check_sampling_strategy` for over-sampling; tests compare the two): a
    name from _NAMED raises the classes it selects to the largest class, a {class: count} dict
    raises those classes to count, a float in (0, 1] raises every class to that ratio of the
    largest (imbalanced-learn's float is binary only, with the same meaning there)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    present = counts > 0
    if isinstance(strategy, float):
        if not 0 < strategy <= 1:
            raise ConfigError(
                f"sampling.strategy: got {strategy}, expected a ratio in (0, 1] of the "
                "largest class"
            )
        target = int(np.ceil(strategy * counts.max()))
        return np.where(present, np.maximum(target - counts, 0), 0).astype(np.int64)
    if isinstance(strategy, dict):
        out = np.zeros(num_classes, np.int64)
        for c, n in strategy.items():
            if n < counts[c]:
                raise ConfigError(
                    f"sampling.strategy: class {c} has {counts[c]} training examples and "
                    f"{n} were asked; over-sampling can only add examples"
                )
            out[c] = n - counts[c]
        return out
    if strategy not in _NAMED:
        raise ConfigError(
            f"sampling.strategy: unknown {strategy!r}, expected one of {', '.join(_NAMED)}, a "
            "ratio in (0, 1] or class:count pairs"
        )
    seen = np.where(present, counts, -1)
    majority = int(np.argmax(seen))
    minority = int(np.argmin(np.where(present, counts, np.iinfo(np.int64).max)))
    chosen = present.copy()
    if strategy in ("auto", "not majority"):
        chosen[majority] = False
    elif strategy == "minority":
        chosen[:] = False
        chosen[minority] = True
    elif strategy == "not minority":
        chosen[minority] = False
    return np.where(chosen, counts[majority] - counts, 0).astype(np.int64)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, normalised so the average training example has weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


class Method:
    """One `sampling.method`: how many extra records each class gets, how they are drawn, and
    the loss weight of each class. The base class is plain shuffled epochs (`none`); a method
    overrides what differs and registers with `@SAMPLERS.register(name)`."""

    def __init__(self, labels: np.ndarray, num_classes: int, options: dict):
        self.labels, self.num_classes, self.options = labels, num_classes, options
        self.extra = np.zeros(num_classes, np.int64)  # extra records per class and epoch
        self.weights = np.ones(num_classes, np.float32)  # loss weight per class

    def draw(self, c: int, count: int, rng: np.random.Generator):
        """(i, j, lam) of `count` extra records of class c."""
        raise NotImplementedError

    def report(self) -> dict:
        """Method-specific entries of sampling_report.json."""
        return {}


@SAMPLERS.register("none")
class Shuffle(Method):
    """Every training example once per epoch, shuffled."""


@SAMPLERS.register("class_weight")
class ClassWeight(Method):
    """No resampling: inverse-frequency loss weights."""

    def __init__(self, labels, num_classes, options):
        super().__init__(labels, num_classes, options)
        self.weights = class_weights(labels, num_classes)

    def report(self) -> dict:
        names = self.options["class_names"]
        return {"class_weights": dict(zip(names, [float(w) for w in self.weights], strict=True))}


@SAMPLERS.register("random")
class RandomOversampling(Method):
    """imbalanced-learn's RandomOverSampler: extra copies (j = i, lam = 0) drawn uniformly."""

    def __init__(self, labels, num_classes, options):
        super().__init__(labels, num_classes, options)
        self.extra = oversampling_targets(labels, num_classes, options["strategy"])

    def draw(self, c, count, rng):
        picked = rng.choice(np.flatnonzero(self.labels == c), size=count, replace=True)
        return picked, picked, np.zeros(count, np.float32)


@SAMPLERS.register("smote")
class Smote(Method):
    """imbalanced-learn's SMOTE: i uniform in the class, j one of its k nearest same-class
    neighbours, lam ~ U(0, 1). Neighbours are found once, here, on the training images."""

    def __init__(self, labels, num_classes, options):
        super().__init__(labels, num_classes, options)
        self.extra = oversampling_targets(labels, num_classes, options["strategy"])
        images = options["images"]
        if images is None or len(images) != len(labels):
            raise ValueError(f"sampling {type(self).__name__} needs the training images")
        # Per class needing synthetic records: members int[n_c], neighbours int32[n_c, k'],
        # draw probabilities of i float64[n_c] (None = uniform).
        self.members: dict[int, np.ndarray] = {}
        self.neighbours: dict[int, np.ndarray] = {}
        self.probs: dict[int, np.ndarray | None] = {}
        t = time.perf_counter()
        # One BLAS thread: the search's small GEMMs and QRs ran 8x slower with OpenBLAS's
        # spinning threads next to XLA's thread pool or another process (0.46 s vs 3.7 s on the
        # demo, 2 cores), and the features are bitwise the same (bench/README.md).
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            self._find_neighbours(images)
        self.prep_seconds = time.perf_counter() - t

    def _find_neighbours(self, images) -> None:
        o = self.options
        needed = [int(c) for c in np.flatnonzero(self.extra)]
        for c in needed:
            members = np.flatnonzero(self.labels == c)
            if len(members) < 2:
                raise ConfigError(
                    f"sampling.method: {o['method']} needs at least 2 training examples of class "
                    f"{o['class_names'][c]!r}, found {len(members)} (use random, or drop the "
                    "class with data.classes)"
                )
            self.members[c] = members
        if not needed:
            return
        self.space = FeatureSpace(images, o["features"], o["pca_components"], o["seed"])
        for c in needed:
            self.neighbours[c] = same_class_neighbours(
                self.space, self.members[c], o["k_neighbors"]
            )
            self.probs[c] = None

    def draw(self, c, count, rng):
        members, nbrs = self.members[c], self.neighbours[c]
        rows = rng.choice(len(members), size=count, replace=True, p=self.probs[c])
        cols = rng.integers(0, nbrs.shape[1], size=count)
        return members[rows], nbrs[rows, cols], rng.random(count, dtype=np.float32)

    def report(self) -> dict:
        o = self.options
        out = {"k_neighbors": o["k_neighbors"], "features": o["features"]}
        if o["features"] == "pca":
            out["pca_components"] = o["pca_components"]
        out["synthetic_records"] = int(self.extra.sum())
        out["neighbour_search_seconds"] = round(self.prep_seconds, 3)
        return out


@SAMPLERS.register("adasyn")
class Adasyn(Smote):
    """As smote, but i is drawn with probability proportional to the fraction of its k nearest
    neighbours (all classes) of another class (imblearn ADASYN's weights; imblearn rounds
    per-example counts, here each record draws i, so class totals are exact). A class whose
    examples have no other-class neighbour falls back to uniform (SMOTE) weights."""

    def _find_neighbours(self, images) -> None:
        super()._find_neighbours(images)
        needed = list(self.members)
        if not needed:
            return
        query = np.concatenate([self.members[c] for c in needed])
        ratio = adasyn_difficulty(self.space, self.labels, query, self.options["k_neighbors"])
        for c in needed:
            r, ratio = ratio[: len(self.members[c])], ratio[len(self.members[c]) :]
            self.probs[c] = r / r.sum() if r.sum() > 0 else None

    def report(self) -> dict:
        uniform = [self.options["class_names"][c] for c, p in self.probs.items() if p is None]
        return {**super().report(), "adasyn_uniform_fallback": uniform}


class Sampler:
    """Draws the index records of each epoch with the `method` of SAMPLERS.

    labels: int[N] training labels; images: uint8[N, H, W, C] training images, needed by
    smote and adasyn only (neighbour search, once, at construction). `epoch_records(epoch)`
    returns a dict of equal-length arrays i int32, j int32, lam float32, weight float32,
    shuffled. The number of records, and of records per class, is the same every epoch:
    every real example once (j = i, lam = 0), plus the method's extra records of each class.
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
        self.labels = np.asarray(labels, np.int32)
        self.num_classes = num_classes
        self.method = method
        self.seed = seed
        self.class_names = tuple(class_names or (str(c) for c in range(num_classes)))
        options = {
            "method": method,
            "strategy": strategy,
            "images": images,
            "k_neighbors": k_neighbors,
            "features": features,
            "pca_components": pca_components,
            "seed": seed,
            "class_names": self.class_names,
        }
        self.impl: Method = SAMPLERS.get(method)(self.labels, num_classes, options)

    def __len__(self) -> int:
        return len(self.labels) + int(self.impl.extra.sum())

    def counts_after(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes) + self.impl.extra

    def effective_counts(self) -> np.ndarray:
        """float64[K]: records per class and epoch times their loss weight: the class
        distribution the loss sees (its prior, up to normalisation)."""
        return self.counts_after().astype(np.float64) * self.impl.weights.astype(np.float64)

    def epoch_records(self, epoch: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.labels)
        i, j = [np.arange(n, dtype=np.int64)], [np.arange(n, dtype=np.int64)]
        lam = [np.zeros(n, np.float32)]
        for c in np.flatnonzero(self.impl.extra):
            ic, jc, lc = self.impl.draw(int(c), int(self.impl.extra[c]), rng)
            i.append(ic)
            j.append(jc)
            lam.append(lc)
        i, j, lam = np.concatenate(i), np.concatenate(j), np.concatenate(lam)
        order = rng.permutation(len(i))
        i, j, lam = i[order].astype(np.int32), j[order].astype(np.int32), lam[order]
        return {"i": i, "j": j, "lam": lam, "weight": self.impl.weights[self.labels[i]]}

    def report(self) -> dict:
        """Sampling statistics of one run (JSON-ready): per-class counts before and after."""
        before = np.bincount(self.labels, minlength=self.num_classes)
        extra = self.impl.report()
        return {
            "method": self.method,
            "records_per_epoch": len(self),
            "real_records": int(len(self.labels)),
            "extra_records": int(self.impl.extra.sum()),
            "synthetic_records": extra.pop("synthetic_records", 0),
            "counts_before": dict(zip(self.class_names, before.tolist(), strict=True)),
            "counts_after": dict(zip(self.class_names, self.counts_after().tolist(), strict=True)),
            **extra,
        }

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

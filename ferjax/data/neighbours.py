"""Nearest neighbours of training examples for SMOTE and ADASYN, found once on the host.

The search is scikit-learn's `NearestNeighbors` with imbalanced-learn's conventions (k + 1
neighbours of each example, the first one, itself, dropped), so the pairs match
`imblearn.over_sampling.SMOTE` / `ADASYN` in the same feature space. Only the *training* split
is ever passed here. Memory stays O(N): features are built per class (pixels) or as a small
projection of all examples (pca), never a resampled copy.
"""

from __future__ import annotations

import numpy as np

from ferjax.errors import ConfigError

FEATURES = ("pixels", "pca")

# PCA is fitted on a seeded sample of at most this many training examples (one float32 copy of
# the sample, ~19 MB at 48x48), then applied in batches: memory stays far below the split's.
_PCA_FIT_EXAMPLES = 2048
_BATCH = 1024


class FeatureSpace:
    """Float32 features of training examples: raw pixels or a PCA projection.

    images: uint8[N, H, W]. `take(idx)` returns float32[len(idx), D] (D = H*W for pixels,
    `pca_components` for pca).
    """

    def __init__(self, images: np.ndarray, kind: str, pca_components: int, seed: int):
        if kind not in FEATURES:
            raise ConfigError(f"sampling.features: unknown {kind!r}, expected one of {FEATURES}")
        self.images = images
        self.kind = kind
        self.projected = None
        if kind == "pca":
            self.projected = _pca_projection(images, pca_components, seed)

    def take(self, idx: np.ndarray) -> np.ndarray:
        if self.projected is not None:
            return self.projected[idx]
        return self.images[idx].reshape(len(idx), -1).astype(np.float32)


def _pca_projection(images: np.ndarray, components: int, seed: int) -> np.ndarray:
    """float32[N, components]: randomized PCA of a seeded sample, applied in batches."""
    from sklearn.utils.extmath import randomized_svd

    n = len(images)
    flat = images.reshape(n, -1)
    sample = np.random.default_rng(seed).permutation(n)[:_PCA_FIT_EXAMPLES]
    x = flat[np.sort(sample)].astype(np.float32)
    mean = x.mean(axis=0)
    x -= mean
    components = min(components, *x.shape)
    _, _, vt = randomized_svd(x, components, random_state=seed)
    del x
    out = np.empty((n, components), np.float32)
    for s in range(0, n, _BATCH):
        out[s : s + _BATCH] = (flat[s : s + _BATCH].astype(np.float32) - mean) @ vt.T
    return out


def same_class_neighbours(features: FeatureSpace, members: np.ndarray, k: int) -> np.ndarray:
    """int32[len(members), k']: training indices of each member's k' nearest same-class
    neighbours (itself excluded), k' = min(k, len(members) - 1); as imblearn SMOTE's `nn_k_`."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(members) - 1)
    x = features.take(members)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    local = nn.kneighbors(x, return_distance=False)[:, 1:]
    return members[local].astype(np.int32)


def adasyn_difficulty(
    features: FeatureSpace, labels: np.ndarray, query: np.ndarray, k: int
) -> np.ndarray:
    """float64[len(query)]: fraction of each queried example's k nearest neighbours over *all*
    classes that belong to another class (imblearn ADASYN's `ratio_nn` before normalisation).

    The index is fitted on every training example once (pixels: a float32 copy of the split)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(labels) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(features.take(np.arange(len(labels))))
    out = np.empty(len(query), np.float64)
    for s in range(0, len(query), 2048):
        q = query[s : s + 2048]
        nns = nn.kneighbors(features.take(q), return_distance=False)[:, 1:]
        out[s : s + 2048] = np.sum(labels[nns] != labels[q][:, None], axis=1) / k
    return out

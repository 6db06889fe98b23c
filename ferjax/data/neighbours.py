"""Nearest neighbours of training examples for SMOTE and ADASYN, found once on the host.

The search (`nearest`) is a brute-force one that finds scikit-learn's `NearestNeighbors`
neighbours, with imbalanced-learn's conventions (k + 1 neighbours of each example, the first
one, itself, dropped), so the pairs match `imblearn.over_sampling.SMOTE` / `ADASYN` in the same
feature space. Only the *training* split is ever passed here. Memory stays O(N): features are
built per class (pixels) or as a small projection of all examples (pca), never a resampled copy.
"""

from __future__ import annotations

import numpy as np

from ferjax.runtime.errors import ConfigError

FEATURES = ("pixels", "pca")

# PCA is fitted on a seeded sample of at most this many training examples. The randomized SVD
# streams over the uint8 images in batches, so no float copy larger than one batch exists.
_PCA_FIT_EXAMPLES = 4096
_BATCH = 128


class FeatureSpace:
    """Features of training examples: raw pixels or a PCA projection.

    images: uint8[N, H, W]. `take(idx)` returns float32[len(idx), D] (D = H*W for pixels,
    `pca_components` for pca; the projection is stored as float16[N, D], 3.7 MB for FER2013).
    """

    def __init__(self, images: np.ndarray, kind: str, pca_components: int, seed: int):
        if kind not in FEATURES:
            raise ConfigError(f"sampling.features: unknown {kind!r}, expected one of {FEATURES}")
        self.images = images
        self.kind = kind
        self.projected = None
        if kind == "pca":
            self.projected = pca_projection(images, pca_components, seed)

    def take(self, idx: np.ndarray) -> np.ndarray:
        if self.projected is not None:
            return self.projected[idx].astype(np.float32)
        return self.images[idx].reshape(len(idx), -1).astype(np.float32)


def _centred_batches(flat: np.ndarray, rows: np.ndarray, mean: np.ndarray):
    """Yields (start, float32 X[rows[start:start+B]] - mean), one small batch at a time."""
    for s in range(0, len(rows), _BATCH):
        x = flat[rows[s : s + _BATCH]].astype(np.float32)
        x -= mean
        yield s, x


def _times(flat, rows, mean, right: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(X[rows] - mean) @ right, as dtype[len(rows), right.shape[1]]."""
    out = np.empty((len(rows), right.shape[1]), dtype)
    for s, x in _centred_batches(flat, rows, mean):
        out[s : s + len(x)] = x @ right
    return out


def _times_transposed(flat, rows, mean, left: np.ndarray) -> np.ndarray:
    """left.T @ (X[rows] - mean), as float32[left.shape[1], D]."""
    out = np.zeros((left.shape[1], flat.shape[1]), np.float32)
    for s, x in _centred_batches(flat, rows, mean):
        out += left[s : s + len(x)].T @ x
    return out


def pca_projection(images: np.ndarray, components: int, seed: int) -> np.ndarray:
    """float16[N, components]: randomized PCA (Halko et al., as sklearn's randomized_svd, with
    2 power iterations) of a seeded sample, streamed over uint8 batches, then applied to all."""
    n = len(images)
    flat = images.reshape(n, -1)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(n)[:_PCA_FIT_EXAMPLES])
    components = min(components, flat.shape[1], len(rows))
    zero = np.zeros(flat.shape[1], np.float32)
    mean = sum(x.sum(axis=0, dtype=np.float64) for _, x in _centred_batches(flat, rows, zero))
    mean = (mean / len(rows)).astype(np.float32)
    width = min(components + 10, flat.shape[1], len(rows))
    omega = rng.standard_normal((flat.shape[1], width), dtype=np.float32)
    q = _orthonormal(_times(flat, rows, mean, omega))
    for _ in range(2):
        z = _orthonormal(_times_transposed(flat, rows, mean, q).T)
        q = _orthonormal(_times(flat, rows, mean, z))
    b = _times_transposed(flat, rows, mean, q)  # [width, D]
    del q, z
    vt = np.linalg.svd(b, full_matrices=False)[2][:components]
    return _times(flat, np.arange(n), mean, vt.T, np.float16)


def _orthonormal(a: np.ndarray) -> np.ndarray:
    """Q of the economic QR of float32[M, W], computed in float32 (numpy's would be float64)."""
    import scipy.linalg

    return scipy.linalg.qr(a, mode="economic", overwrite_a=True, check_finite=False)[0]


def nearest(x: np.ndarray, k: int, query: np.ndarray | None = None) -> np.ndarray:
    """int64[len(query), k]: indices into x of each query row's k nearest rows (Euclidean),
    nearest first, ties by index; query defaults to x (each row then finds itself first).

    Brute force in float64 over query chunks, ranking by |y|^2 - 2 x.y as scikit-learn's
    brute-force search does (the neighbours match `NearestNeighbors`; tests compare them), at
    a fraction of its import time: the search runs once per run, on the host."""
    x64 = np.asarray(x, np.float64)
    q64 = x64 if query is None else np.asarray(query, np.float64)
    k = min(k, len(x64))
    squared = np.einsum("ij,ij->i", x64, x64)
    chunk = max(1, min(1024, 2**25 // max(len(x64), 1)))  # <= 256 MB of ranks per chunk
    out = np.empty((len(q64), k), np.int64)
    for s in range(0, len(q64), chunk):
        rank = squared[None, :] - 2.0 * (q64[s : s + chunk] @ x64.T)
        if k < rank.shape[1]:
            part = np.argpartition(rank, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(rank.shape[1]), rank.shape)
        rows = np.arange(len(rank))[:, None]
        order = np.lexsort((part, rank[rows, part]), axis=1)
        out[s : s + chunk] = part[rows, order]
    return out


def same_class_neighbours(features: FeatureSpace, members: np.ndarray, k: int) -> np.ndarray:
    """int32[len(members), k']: training indices of each member's k' nearest same-class
    neighbours (itself excluded), k' = min(k, len(members) - 1); as imblearn SMOTE's `nn_k_`."""
    k = min(k, len(members) - 1)
    local = nearest(features.take(members), k + 1)[:, 1:]
    return members[local].astype(np.int32)


def adasyn_difficulty(
    features: FeatureSpace, labels: np.ndarray, query: np.ndarray, k: int
) -> np.ndarray:
    """float64[len(query)]: fraction of each queried example's k nearest neighbours over *all*
    classes that belong to another class (imblearn ADASYN's `ratio_nn` before normalisation).

    The index is every training example (pixels: a float32 copy of the split)."""
    k = min(k, len(labels) - 1)
    everyone = features.take(np.arange(len(labels)))
    out = np.empty(len(query), np.float64)
    for s in range(0, len(query), 2048):
        q = query[s : s + 2048]
        nns = nearest(everyone, k + 1, features.take(q))[:, 1:]
        out[s : s + 2048] = np.sum(labels[nns] != labels[q][:, None], axis=1) / k
    return out

"""Optional preprocessing: histogram equalisation (host, once) and a 3x3 median filter (device).

dm-pix has no median filter; a 19-comparator min/max sorting network over the 9 shifted views
is exact and costs about as much as a 3x3 box blur.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# Paeth's median-of-9 network (as in Devillard's opt_med9): 19 compare-exchange steps after
# which position 4 holds the median.
_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def median3x3(images: jnp.ndarray) -> jnp.ndarray:
    """3x3 median of float[B, H, W] with edge padding; equals
    scipy.ndimage.median_filter(x, size=(1, 3, 3), mode="nearest")."""
    h, w = images.shape[-2:]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    p = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9_NETWORK:
        p[a], p[b] = jnp.minimum(p[a], p[b]), jnp.maximum(p[a], p[b])
    return p[4]


def equalize_histogram(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per-image histogram equalisation of uint8[N, H, W] -> uint8[N, H, W].

    The classic mapping round((cdf(v) - cdf_min) / (H*W - cdf_min) * 255); constant images are
    left unchanged.
    """
    n_pix = images[0].size if len(images) else 0
    out = np.empty_like(images)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk].reshape(-1, n_pix)
        m = len(x)
        hist = np.bincount((x + (np.arange(m)[:, None] * 256)).ravel(), minlength=256 * m)
        cdf = hist.reshape(m, 256).cumsum(axis=1)
        cdf_min = np.take_along_axis(cdf, x.min(axis=1, keepdims=True).astype(np.int64), axis=1)
        denom = n_pix - cdf_min
        lut = np.rint((cdf - cdf_min) * 255.0 / np.maximum(denom, 1))
        lut = np.where(denom > 0, np.clip(lut, 0, 255), np.arange(256)[None, :]).astype(np.uint8)
        out[s : s + chunk] = np.take_along_axis(lut, x.astype(np.int64), axis=1).reshape(
            images[s : s + chunk].shape
        )
    return out

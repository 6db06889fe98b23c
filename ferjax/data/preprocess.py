"""Preprocessing: input normalisation (`data.normalize`), histogram equalisation (host, once)
and a 3x3 median filter (device).

dm-pix has no median filter; a 19-comparator min/max sorting network over the 9 shifted views
is exact and costs about as much as a 3x3 box blur.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ferjax.runtime.registry import Registry

# data.normalize -> fn(train_images uint8[N, H, W, C]) -> (mean, std), or (None, None) for
# per-image standardisation.
NORMALIZATIONS = Registry("data.normalize")


@NORMALIZATIONS.register("dataset")
def _dataset_stats(train_images: np.ndarray) -> tuple[float, float]:
    """Mean and std of a strided sample of the training pixels (std at least 1 grey level):
    about 4,096 images, fewer when they take more than 64 MB (large colour faces)."""
    count = min(4096, max(1, (64 << 20) // int(np.prod(train_images.shape[1:]))))
    sample = train_images[:: max(1, len(train_images) // count)].astype(np.float64)
    return float(sample.mean()), float(max(sample.std(), 1.0))


@NORMALIZATIONS.register("per_image")
def _per_image(train_images: np.ndarray) -> tuple[None, None]:
    """Each image to zero mean and unit variance (removes lighting and skin-tone differences)."""
    return None, None


@NORMALIZATIONS.register("unit")
def _unit(train_images: np.ndarray) -> tuple[float, float]:
    return 0.0, 255.0


@NORMALIZATIONS.register("symmetric")
def _symmetric(train_images: np.ndarray) -> tuple[float, float]:
    return 127.5, 127.5


@NORMALIZATIONS.register("imagenet")
def _imagenet(train_images: np.ndarray) -> tuple[list[float], list[float]]:
    """The ImageNet channel statistics (RGB) that pretrained backbones expect; their mean over
    the channels for grayscale input."""
    mean, std = [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]
    if train_images.shape[-1] == 1:
        return [sum(mean) / 3], [sum(std) / 3]
    return mean, std


def normalization(mode: str, train_images: np.ndarray) -> tuple[float | None, float | None]:
    """(mean, std) so that the model sees (pixels - mean) / std; (None, None) = per image."""
    return NORMALIZATIONS.get(mode)(train_images)


def normalize_images(x, norm):
    """float32[B, H, W, C] pixels -> model input. norm = (mean, std) (numbers, or one per
    channel), or (None, None) for per-image standardisation over all pixels and channels."""
    mean, std = norm
    if mean is None:
        m = jnp.mean(x, axis=(-3, -2, -1), keepdims=True)
        s = jnp.std(x, axis=(-3, -2, -1), keepdims=True)
        return (x - m) / jnp.maximum(s, 1.0)
    if isinstance(mean, list | tuple):
        mean, std = jnp.asarray(mean, x.dtype), jnp.asarray(std, x.dtype)
    return (x - mean) / std


# Paeth's median-of-9 network (as in Devillard's opt_med9): 19 compare-exchange steps after
# which position 4 holds the median.
_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def median3x3(images: jnp.ndarray) -> jnp.ndarray:
    """3x3 median of float[B, H, W, C] per channel, edge padding; equals
    scipy.ndimage.median_filter(x, size=(1, 3, 3, 1), mode="nearest")."""
    h, w = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    p = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9_NETWORK:
        p[a], p[b] = jnp.minimum(p[a], p[b]), jnp.maximum(p[a], p[b])
    return p[4]


def equalize_histogram(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per-image histogram equalisation of uint8[N, H, W, C] -> the same shape.

    The classic mapping round((cdf(v) - cdf_min) / (H*W*C - cdf_min) * 255) over all values of
    an image; constant images are left unchanged.
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

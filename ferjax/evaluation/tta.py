"""Test-time augmentation: the views of each image whose softmax outputs evaluation averages
(`eval.tta`), one function and one registration in TTA_MODES each."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ferjax.runtime.registry import Registry

TTA_MODES = Registry("eval.tta")


@TTA_MODES.register("none")
def _no_tta(images, crop: float):
    return images[None]


@TTA_MODES.register("flip")
def _flip_tta(images, crop: float):
    """The image and its mirror."""
    return jnp.stack([images, images[:, :, ::-1]])


@TTA_MODES.register("ten_crop")
def _ten_crop(images, crop: float):
    """4 corner crops and the centre crop of `crop` x the size, resized back (bilinear), and
    their mirrors."""
    b, h, w, c = images.shape
    ch, cw = int(round(h * crop)), int(round(w * crop))
    starts = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    views = []
    for top, left in starts:
        part = images[:, top : top + ch, left : left + cw]
        views.append(jax.image.resize(part, (b, h, w, c), "bilinear"))
    views += [v[:, :, ::-1] for v in views]
    return jnp.stack(views)


def tta_views(images, mode: str, crop: float = 0.9):
    """Test-time views of float32[B, H, W, C] images -> float32[V, B, H, W, C] (TTA_MODES)."""
    return TTA_MODES.get(mode)(images, crop)

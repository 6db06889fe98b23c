"""Automatic augmentation policies over the registered ops: trivial_augment (TrivialAugment)
and rand_augment(n, m) (RandAugment)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ferjax.data.augment.chain import register
from ferjax.data.augment.ops import (
    _blur_by,
    _brighten,
    _contrast_by,
    _crop_by,
    _erase_box,
    _gamma_by,
    _hue_by,
    _noise_by,
    _saturate,
    _shift_by,
    rotate_by,
)
from ferjax.runtime.errors import ConfigError

# ----------------------------------------------------------------------- automatic policies
# The ops the policies draw from: fn(image, key, level) with level a traced scalar in [0, 1]
# (0 = identity, 1 = the strongest version: the range below); signed ops take a random sign.
# Sizes are fractions of the image side, so the list suits 48..224-pixel faces alike.
_SHIFT = 0.2  # shift_x / shift_y: up to 20% of the side (10 px at 48, 45 px at 224)


def _sign(key, value):
    return jnp.where(jax.random.bernoulli(key), value, -value)


def _policy_shift(image, key, level, axis: int):
    """Content moved along `axis` (0 = rows, 1 = columns) by +-level x 20% of the side."""
    pad = int(math.ceil(_SHIFT * max(image.shape[:2])))
    d = _sign(key, jnp.round(level * _SHIFT * image.shape[axis])).astype(jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    return _shift_by(image, d, zero, pad) if axis == 0 else _shift_by(image, zero, d, pad)


def _policy_erase(image, key, level):
    """A box of area fraction level x 0.25 set to 0 (nothing at level 0)."""
    area = 0.25 * level
    box = _erase_box(image, area, jax.random.split(key, 3)) & (area > 0)
    return jnp.where(box[..., None], 0.0, image)


def _policy_crop(image, key, level):
    """A square-ish crop (aspect ratio 1) of area fraction 1 - level x 0.5, resized back."""
    k1, k2 = jax.random.split(key)
    return _crop_by(image, 1.0 - 0.5 * level, 1.0, k1, k2)


# name -> (fn(image, key, level), colour only); the ranges are those at level 1.
POLICY_OPS: dict[str, tuple[Callable, bool]] = {
    "identity": (lambda x, k, v: x, False),
    "brightness": (lambda x, k, v: _brighten(x, _sign(k, 60.0 * v)), False),  # +-60 levels
    "contrast": (lambda x, k, v: _contrast_by(x, 1.0 + _sign(k, 0.6 * v)), False),  # x0.4..1.6
    "gamma": (lambda x, k, v: _gamma_by(x, jnp.exp(_sign(k, math.log(2.0) * v))), False),  # 0.5..2
    "rotate": (lambda x, k, v: rotate_by(x, _sign(k, 30.0 * v)), False),  # +-30 degrees
    "shift_x": (lambda x, k, v: _policy_shift(x, k, v, axis=1), False),  # +-20% of the width
    "shift_y": (lambda x, k, v: _policy_shift(x, k, v, axis=0), False),  # +-20% of the height
    "crop": (_policy_crop, False),  # area 1..0.5
    "blur": (lambda x, k, v: _blur_by(x, jnp.maximum(1.5 * v, 1e-3)), False),  # sigma 0..1.5 px
    "noise": (lambda x, k, v: _noise_by(x, k, 20.0 * v), False),  # std 0..20 levels
    "erase": (_policy_erase, False),  # box of area 0..0.25
    "saturation": (lambda x, k, v: _saturate(x, 1.0 + _sign(k, 0.9 * v)), True),  # x0.1..1.9
    "hue": (lambda x, k, v: _hue_by(x, _sign(k, 20.0 * v)), True),  # +-20 degrees
}


def policy_ops(channels: int) -> list[str]:
    """Names of the ops the policies draw from for images of `channels` channels (the colour
    ops only for 3)."""
    return [n for n, (_, colour) in POLICY_OPS.items() if channels == 3 or not colour]


def _policy_draw(image, key, level):
    """One op of policy_ops(C), uniformly, at `level`, as one program (lax.switch on a random
    index; under vmap every branch runs and the drawn one is selected). Clipped to 0..255."""
    branches = [POLICY_OPS[n][0] for n in policy_ops(image.shape[-1])]
    k_op, k_args = jax.random.split(key)
    index = jax.random.randint(k_op, (), 0, len(branches))
    out = jax.lax.switch(index, branches, image, k_args, jnp.asarray(level, image.dtype))
    return jnp.clip(out, 0.0, 255.0).astype(image.dtype)


@register("trivial_augment")
def trivial_augment(image, key):
    """TrivialAugment (Muller & Hutter 2021): one op drawn uniformly from policy_ops(C) at a
    magnitude drawn uniformly from its range."""
    k_level, k_draw = jax.random.split(key)
    return _policy_draw(image, k_draw, jax.random.uniform(k_level, ()))


def _check_rand_augment(n: int = 2, m: int = 9):
    if n < 0:
        raise ConfigError(f"augment.ops: rand_augment(n=...) must be >= 0, got {n}")
    if not 0 <= m <= 30:
        raise ConfigError(f"augment.ops: rand_augment(m=...) must be in 0..30, got {m}")


@register("rand_augment", check=_check_rand_augment)
def rand_augment(image, key, n: int = 2, m: int = 9):
    """RandAugment (Cubuk et al. 2020): n ops drawn uniformly (with replacement) from
    policy_ops(C), each at magnitude m of 30 (level m / 30 of each op's range)."""
    _check_rand_augment(n, m)
    for k in jax.random.split(key, n) if n else []:
        image = _policy_draw(image, k, m / 30.0)
    return image

"""On-device augmentation: small per-example ops, composed from a config string.

Each op is a pure function `op(image, key, **params) -> image` on one float32 [H, W] image; the
composition is vmapped over the batch and runs inside the jitted train step. Adding an op is one
function plus `@register("name")`; the config names the chain, e.g. "flip|shift(pad=4)".
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ferjax.errors import ConfigError

OPS: dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        OPS[name] = fn
        return fn

    return wrap


@register("flip")
def flip(image, key, p: float = 0.5):
    """Horizontal mirror with probability p."""
    return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1], image)


@register("shift")
def shift(image, key, pad: int = 4):
    """Pads by `pad` pixels (edge values) and crops back at a random offset: a shift of up to
    +-pad pixels in each direction."""
    pad = int(pad)
    padded = jnp.pad(image, pad, mode="edge")
    offset = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1]), image.shape)


_OP_RE = re.compile(r"^([a-z_0-9]+)(?:\((.*)\))?$")


def parse_ops(spec: str) -> list[tuple[str, dict]]:
    """'flip|shift(pad=4)' -> [('flip', {}), ('shift', {'pad': 4.0})]."""
    chain = []
    for part in [p.strip() for p in str(spec).split("|") if p.strip()]:
        m = _OP_RE.match(part)
        if not m or m.group(1) not in OPS:
            raise ConfigError(
                f"augment.ops: unknown op {part!r}; known ops: {', '.join(sorted(OPS))}"
            )
        params = {}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            key, eq, value = arg.partition("=")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                eq = ""
            if not eq:
                raise ConfigError(f"augment.ops: bad argument {arg!r} in {part!r}, expected k=v")
        chain.append((m.group(1), params))
    return chain


def make_augment(spec: str) -> Callable:
    """Returns augment(images float32[B, H, W], key) -> float32[B, H, W]."""
    chain = parse_ops(spec)

    def one(image, key):
        keys = jax.random.split(key, max(len(chain), 1))
        for (name, params), k in zip(chain, keys):
            image = OPS[name](image, k, **params)
        return image

    def augment(images, key):
        if not chain:
            return images
        return jax.vmap(one)(images, jax.random.split(key, images.shape[0]))

    return augment

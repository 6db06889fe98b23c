"""2x2 / stride-2 max-pooling as a reshape + max, with a mask-based backward.

XLA's CPU gradient of reduce_window max (select_and_scatter) costs more than a plain reshape +
max (bench/README.md; `python -m bench.conv_grad` times both). The backward here routes each
output cotangent to the first maximum of its window in row-major order, the element
select_and_scatter picks, so gradients match flax.linen.max_pool exactly, ties included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def windows_2x2(x):
    """x [B, H, W, C] (H, W even) -> [B, H/2, 2, W/2, 2, C]: each 2x2 window on axes 2 and 4."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _max_pool_even(x):
    return windows_2x2(x).max(axis=(2, 4))


def _max_pool_even_fwd(x):
    return _max_pool_even(x), x


def _max_pool_even_bwd(x, dy):
    xw = windows_2x2(x)
    is_max = xw == xw.max(axis=(2, 4), keepdims=True)
    # Window positions scored 8, 4, 2, 1 in row-major order: the top score is the first maximum.
    order = jnp.array([[8, 4], [2, 1]], jnp.int8).reshape(1, 1, 2, 1, 2, 1)
    score = jnp.where(is_max, order, jnp.int8(0))
    first = score == score.max(axis=(2, 4), keepdims=True)
    dx = jnp.where(first, dy[:, :, None, :, None, :], jnp.zeros((), dy.dtype))
    return (dx.reshape(x.shape),)


_max_pool_even.defvjp(_max_pool_even_fwd, _max_pool_even_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """x [B, H, W, C] -> [B, H//2, W//2, C]; VALID padding (an odd last row/column is dropped),
    the same value and gradient as flax.linen.max_pool(x, (2, 2), strides=(2, 2))."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    if (h, w) != x.shape[1:3]:
        x = x[:, :h, :w]
    return _max_pool_even(x)

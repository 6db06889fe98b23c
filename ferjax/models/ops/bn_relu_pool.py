"""Training-mode BatchNorm + ReLU + 2x2/stride-2 max-pooling as one op with its own gradient.

Composed from library ops, XLA's CPU backend runs this block as many passes over the largest
activation of a CNN (the first stage's [B, 48, 48, C]): the centred input stored for the
backward, the normalised ReLU output stored for the pool, a stored mask for the pool's
gradient, a stored cotangent for BatchNorm's, each pass a read and a write of the whole tensor.
Here most of the work happens on the pooled quarter instead:

- forward: the batch statistics (two reductions over x), then one windowed max of s * x with
  s = sign of the per-channel BatchNorm slope a = scale / sqrt(var + eps). Since
  relu(a * x + b) is monotone in x, increasing where a >= 0 and decreasing where a < 0, the
  window's output is relu(a * m + b) with m = s * max(s * x), the window's max (a >= 0) or
  min (a < 0): the normalisation and the ReLU run on the pooled quarter.
- backward: the gradient reaches the window's first element equal to m (row-major; the element
  select_and_scatter and ferjax.models.ops.max_pool_2x2 pick), where relu's output is positive.
  BatchNorm's two reductions (sum of the cotangent, and of the cotangent times the normalised
  input) are over those elements only, so they run on the pooled quarter too; what is left is
  one elementwise pass, dx = a * u + c1 * x + c0 with per-channel c0, c1 (u: the routed
  cotangent).

The values are those of flax.linen.BatchNorm (use_fast_variance, biased batch variance) +
relu + max_pool up to float32 rounding (the affine is applied as a * x + b); where rounding
makes two window elements tie after the affine but not before, the gradient may go to the
other element of the tie. x: [B, H, W, C] with H and W even.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ferjax.models.ops.im2col import stored
from ferjax.models.ops.pool import windows_2x2


def _stats(x: jax.Array, eps: float):
    """(mean, var, rstd) per channel: the batch mean, the biased variance as flax's
    use_fast_variance computes it, and 1 / sqrt(var + eps)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
    return mean, var, jax.lax.rsqrt(var + eps)


def _spread(t: jax.Array) -> jax.Array:
    """[B, h, w, C] -> [B, h, 1, w, 1, C], to broadcast against windows_2x2(x)."""
    return t[:, :, None, :, None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_relu_pool(x, scale, bias, eps):
    return _forward(x, scale, bias, eps)[0]


def _forward(x, scale, bias, eps):
    mean, var, rstd = _stats(x, eps)
    a = scale * rstd
    b = bias - mean * a
    s = jnp.where(a >= 0, 1.0, -1.0).astype(x.dtype)
    m = s * jnp.max(windows_2x2(x) * s, axis=(2, 4))  # the window's max (a >= 0) or min (a < 0)
    z = m * a + b
    return (jnp.maximum(z, 0.0), mean, var), (x, m, z, scale, mean, rstd)


def _bwd(eps, res, cotangents):
    x, m, z, scale, mean, rstd = res
    g = cotangents[0]  # mean and var are statistics: no gradient flows back through them
    n = x.size // x.shape[-1]
    gz = jnp.where(z > 0, g, 0.0)  # relu's gradient, on the pooled quarter
    dbias = jnp.sum(gz, axis=(0, 1, 2))
    dscale = jnp.sum(gz * ((m - mean) * rstd), axis=(0, 1, 2))
    a = scale * rstd
    c1 = -a * rstd * dscale / n
    c0 = -a * dbias / n - c1 * mean
    # dx = a * u + c1 * x + c0 in one elementwise pass over x, u being g at the window's first
    # element equal to m (row-major rank 0..3: no earlier element of the window equals m).
    xw = windows_2x2(x)
    m6 = _spread(m)
    rank = jnp.arange(4).reshape(1, 1, 2, 1, 2, 1)
    earlier = (rank >= 1) & (xw[:, :, :1, :, :1] == m6)
    earlier |= (rank >= 2) & (xw[:, :, :1, :, 1:] == m6)
    earlier |= (rank >= 3) & (xw[:, :, 1:, :, :1] == m6)
    u = jnp.where((xw == m6) & ~earlier, _spread(gz * a), 0.0)
    # Stored: left fused into the weight gradient's transpose of dx, it is recomputed there with
    # strided reads (as ferjax.models.ops.im2col.stored explains).
    dx = stored((u + xw * c1 + c0).reshape(x.shape))
    return dx, dscale, dbias


_bn_relu_pool.defvjp(_forward, _bwd)


def bn_relu_pool(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5):
    """(max_pool_2x2(relu(batch_norm(x))), batch mean, batch variance) for x [B, H, W, C]
    (H, W even), float32; scale and bias [C]. Gradients flow to x, scale and bias."""
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"bn_relu_pool needs an even height and width, got {x.shape}")
    return _bn_relu_pool(x, scale, bias, eps)

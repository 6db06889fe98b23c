"""2-D convolution whose weight gradient is computed as cache-sized im2col GEMMs.

When XLA's CPU backend runs convolutions through YNNPACK (jaxlib 0.10's default, i.e. with
FERJAX_CPU_TUNING=0; see ferjax/runtime/platform.py), it computes the weight gradient of a
mid-sized 3x3 convolution many times slower than the forward pass (bench/README.md), and large
temporaries cost page faults on every step. This is model.conv_impl=gemm.
`conv2d` keeps XLA's forward and input gradient and computes
dW[kh, kw, ci, co] = sum_{b,h,w} x_pad[b, s*h + kh, s*w + kw, ci] * dy[b, h, w, co]
one batch chunk at a time: the chunk's patches [rows, KH*KW*Cin] stay in cache and one plain
row-major GEMM per chunk accumulates into float32 [KH*KW*Cin, Cout].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Target size of one chunk's patches [rows, KH*KW*Cin] (fits in L2/L3 next to the GEMM).
CHUNK_BYTES = 2 << 20


def _pads(in_hw, kernel_hw, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return lax.padtype_to_pads(in_hw, kernel_hw, strides, padding)
    return [tuple(p) for p in padding]


def _conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMENSION_NUMBERS)


def _chunk_size(batch: int, bytes_per_image: int, chunk_bytes: int) -> int:
    """Largest divisor of `batch` whose chunk has at most max(chunk_bytes, bytes_per_image)."""
    want = max(1, chunk_bytes // max(bytes_per_image, 1))
    return max(d for d in range(1, min(batch, want) + 1) if batch % d == 0)


def weight_grad(x, dy, kernel_hw, strides, pads, chunk_bytes: int = CHUNK_BYTES):
    """dW float32[KH, KW, Cin, Cout] of the NHWC convolution, from x [B, H, W, Cin] and the output
    cotangent dy [B, Ho, Wo, Cout] (any float dtype; products accumulate in float32)."""
    kh, kw = kernel_hw
    sh, sw = strides
    b, _, _, cin = x.shape
    _, ho, wo, cout = dy.shape
    patch_bytes = ho * wo * kh * kw * cin * jnp.dtype(x.dtype).itemsize
    chunk = _chunk_size(b, patch_bytes, chunk_bytes)
    # Padding inside the loop keeps every temporary chunk-sized (a padded copy of the whole
    # batch costs page faults on each step).
    xs = x.reshape(b // chunk, chunk, *x.shape[1:])
    dys = dy.reshape(b // chunk, chunk * ho * wo, cout)

    def body(acc, operands):
        xc, dyc = operands
        xc = jnp.pad(xc, ((0, 0), pads[0], pads[1], (0, 0)))
        taps = [
            lax.slice(
                xc,
                (0, i, j, 0),
                (chunk, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                (1, sh, sw, 1),
            )
            for i in range(kh)
            for j in range(kw)
        ]
        patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
        patches = patches.reshape(chunk * ho * wo, kh * kw * cin)
        acc = acc + lax.dot_general(
            patches, dyc, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return acc, None

    acc = jnp.zeros((kh * kw * cin, cout), jnp.float32)
    if b // chunk == 1:
        acc, _ = body(acc, (xs[0], dys[0]))
    else:
        acc, _ = lax.scan(body, acc, (xs, dys))
    return acc.reshape(kh, kw, cin, cout)


def with_gradients(forward, backward, keep=lambda x: x):
    """forward(x, w, strides, padding) -> y as a function whose gradients are
    backward(strides, padding, keep(x), w, dy) -> (dx, dw) (strides and padding static; keep:
    how the backward pass reads x, e.g. ferjax.models.ops.im2col.stored)."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def op(x, w, strides, padding):
        return forward(x, w, strides, padding)

    def op_fwd(x, w, strides, padding):
        return forward(x, w, strides, padding), (keep(x), w)

    def op_bwd(strides, padding, res, dy):
        return backward(strides, padding, *res, dy)

    op.defvjp(op_fwd, op_bwd)
    return op


def _conv2d_bwd(strides, padding, x, w, dy):
    _, x_vjp = jax.vjp(lambda x_: _conv(x_, w, strides, padding), x)
    (dx,) = x_vjp(dy)
    pads = _pads(x.shape[1:3], w.shape[:2], strides, padding)
    dw = weight_grad(x, dy, w.shape[:2], strides, pads)
    return dx, dw.astype(w.dtype)


_conv2d = with_gradients(_conv, _conv2d_bwd)


def conv2d(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
    """NHWC x [B, H, W, Cin] (*) HWIO w [KH, KW, Cin, Cout] -> [B, Ho, Wo, Cout].

    The same value and gradients as lax.conv_general_dilated; padding is "SAME", "VALID" or
    ((lo, hi), (lo, hi)); float32 or bfloat16 (dW accumulates in float32).
    """
    padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
    return _conv2d(x, w, tuple(strides), padding)

"""Convolutions as im2col GEMMs, for the layers Winograd does not cover (strided and 1x1).

XLA's CPU input gradient of a strided 3x3 convolution is a convolution with a dilated input
(well behind PyTorch's on ResNet's downsampling layers; bench/README.md), and its 1x1
convolutions are not plain GEMMs. Here, with patches [rows, KH*KW*Cin] built one batch chunk
at a time so they stay in cache:

    forward  y  = patches(x) @ W                  [rows, KH*KW*Cin] x [KH*KW*Cin, Cout]
    input    dx = col2im(dy @ W^T)                (sum of the KH*KW shifted, strided taps)
    weight   dW = ferjax.models.ops.conv.weight_grad(x, dy)   (chunked patches^T @ dy)

A 1x1 convolution needs no patches: the strided input is the GEMM operand itself.
`strided_conv` keeps XLA's forward and weight gradient (faster than the im2col ones here) and
takes only the input gradient from the GEMMs; `im2col_conv` does everything by GEMMs.
`conv_general_dilated` is lax.conv_general_dilated with a single-channel input's forward as one
GEMM (the grayscale first layer of the `fast` and `winograd` layer implementations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ferjax.models.ops.conv import (
    DIMENSION_NUMBERS,
    _chunk_size,
    _pads,
    weight_grad,
    with_gradients,
)

# Target bytes of one chunk's patches [rows, KH*KW*Cin].
CHUNK_BYTES = 4 << 20


def _out_size(n: int, k: int, s: int, pad: tuple[int, int]) -> int:
    return (n + pad[0] + pad[1] - k) // s + 1


def patches(xp: jax.Array, kernel_hw, strides, out_hw) -> jax.Array:
    """Padded xp [B, Hp, Wp, C] -> [B, Ho, Wo, KH*KW*C] (tap-major, then channel: HWIO order)."""
    (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, out_hw
    b, _, _, c = xp.shape
    taps = [
        lax.slice(
            xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def col2im(dp: jax.Array, kernel_hw, strides, padded_hw) -> jax.Array:
    """Adjoint of `patches`: dp [B, Ho, Wo, KH*KW*C] -> d(xp) [B, Hp, Wp, C]."""
    (kh, kw), (sh, sw), (hp, wp) = kernel_hw, strides, padded_hw
    b, ho, wo, kc = dp.shape
    c = kc // (kh * kw)
    dp = dp.reshape(b, ho, wo, kh * kw, c)
    out = None
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        cfg = (
            (0, 0, 0),
            (i, hp - i - sh * (ho - 1) - 1, sh - 1),
            (j, wp - j - sw * (wo - 1) - 1, sw - 1),
            (0, 0, 0),
        )
        term = lax.pad(dp[:, :, :, t], jnp.zeros((), dp.dtype), cfg)
        out = term if out is None else out + term
    return out


def _out_hw(x_shape, w_shape, strides, pads) -> tuple[int, int]:
    return tuple(_out_size(x_shape[1 + d], w_shape[d], strides[d], pads[d]) for d in (0, 1))


def _patch_gemm(x, w, strides, pads):
    """x [B, H, W, Cin] (*) w [KH, KW, Cin, Cout] as one GEMM of the padded input's patches
    [B, Ho, Wo, KH*KW*Cin] x [KH*KW*Cin, Cout]."""
    kh, kw, cin, cout = w.shape
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    p = patches(xp, (kh, kw), strides, _out_hw(x.shape, w.shape, strides, pads))
    return lax.dot_general(p, w.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())))


def _forward(x, w, strides, pads):
    kh, kw, cin, cout = w.shape
    b, h, wd, _ = x.shape
    ho, wo = _out_hw(x.shape, w.shape, strides, pads)
    chunk = _chunk_size(b, ho * wo * kh * kw * cin * x.dtype.itemsize, CHUNK_BYTES)

    def chunk_fn(xc):
        return _patch_gemm(xc, w, strides, pads)

    if chunk == b:
        return chunk_fn(x)
    y = lax.map(chunk_fn, x.reshape(b // chunk, chunk, h, wd, cin))
    return y.reshape(b, ho, wo, cout)


def _input_grad(dy, w, x_shape, strides, pads):
    kh, kw, cin, cout = w.shape
    b, h, wd, _ = x_shape
    _, ho, wo, _ = dy.shape
    hp, wp = h + sum(pads[0]), wd + sum(pads[1])
    w2t = w.reshape(kh * kw * cin, cout)
    chunk = _chunk_size(b, ho * wo * kh * kw * cin * dy.dtype.itemsize, CHUNK_BYTES)

    def chunk_fn(dyc):
        dp = lax.dot_general(dyc, w2t, (((3,), (1,)), ((), ())))
        dxp = col2im(dp, (kh, kw), strides, (hp, wp))
        return dxp[:, pads[0][0] : pads[0][0] + h, pads[1][0] : pads[1][0] + wd]

    if chunk == b:
        return chunk_fn(dy)
    dx = lax.map(chunk_fn, dy.reshape(b // chunk, chunk, ho, wo, cout))
    return dx.reshape(x_shape)


def _conv_bwd(strides, pads, x, w, dy):
    dx = _input_grad(dy, w, x.shape, strides, pads)
    dw = weight_grad(x, dy, w.shape[:2], strides, pads)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv = with_gradients(_forward, _conv_bwd)


def pointwise_conv(x: jax.Array, w: jax.Array, strides=(1, 1)) -> jax.Array:
    """1x1 convolution x [B, H, W, Cin] (*) w [1, 1, Cin, Cout] as one 2-D GEMM of the strided
    input [B*Ho*Wo, Cin]; autodiff gives plain GEMM gradients (dx scattered back by a padding
    XLA fuses). The 2-D form matters: with the batch and spatial axes as three contracting
    dimensions XLA's dW is several times slower, and so is XLA's own strided 1x1 backward
    (`python -m bench.conv_layers` times the layers; bench/README.md)."""
    xs = x[:, :: strides[0], :: strides[1]]
    b, ho, wo, cin = xs.shape
    return (xs.reshape(b * ho * wo, cin) @ w[0, 0]).reshape(b, ho, wo, -1)


def _xla_conv(x, w, strides, pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DIMENSION_NUMBERS)


def stored(x: jax.Array) -> jax.Array:
    """x, behind a conditional XLA cannot see through (a runtime predicate; both branches return
    x exactly), so that x is materialised once and later read as stored.

    Without it, XLA fuses x's producers (BatchNorm, residual adds, ReLU, back through whole
    residual chains) into the [Cin, H, W, B] transpose of its weight gradient and recomputes
    them there with strided reads, a large cost for ResNet-18's stage-2 input (bench/README.md).
    ferjax.models.layers.StoredInputConv reads its input through this too. One device only:
    under SPMD partitioning the predicate (an element of the global batch) would need
    cross-device communication."""
    if jax.device_count() != 1:
        return x
    pred = jnp.isfinite(x.reshape(-1)[0])
    return lax.cond(pred, lambda v: v, lambda v: v * 1, x)


def _strided_bwd(strides, pads, x, w, dy):
    dx = _input_grad(dy, w, x.shape, strides, pads)
    dw = jax.vjp(lambda w_: _xla_conv(x, w_, strides, pads), w)[1](dy)[0]
    return dx.astype(x.dtype), dw


_strided = with_gradients(_xla_conv, _strided_bwd, keep=stored)


def strided_conv(x: jax.Array, w: jax.Array, strides=(2, 2), padding="SAME") -> jax.Array:
    """Strided (or any non-Winograd) convolution: XLA's forward and weight gradient, the input
    gradient as chunked GEMMs + col2im (XLA's is a convolution over a dilated input, slower on
    ResNet's downsampling layers; bench/README.md). 1x1 kernels without padding:
    pointwise_conv."""
    strides = tuple(strides)
    pads = tuple(tuple(p) for p in _pads(x.shape[1:3], w.shape[:2], strides, padding))
    if w.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
        return pointwise_conv(x, w, strides)
    return _strided(x, w, strides, pads)


def _single_channel_forward(x, w, strides, pads):
    y = _patch_gemm(x, w, strides, pads)
    # Stored, so that a reduction over y (BatchNorm's statistics) reads it as it read XLA's
    # convolution output; XLA would otherwise reduce the GEMM's 2-D result in another order.
    return stored(y)


def _xla_conv_bwd(strides, pads, x, w, dy):
    return jax.vjp(lambda x_, w_: _xla_conv(x_, w_, strides, pads), x, w)[1](dy)


_single_channel = with_gradients(_single_channel_forward, _xla_conv_bwd)


# Where the GEMM forward is taken (python -m bench.single_channel; bench/README.md): kernels of
# at most 3x3 taps on images of at most 128x128 pixels. Alone, 3x3 kernels gained at 48 px
# (strides 1 and 2) and mostly at 112 px, not at 224 px; 7x7 ones (an ImageNet stem on
# grayscale input) were slower as a GEMM of their 49 taps, 5x5 ones even.
MAX_TAPS = 9
MAX_PIXELS = 128 * 128


def single_channel_applies(lhs, rhs, dimension_numbers, dilations=(), groups=1) -> bool:
    """Whether conv_general_dilated takes the GEMM forward: a float32 NHWC input with one
    channel and at most MAX_PIXELS pixels per image, an HWIO kernel of at most MAX_TAPS taps, no
    dilation, one feature group."""
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, DIMENSION_NUMBERS)
    return (
        lhs.ndim == 4
        and lhs.shape[-1] == 1
        and lhs.shape[1] * lhs.shape[2] <= MAX_PIXELS
        and rhs.ndim == 4
        and rhs.shape[0] * rhs.shape[1] <= MAX_TAPS
        and lhs.dtype == rhs.dtype == jnp.float32
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
        and all(d == 1 for d in dilations)
        and groups == 1
    )


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """lax.conv_general_dilated (same arguments), with the forward of a single-channel input (a
    grayscale network's first layer; single_channel_applies) as one GEMM of its patches
    [B, Ho, Wo, KH*KW] x [KH*KW, Cout].

    XLA's CPU convolution handles Cin = 1 poorly: the demo CNN's first layer (1 -> 16 channels,
    48x48, batch 128) took ~7 ms of its 47-49 ms train step; with the GEMM the step takes 45-46
    ms and an evaluation pass 25% less time (bench/README.md). The GEMM's products accumulate
    in the convolution's order, so the output is the same, every bit (on the CPUs measured;
    tests/test_models_ops_im2col.py checks it where it runs). The gradients stay XLA's. Any
    other convolution is lax.conv_general_dilated itself."""
    dilations = tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())
    applies = single_channel_applies(lhs, rhs, dimension_numbers, dilations, feature_group_count)
    if not applies or precision is not None or kwargs:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    strides = tuple(window_strides)
    pads = tuple(tuple(p) for p in _pads(lhs.shape[1:3], rhs.shape[:2], strides, padding))
    return _single_channel(lhs, rhs, strides, pads)


def im2col_conv(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
    """NHWC x [B, H, W, Cin] (*) HWIO w [KH, KW, Cin, Cout] -> [B, Ho, Wo, Cout] as chunked
    im2col GEMMs (forward, input and weight gradient); the same values and gradients as
    lax.conv_general_dilated. padding: "SAME", "VALID" or ((lo, hi), (lo, hi))."""
    strides = tuple(strides)
    pads = tuple(tuple(p) for p in _pads(x.shape[1:3], w.shape[:2], strides, padding))
    if w.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
        return pointwise_conv(x, w, strides)
    return _conv(x, w, strides, pads)

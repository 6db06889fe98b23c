"""WinogradConv: a drop-in for flax.linen.Conv whose 3x3 stride-1 SAME convolutions run through
ferjax.models.ops.winograd (fewer multiplies on CPU), with nn.Conv's parameter tree.

Which layers: 3x3, stride 1, SAME, with at least `min_winograd_in` input channels (0: by the
CPU, winograd_min_in). Every other convolution (1x1, strided, VALID, too few input channels for
the GEMMs to pay) runs
through lax.conv_general_dilated exactly as nn.Conv would (others="xla") or, with
others="gemm", through ferjax.models.ops.im2col.strided_conv (1x1 layers as one GEMM; strided 3x3
layers with a GEMM input gradient: XLA's gradients of both are slow on CPU; layers with fewer
than min_in_features input channels stay on XLA). A model
can use WinogradConv for all its layers; checkpoints interchange with nn.Conv / GemmConv models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from ferjax.models.conv_base import ConvBase
from ferjax.models.ops import im2col
from ferjax.models.ops.im2col import strided_conv
from ferjax.models.ops.winograd import CHUNK_BYTES, winograd_conv3x3
from ferjax.runtime import cpu

_DN = ("NHWC", "HWIO", "NHWC")
# Fewest input channels of a Winograd layer, by the CPU's vector units (ferjax.runtime.cpu).
# Full-width AVX-512: 128. There XLA's direct convolution of ResNet-18's and the CNN's
# 64-channel 48x48 layers runs near the matmul peak, and Winograd F(4x4) on them was slower
# than the other path (im2col.strided_conv); their steps gained 4-8% without Winograd on those
# layers, while the 128- to 512-channel layers keep gaining from it (bench/README.md). Elsewhere:
# 8, as before (on half-width AVX-512 units Winograd beat XLA's convolution on the 64-channel
# layers by 27%; AVX2-only CPUs were not measured).
WINOGRAD_MIN_IN = {cpu.FULL_WIDTH: 128}
WINOGRAD_MIN_IN_OTHERWISE = 8


def winograd_min_in() -> int:
    """The fewest input channels of a Winograd layer on this CPU (WINOGRAD_MIN_IN)."""
    return WINOGRAD_MIN_IN.get(cpu.vector_class(), WINOGRAD_MIN_IN_OTHERWISE)


def winograd_applies(
    kernel_size: Sequence[int], strides: Sequence[int], padding: Any, in_features: int, min_in: int
) -> bool:
    """True for the layers WinogradConv computes by Winograd: 3x3, stride 1, SAME (or explicit
    ((1, 1), (1, 1))) padding and at least `min_in` input channels."""
    same = padding == "SAME" or (
        not isinstance(padding, str) and tuple(tuple(p) for p in padding) == ((1, 1), (1, 1))
    )
    return (
        tuple(kernel_size) == (3, 3) and tuple(strides) == (1, 1) and same and in_features >= min_in
    )


def cpu_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Any = "SAME",
    tile: int = 0,
    weight_grad: str = "winograd",
    others: str = "gemm",
    min_in_features: int = 8,
    chunk_bytes: int = CHUNK_BYTES,
    gemm_dtype: str = "float32",
    min_winograd_in: int = 0,
) -> jax.Array:
    """WinogradConv's convolution of x [B, H, W, Cin] with kernel [KH, KW, Cin, Cout] (HWIO):
    Winograd where winograd_applies with at least min_winograd_in input channels (0: the CPU's
    winograd_min_in()), else ferjax.models.ops.im2col.strided_conv (others="gemm", >=
    min_in_features input channels: 1x1 layers as one GEMM, others with a GEMM input gradient)
    or XLA (a single-channel input's forward as one GEMM: im2col.conv_general_dilated)."""
    cin = x.shape[-1]
    min_in = max(min_in_features, min_winograd_in or winograd_min_in())
    if winograd_applies(kernel.shape[:2], strides, padding, cin, min_in):
        return winograd_conv3x3(x, kernel, tile, weight_grad, chunk_bytes, gemm_dtype)
    if others == "gemm" and cin >= min_in_features:
        return strided_conv(x, kernel, tuple(strides), padding)
    if not isinstance(padding, str):
        padding = tuple(tuple(p) for p in padding)
    return im2col.conv_general_dilated(x, kernel, tuple(strides), padding, dimension_numbers=_DN)


class WinogradConv(ConvBase):
    """nn.Conv for NHWC inputs x [B, H, W, Cin] -> [B, Ho, Wo, features]: parameters 'kernel'
    (HWIO [KH, KW, Cin, features], lecun_normal) and, with use_bias, 'bias' ([features], zeros).

    tile: Winograd output tile (0: per layer, the fewest multiplies,
    ferjax.models.ops.winograd.auto_tile;
    2: F(2x2,3x3), as accurate as a direct convolution; 3 or 4: fewer multiplies, larger rounding
    errors). weight_grad: winograd | gemm | xla. others: xla | gemm (the non-Winograd layers).
    min_in_features: layers with fewer input channels (e.g. a grayscale stem) use XLA's
    convolution. gemm_dtype: float32 or bfloat16 (GEMM operands; accumulation stays float32).
    min_winograd_in: the fewest input channels of a Winograd layer (0: by the CPU,
    winograd_min_in); narrower 3x3 stride-1 layers take the `others` path."""

    tile: int = 0
    weight_grad: str = "winograd"
    others: str = "gemm"
    min_in_features: int = 8
    chunk_bytes: int = CHUNK_BYTES
    gemm_dtype: str = "float32"
    min_winograd_in: int = 0

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return cpu_conv(
            x,
            kernel,
            self.strides,
            self.padding,
            tile=self.tile,
            weight_grad=self.weight_grad,
            others=self.others,
            min_in_features=self.min_in_features,
            chunk_bytes=self.chunk_bytes,
            gemm_dtype=self.gemm_dtype,
            min_winograd_in=self.min_winograd_in,
        )

"""Conv and max-pool layers chosen by `model.conv_impl`, with one parameter tree for all impls.

xla: flax.linen.Conv / max_pool (XLA's own gradients; best on GPU/TPU).
fast: FastConv / ferjax.ops.max_pool_2x2 (custom VJPs that are several times faster on CPU).
auto: fast on the CPU backend, xla elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.ops import conv2d, max_pool_2x2

CONV_IMPLS = ("auto", "xla", "fast")


def resolve_conv_impl(impl: str, backend: str | None = None) -> str:
    """'auto' -> 'fast' on CPU, 'xla' on any other backend; 'xla' and 'fast' pass through."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl: got {impl!r}, expected one of {', '.join(CONV_IMPLS)}")
    if impl != "auto":
        return impl
    return "fast" if (backend or jax.default_backend()) == "cpu" else "xla"


class FastConv(nn.Module):
    """Drop-in for nn.Conv (NHWC, HWIO 'kernel', optional 'bias', same init and dtype rules)
    whose weight gradient runs through ferjax.ops.conv2d."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, tuple(self.strides), self.padding)
        if bias is not None:
            y = y + bias
        return y


def conv(
    impl: str,
    features: int,
    kernel: int,
    strides: int = 1,
    use_bias: bool = False,
    dtype: Any = jnp.float32,
    name: str | None = None,
) -> nn.Module:
    """A square SAME convolution module: nn.Conv for impl 'xla', FastConv for 'fast'."""
    cls = FastConv if resolve_conv_impl(impl) == "fast" else nn.Conv
    return cls(
        features,
        (kernel, kernel),
        (strides, strides),
        padding="SAME",
        use_bias=use_bias,
        dtype=dtype,
        name=name,
    )


def max_pool(impl: str, x: jax.Array) -> jax.Array:
    """2x2 / stride-2 max-pooling of x [B, H, W, C] -> [B, H//2, W//2, C]."""
    if resolve_conv_impl(impl) == "fast":
        return max_pool_2x2(x)
    return nn.max_pool(x, (2, 2), strides=(2, 2))

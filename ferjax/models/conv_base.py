"""ConvBase: nn.Conv's fields and parameter tree for convolution modules that compute the
convolution their own way (layers.GemmConv, winograd_conv.WinogradConv), so that checkpoints
interchange with flax.linen.Conv models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvBase(nn.Module):
    """NHWC x [B, H, W, Cin] -> [B, Ho, Wo, features]; parameters 'kernel' (HWIO [KH, KW, Cin,
    features], lecun_normal) and, with use_bias, 'bias' ([features], zeros): nn.Conv's names,
    shapes, initialisers and dtype rules. Subclasses implement `convolve(x, kernel)`."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = self.convolve(x, kernel)
        return y if bias is None else y + bias

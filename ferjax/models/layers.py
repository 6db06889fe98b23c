"""Conv and max-pool layers chosen by `model.conv_impl`, with one parameter tree for all impls.

xla:  flax.linen.Conv / max_pool (XLA's own gradients; best on GPU/TPU).
fast: StoredInputConv (flax.linen.Conv reading a stored input; a single-channel input's forward
      as one GEMM, ferjax.models.ops.im2col.conv_general_dilated) / ferjax.models.ops.max_pool_2x2
      (a max-pool gradient several times faster than XLA's select_and_scatter on CPU); best on
      CPU when XLA's convolutions run on its Eigen kernels, which ferjax.runtime.platform
      arranges by default.
gemm: GemmConv / ferjax.models.ops.max_pool_2x2: the convolution's weight gradient as cache-sized
      im2col GEMMs; best on CPU when XLA's convolutions go through YNNPACK (jaxlib 0.10's
      default, i.e. with FERJAX_CPU_TUNING=0), whose weight gradients are far slower.
winograd: ferjax.models.winograd_conv.WinogradConv / ferjax.models.ops.max_pool_2x2: stride-1 3x3
      convolutions by Winograd F(m x m, 3 x 3) (2.25-4x fewer multiplies, as batched GEMMs; on
      layers of >= 128 input channels where the CPU has full-width AVX-512 units, >= 8
      elsewhere: winograd_conv.WINOGRAD_MIN_IN, read from /proc/cpuinfo by ferjax.runtime.cpu),
      strided and 1x1 layers with GEMM input gradients (ferjax.models.ops.im2col); on one CPU device
      faster than `fast` per train step for wide models (bench/README.md). Its batch loop
      (lax.map over chunks of images) would gather a batch-sharded input, so auto keeps `fast`
      on several devices.
All three CPU implementations (fast, gemm, winograd) also train the CNN's BatchNorm + ReLU + 2x2
max-pool blocks as one op (ferjax.models.ops.bn_relu_pool, same variables as nn.BatchNorm):
XLA's CPU backend otherwise makes several passes over the block's full-size activation.
auto: on CPU when XLA's convolutions are tuned (ferjax.runtime.platform.xla_cpu_convs_tuned()):
      winograd for a model whose widest 3x3 layer has >= WINOGRAD_MIN_WIDTH channels, on one
      device (on both CPUs measured, a half-width and a full-width AVX-512 unit, its steps were
      as fast as fast's or faster for such models: bench/README.md); otherwise fast. Untuned:
      gemm. Any other backend: xla. Winograd's programs take markedly longer to compile
      (bench/README.md), which a narrow model's steps do not win back: the demo CNN runs its
      steps no faster with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models.conv_base import ConvBase
from ferjax.models.ops import bn_relu_pool, conv2d, im2col, max_pool_2x2
from ferjax.models.ops.im2col import stored
from ferjax.models.winograd_conv import WinogradConv, winograd_min_in
from ferjax.runtime import platform
from ferjax.runtime.cpu import vector_class
from ferjax.runtime.registry import Registry

# model.conv_impl -> ConvImpl; "auto" picks one per platform (resolve_conv_impl).
CONV_IMPLS = Registry("model.conv_impl")
AUTO = "auto"
# auto picks winograd only for models this wide (cnn 64..512 and ResNet-18 gain per step; the
# demo CNN 32..128 gains nothing and compiles longer; bench/README.md).
WINOGRAD_MIN_WIDTH = 256


def resolve_conv_impl(
    impl: str, backend: str | None = None, devices: int | None = None, widest: int | None = None
) -> str:
    """'auto' -> 'winograd', 'fast' or 'gemm' on CPU (see the module docstring), 'xla' on any
    other backend; the others pass through. backend/devices default to JAX's; widest is the
    model's widest convolution (None: wide enough)."""
    if impl != AUTO:
        CONV_IMPLS.get(impl)  # rejects an unknown name
        return impl
    if (backend or jax.default_backend()) != "cpu":
        return "xla"
    if not platform.xla_cpu_convs_tuned():
        return "gemm"
    one_device = (devices or jax.device_count()) == 1
    wide = widest is None or widest >= WINOGRAD_MIN_WIDTH
    return "winograd" if one_device and wide else "fast"


def auto_choice(setting: str, model) -> str | None:
    """The run's log line for what conv_impl=auto chose for `model` (None when the setting was
    not auto or the model has no conv_impl), e.g. "layers: conv_impl=auto chose winograd
    (Winograd on 3x3 layers of >= 128 input channels: avx512-full CPU)"."""
    impl = getattr(model, "conv_impl", None)
    if setting != AUTO or impl is None:
        return None
    line = f"layers: conv_impl=auto chose {impl}"
    if impl != "winograd":
        return line
    return (
        f"{line} (Winograd on 3x3 layers of >= {winograd_min_in()} input channels: "
        f"{vector_class()} CPU)"
    )


class GemmConv(ConvBase):
    """Drop-in for nn.Conv (NHWC, HWIO 'kernel', optional 'bias', same init and dtype rules)
    whose weight gradient runs through ferjax.models.ops.conv2d."""

    def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return conv2d(x, kernel, tuple(self.strides), self.padding)


class StoredInputConv(nn.Conv):
    """nn.Conv that reads its input as a stored array (values and gradients are nn.Conv's).

    XLA's CPU weight gradient transposes the conv input to [Cin, H, W, B]. Left to itself XLA
    fuses the input's producer (BatchNorm + ReLU) into that transpose and recomputes it with
    strided reads, several times the cost of transposing the stored array
    (lax.optimization_barrier does not help: XLA's CPU pipeline removes it before fusion). The
    default CNN's train step is faster with it (bench/README.md)."""

    # A single-channel input's forward as one GEMM (the same values, faster on the CPU).
    conv_general_dilated: Any = im2col.conv_general_dilated

    def __call__(self, inputs):
        return super().__call__(stored(inputs))  # a no-op on several devices


@dataclasses.dataclass(frozen=True)
class ConvImpl:
    """A convolution module class (nn.Conv's constructor and parameter tree) and a 2x2/stride-2
    max-pool function x[B, H, W, C] -> [B, H//2, W//2, C]."""

    conv: type
    max_pool: Callable


def pool_max(x: jax.Array, window: int, strides: int, padding: Any = "VALID") -> jax.Array:
    """flax.linen.max_pool of x [B, H, W, C], square window; padding "VALID", "SAME" or
    ((top, bottom), (left, right)). Explicit padding is written as a -inf pad before a VALID
    pool, and the call uses keywords: the same values and gradients, in the form the ONNX
    exporter (jax2onnx, which replaces flax's max_pool while converting) translates."""
    if not isinstance(padding, str):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
        padding = "VALID"
    return nn.max_pool(
        x, window_shape=(window, window), strides=(strides, strides), padding=padding
    )


def _flax_max_pool(x: jax.Array) -> jax.Array:
    return pool_max(x, 2, 2)


CONV_IMPLS.register("xla", ConvImpl(nn.Conv, _flax_max_pool))
CONV_IMPLS.register("fast", ConvImpl(StoredInputConv, max_pool_2x2))
CONV_IMPLS.register("gemm", ConvImpl(GemmConv, max_pool_2x2))
CONV_IMPLS.register("winograd", ConvImpl(WinogradConv, max_pool_2x2))


def conv(
    impl: str,
    features: int,
    kernel: int,
    strides: int = 1,
    use_bias: bool = False,
    dtype: Any = jnp.float32,
    name: str | None = None,
    padding: Any = "SAME",
) -> nn.Module:
    """A square convolution module of implementation `impl` (CONV_IMPLS, or auto); padding
    "SAME" or ((top, bottom), (left, right))."""
    cls = CONV_IMPLS.get(resolve_conv_impl(impl)).conv
    return cls(
        features,
        (kernel, kernel),
        (strides, strides),
        padding=padding,
        use_bias=use_bias,
        dtype=dtype,
        name=name,
    )


def max_pool(impl: str, x: jax.Array) -> jax.Array:
    """2x2 / stride-2 max-pooling of x [B, H, W, C] -> [B, H//2, W//2, C]."""
    return CONV_IMPLS.get(resolve_conv_impl(impl)).max_pool(x)


def fused_bn_relu_pool(impl: str, shape: tuple[int, ...]) -> bool:
    """Whether the CNN trains BatchNorm + ReLU + 2x2 max-pooling of an activation of `shape`
    [B, H, W, C] as one op (ferjax.models.ops.bn_relu_pool): with every CPU implementation
    (fast, gemm, winograd), for even H and W. With `xla` (GPU/TPU) the block stays library ops,
    which XLA's GPU and TPU backends fuse well."""
    return resolve_conv_impl(impl) != "xla" and shape[1] % 2 == 0 and shape[2] % 2 == 0


class PooledBatchNormReLU(nn.Module):
    """Training-mode flax.linen.BatchNorm (float32, biased batch variance) + ReLU + 2x2 max-pool
    as one op (ferjax.models.ops.bn_relu_pool). Its variables are nn.BatchNorm's (params scale and
    bias, batch_stats mean and var, same shapes, initialisers and running-average update), so a
    model trains with it and evaluates with nn.BatchNorm, and checkpoints do not change.
    (Evaluation stays nn.BatchNorm + ReLU + pool: normalising on the pooled quarter made the
    demo CNN's forward 6% slower at batch 512, not faster; XLA fuses that forward well.)"""

    momentum: float = 0.99
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        y, mean, var = bn_relu_pool(x.astype(jnp.float32), scale, bias, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y

"""ResNet-18/34: basic blocks with widths 64/128/256/512 (times `width / 64`) and strides
1/2/2/2, global average pooling, dropout and a dense head.

Two stems, chosen by input size (`model.stem`, auto: imagenet from 96 px):
  small:    a 3x3 stride-1 convolution without max-pooling, for 48x48 faces (FER2013); convs
            padded SAME;
  imagenet: torchvision's 7x7 stride-2 convolution (padding 3) and 3x3 stride-2 max-pool
            (padding 1), with every 3x3 convolution padded by 1 as torchvision does, so that
            ImageNet weights of torchvision/timm load without an adapter (ferjax.models.weights).
Both share the parameter names (stem_conv, stem_bn, stage<s>_block<b>/..., head_out).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ferjax.models import layers


def _bn(train: bool, name: str | None = None, zero_init: bool = False):
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


STEMS = ("small", "imagenet")
TORCH_PAD = ((1, 1), (1, 1))


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    torch_padding: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        def conv(f, k, s, name):
            pad = TORCH_PAD if self.torch_padding and k == 3 else "SAME"
            return layers.conv(self.conv_impl, f, k, s, dtype=self.dtype, name=name, padding=pad)

        residual = x
        y = conv(self.features, 3, self.strides, "conv1")(x)
        y = nn.relu(_bn(train, "bn1")(y)).astype(self.dtype)
        y = conv(self.features, 3, 1, "conv2")(y)
        y = _bn(train, "bn2", zero_init=True)(y)
        if residual.shape != y.shape:
            residual = conv(self.features, 1, self.strides, "proj_conv")(residual)
            residual = _bn(train, "proj_bn")(residual)
        return nn.relu(y + residual).astype(self.dtype)


class ResNet(nn.Module):
    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    dropout: float = 0.3
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    stem: str = "small"

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x: float[B, H, W, C] normalised images. Returns float32 logits [B, num_classes]."""
        x = x.astype(self.dtype)
        imagenet = self.stem == "imagenet"
        if imagenet:
            x = layers.conv(self.conv_impl, self.width, 7, 2, dtype=self.dtype, name="stem_conv",
                            padding=((3, 3), (3, 3)))(x)  # fmt: skip
        else:
            x = layers.conv(self.conv_impl, self.width, 3, dtype=self.dtype, name="stem_conv")(x)
        x = nn.relu(_bn(train, "stem_bn")(x)).astype(self.dtype)
        if imagenet:
            x = layers.pool_max(x, 3, 2, padding=TORCH_PAD)
        for s, blocks in enumerate(self.stage_sizes):
            for b in range(blocks):
                strides = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(
                    self.width * 2**s,
                    strides,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                    torch_padding=imagenet,
                    name=f"stage{s + 1}_block{b + 1}",
                )(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head_out")(x).astype(jnp.float32)

"""A VGG-style network for 48x48 faces: stacks of 3x3 conv + BatchNorm + ReLU, max-pooling
between stages, dropout, and a dense head with dropout."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ferjax.models import layers


class ConvBNReLU(nn.Module):
    features: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool):
        x = layers.conv(self.conv_impl, self.features, 3, dtype=self.dtype, name="Conv_0")(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32
        )(x)
        return nn.relu(x).astype(self.dtype)


class FerCNN(nn.Module):
    """VGG-style FER network.

    stage_widths: output channels of each stage; each stage has `convs_per_stage` convs and is
    followed by 2x2 max-pooling and dropout at rate `conv_dropout`. conv_impl: xla | fast | auto
    (see ferjax.models.layers).
    """

    num_classes: int
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    convs_per_stage: int = 2
    hidden: int = 512
    dropout: float = 0.5
    conv_dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x: float[B, H, W, C] normalised images. Returns float32 logits [B, num_classes]."""
        x = x.astype(self.dtype)
        for s, width in enumerate(self.stage_widths):
            for c in range(self.convs_per_stage):
                x = ConvBNReLU(width, self.dtype, self.conv_impl, name=f"stage{s + 1}_conv{c + 1}")(
                    x, train
                )
            x = layers.max_pool(self.conv_impl, x)
            x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.hidden, dtype=self.dtype, name="head_dense")(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head_out")(x)
        return x.astype(jnp.float32)

"""A VGG-style network for faces of 48 to 224 px: stacks of 3x3 conv + BatchNorm + ReLU,
max-pooling between stages, dropout, and a dense head with dropout.

The head sees the same number of inputs at every input size: above 48 px the last feature map is
average-pooled to the side it has at 48 px (`head="auto"`). A flatten head over a 112 px input
has ~5x the inputs of one over 48 px (25,088 for 3 stages of up to 128 channels), and with
Flax's lecun_normal initialisation its first steps under Adam 1e-3 overshoot (the loss jumps
above ln K and the run ends near chance on some seeds); pooled, the recipe that learns at 48 px
learns at 112 and 224 as it is. At 48 px the pooling is the identity: nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models import layers

# BatchNorm's running-average momentum and epsilon, the same in both of ConvBNReLU's paths.
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


class ConvBNReLU(nn.Module):
    """3x3 conv + BatchNorm + ReLU, followed by 2x2 max-pooling when `pool`. In training, with a
    CPU layer implementation (ferjax.models.layers.fused_bn_relu_pool), BatchNorm + ReLU +
    pooling run as one op with the same variables (ferjax.models.layers.PooledBatchNormReLU)."""

    features: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    pool: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        x = layers.conv(self.conv_impl, self.features, 3, dtype=self.dtype, name="Conv_0")(x)
        if self.pool and train and layers.fused_bn_relu_pool(self.conv_impl, x.shape):
            bn = layers.PooledBatchNormReLU(BN_MOMENTUM, BN_EPSILON, name="BatchNorm_0")
            return bn(x).astype(self.dtype)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=jnp.float32,
        )(x)
        x = nn.relu(x).astype(self.dtype)
        return layers.max_pool(self.conv_impl, x) if self.pool else x


# The input side the head is sized for: larger inputs are pooled to its last feature map's side.
REFERENCE_SIDE = 48
HEADS = ("auto", "flatten")


def adaptive_avg_pool(x, side: int):
    """float[B, H, W, C] -> float[B, side, side, C]: the mean over each of side x side cells
    (an antialiased resize where H or W is not a multiple of side)."""
    b, h, w, c = x.shape
    if h % side == 0 and w % side == 0:
        return x.reshape(b, side, h // side, side, w // side, c).mean(axis=(2, 4))
    return jax.image.resize(x, (b, side, side, c), "linear", antialias=True)


class FerCNN(nn.Module):
    """VGG-style FER network.

    stage_widths: output channels of each stage; each stage has `convs_per_stage` convs and is
    followed by 2x2 max-pooling and dropout at rate `conv_dropout`. conv_impl: xla | fast | auto
    (see ferjax.models.layers). head: auto (the last feature map average-pooled to its 48 px
    side when larger) | flatten (flatten whatever the size).
    """

    num_classes: int
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    convs_per_stage: int = 2
    hidden: int = 512
    dropout: float = 0.5
    conv_dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "xla"
    head: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x: float[B, H, W, C] normalised images. Returns float32 logits [B, num_classes]."""
        x = x.astype(self.dtype)
        for s, width in enumerate(self.stage_widths):
            for c in range(self.convs_per_stage):
                last = c == self.convs_per_stage - 1  # the stage's pooling follows it
                name = f"stage{s + 1}_conv{c + 1}"
                x = ConvBNReLU(width, self.dtype, self.conv_impl, pool=last, name=name)(x, train)
            if not self.convs_per_stage:
                x = layers.max_pool(self.conv_impl, x)
            x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
        side = max(1, REFERENCE_SIDE >> len(self.stage_widths))
        if self.head == "auto" and (x.shape[1] > side or x.shape[2] > side):
            x = adaptive_avg_pool(x, side)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.hidden, dtype=self.dtype, name="head_dense")(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head_out")(x)
        return x.astype(jnp.float32)

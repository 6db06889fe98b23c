"""ImageNet architectures for transfer learning: VGG16 and ResNet-50 with the standard layer
structure (so Keras and PyTorch weights convert one-to-one), a FER head and a grayscale adapter.

Parameter tree: `backbone/...` (the ImageNet network without its classifier) and `head`
(global average pooling -> dropout -> dense). Backbone layer names:
  vgg16:    block{1..5}_conv{1..3} (the Keras layer names);
  resnet50: stem_conv, stem_bn, stage{1..4}_block{b}/{conv1,bn1,conv2,bn2,conv3,bn3,proj_conv,
            proj_bn} (stage s is Keras conv{s+1}_*, torch layer{s}.*).

ResNet-50 comes in two styles that differ in where the stride of a downsampling block sits:
  torch: stride on the 3x3 conv (torchvision/timm "v1.5"), BatchNorm epsilon 1e-5;
  keras: stride on the first 1x1 conv (original v1, keras.applications), epsilon 1.001e-5.
Keras convolutions carry a bias before every BatchNorm; the converter folds it into the
BatchNorm mean (exact: BN(x + b) with mean m equals BN(x) with mean m - b), so both styles share
one parameter tree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models.layers import pool_max

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
RESNET50_STAGES = (3, 4, 6, 3)
BN_EPSILON = {"torch": 1e-5, "keras": 1.001e-5}
STYLES = tuple(BN_EPSILON)  # ResNet-50 variants: where a downsampling block's stride sits
INPUT_ADAPTERS = ("sum_rgb", "replicate")
PAD1 = ((1, 1), (1, 1))


class VGG16(nn.Module):
    """The 13 conv layers of VGG16 (3x3, bias, ReLU; 2x2 max-pooling after each block).

    x: float[B, H, W, C] -> feature map float[B, H/32, W/32, 512].
    """

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        for b, (width, convs) in enumerate(VGG16_BLOCKS, start=1):
            for c in range(1, convs + 1):
                conv = nn.Conv(
                    width, (3, 3), padding=PAD1, dtype=self.dtype, name=f"block{b}_conv{c}"
                )
                x = nn.relu(conv(x))
            x = pool_max(x, 2, 2)
        return x


def _bn(train: bool, epsilon: float, name: str):
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=epsilon, dtype=jnp.float32, name=name
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) bottleneck with a projection shortcut when shapes change."""

    features: int
    strides: int = 1
    stride_on_3x3: bool = True
    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        s = (self.strides, self.strides)
        s1, s3 = ((1, 1), s) if self.stride_on_3x3 else (s, (1, 1))
        conv = lambda f, k, st, pad, name: nn.Conv(  # noqa: E731
            f, (k, k), st, padding=pad, use_bias=False, dtype=self.dtype, name=name
        )
        y = conv(self.features, 1, s1, "VALID", "conv1")(x)
        y = nn.relu(_bn(train, self.epsilon, "bn1")(y)).astype(self.dtype)
        y = conv(self.features, 3, s3, PAD1, "conv2")(y)
        y = nn.relu(_bn(train, self.epsilon, "bn2")(y)).astype(self.dtype)
        y = conv(self.features * 4, 1, (1, 1), "VALID", "conv3")(y)
        y = _bn(train, self.epsilon, "bn3")(y)
        if x.shape[-1] != self.features * 4 or self.strides != 1:
            x = conv(self.features * 4, 1, s, "VALID", "proj_conv")(x)
            x = _bn(train, self.epsilon, "proj_bn")(x)
        return nn.relu(y + x).astype(self.dtype)


class ResNet50(nn.Module):
    """ResNet-50 without its classifier. x: float[B, H, W, C] -> float[B, H/32, W/32, 2048]."""

    style: str = "torch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        eps = BN_EPSILON[self.style]
        x = nn.Conv(
            64,
            (7, 7),
            (2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            dtype=self.dtype,
            name="stem_conv",
        )(x)
        x = nn.relu(_bn(train, eps, "stem_bn")(x)).astype(self.dtype)
        x = pool_max(x, 3, 2, padding=PAD1)
        for s, blocks in enumerate(RESNET50_STAGES):
            for b in range(blocks):
                x = Bottleneck(
                    64 * 2**s,
                    strides=2 if s > 0 and b == 0 else 1,
                    stride_on_3x3=self.style == "torch",
                    epsilon=eps,
                    dtype=self.dtype,
                    name=f"stage{s + 1}_block{b + 1}",
                )(x, train)
        return x


class TransferNet(nn.Module):
    """Grayscale adapter -> ImageNet backbone -> global average pooling -> dropout -> dense.

    input_adapter: "replicate" copies the gray channel to RGB; "sum_rgb" feeds the single
    channel to a first conv whose kernel is the RGB kernel summed over its input channels
    (the same function, a third of the first layer's cost). input_size: images are resized
    (bilinear) to input_size x input_size before the backbone; 0 keeps their size.
    """

    backbone: nn.Module
    num_classes: int
    dropout: float = 0.5
    input_adapter: str = "sum_rgb"
    input_size: int = 0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x: float[B, H, W, 1] normalised images. Returns float32 logits [B, num_classes]."""
        x = x.astype(self.dtype)
        size = self.input_size
        if size and x.shape[1:3] != (size, size):
            x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
        if self.input_adapter == "replicate" and x.shape[-1] == 1:
            x = jnp.broadcast_to(x, (*x.shape[:3], 3))
        x = self.backbone(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x).astype(jnp.float32)

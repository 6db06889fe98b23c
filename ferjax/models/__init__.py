"""Model registry: `model.name` -> a Flax module built from the `model` config section.

A builder takes (model config, number of classes, activation dtype) and returns a linen module
whose `__call__(x float[B, H, W, C], train: bool)` returns float32 logits [B, K]. Adding a model
is one builder function and one `@MODELS.register("name")`.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ferjax.models.cnn import FerCNN
from ferjax.models.imagenet import STYLES, VGG16, ResNet50, TransferNet
from ferjax.models.layers import resolve_conv_impl
from ferjax.models.resnet import STEMS, ResNet
from ferjax.runtime.registry import Registry

MODELS = Registry("model.name")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _transfer(model: ml_collections.ConfigDict, num_classes: int, dtype, backbone):
    return TransferNet(
        backbone=backbone,
        num_classes=num_classes,
        dropout=model.dropout,
        input_adapter=model.input_adapter,
        input_size=model.input_size,
        dtype=dtype,
    )


def _resnet(model: ml_collections.ConfigDict, num_classes: int, dtype, stage_sizes) -> ResNet:
    if model.stem not in STEMS:
        raise ValueError(
            f"model.stem {model.stem!r} must be resolved to one of {STEMS} before building "
            "(ferjax.training.program.resolve_model_config)"
        )
    return ResNet(
        num_classes=num_classes,
        stage_sizes=stage_sizes,
        width=model.width,
        dropout=model.dropout,
        dtype=dtype,
        conv_impl=resolve_conv_impl(model.conv_impl, widest=8 * model.width),
        stem=model.stem,
    )


@MODELS.register("cnn")
def _cnn(model: ml_collections.ConfigDict, num_classes: int, dtype) -> FerCNN:
    widths = tuple(int(w) for w in str(model.cnn_widths).split(",") if w.strip())
    return FerCNN(
        num_classes=num_classes,
        stage_widths=widths,
        convs_per_stage=model.cnn_convs_per_stage,
        hidden=model.cnn_hidden,
        dropout=model.dropout,
        conv_dropout=model.conv_dropout,
        dtype=dtype,
        conv_impl=resolve_conv_impl(model.conv_impl, widest=max(widths, default=0)),
        head=model.cnn_head,
    )


@MODELS.register("resnet18")
def _resnet18(model: ml_collections.ConfigDict, num_classes: int, dtype) -> ResNet:
    return _resnet(model, num_classes, dtype, (2, 2, 2, 2))


@MODELS.register("resnet34")
def _resnet34(model: ml_collections.ConfigDict, num_classes: int, dtype) -> ResNet:
    return _resnet(model, num_classes, dtype, (3, 4, 6, 3))


@MODELS.register("vgg16")
def _vgg16(model: ml_collections.ConfigDict, num_classes: int, dtype) -> TransferNet:
    return _transfer(model, num_classes, dtype, VGG16(dtype=dtype))


@MODELS.register("resnet50")
def _resnet50(model: ml_collections.ConfigDict, num_classes: int, dtype) -> TransferNet:
    if model.style not in STYLES:
        raise ValueError(
            f"model.style {model.style!r} must be resolved to one of {STYLES} before building "
            "(ferjax.training.transfer.resolve_style)"
        )
    return _transfer(model, num_classes, dtype, ResNet50(style=model.style, dtype=dtype))


def create_model(config: ml_collections.ConfigDict, num_classes: int):
    """Builds the Flax module named by `config.model.name` (model.style and model.stem already
    resolved: ferjax.training.program.resolve_model_config)."""
    return MODELS.get(config.model.name)(config.model, num_classes, DTYPES[config.train.dtype])

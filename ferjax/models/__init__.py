"""Model registry: `model.name` -> a Flax module built from the config."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from ferjax.models.cnn import FerCNN
from ferjax.models.imagenet import VGG16, ResNet50, TransferNet
from ferjax.models.layers import resolve_conv_impl
from ferjax.models.resnet import ResNet

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _widths(config) -> tuple[int, ...]:
    return tuple(int(w) for w in str(config.model.cnn_widths).split(",") if w.strip())


def _transfer(config, num_classes: int, dtype, backbone):
    return TransferNet(
        backbone=backbone,
        num_classes=num_classes,
        dropout=config.model.dropout,
        input_adapter=config.model.input_adapter,
        input_size=config.model.input_size,
        dtype=dtype,
    )


def _resnet_style(config) -> str:
    from ferjax.transfer import resnet_style

    return resnet_style(config)


def _resnet(config, num_classes: int, dtype, stage_sizes) -> ResNet:
    return ResNet(
        num_classes=num_classes,
        stage_sizes=stage_sizes,
        width=config.model.width,
        dropout=config.model.dropout,
        dtype=dtype,
        conv_impl=resolve_conv_impl(config.model.conv_impl),
    )


MODELS: dict[str, Callable] = {
    "cnn": lambda c, k, dt: FerCNN(
        num_classes=k,
        stage_widths=_widths(c),
        convs_per_stage=c.model.cnn_convs_per_stage,
        hidden=c.model.cnn_hidden,
        dropout=c.model.dropout,
        conv_dropout=c.model.conv_dropout,
        dtype=dt,
        conv_impl=resolve_conv_impl(c.model.conv_impl),
    ),
    "resnet18": lambda c, k, dt: _resnet(c, k, dt, (2, 2, 2, 2)),
    "resnet34": lambda c, k, dt: _resnet(c, k, dt, (3, 4, 6, 3)),
    "vgg16": lambda c, k, dt: _transfer(c, k, dt, VGG16(dtype=dt)),
    "resnet50": lambda c, k, dt: _transfer(c, k, dt, ResNet50(style=_resnet_style(c), dtype=dt)),
}


def create_model(config: ml_collections.ConfigDict, num_classes: int):
    """Builds the Flax module named by `config.model.name`."""
    return MODELS[config.model.name](config, num_classes, _DTYPES[config.train.dtype])

"""Validation of a config before anything is loaded or compiled: one clear line per mistake."""

from __future__ import annotations

import ml_collections

from ferjax.errors import ConfigError

CHOICES = {
    "data.name": ("synthetic", "fer2013", "ferplus", "folder", "tfds"),
    "data.on_error": ("raise", "skip"),
    "data.normalize": ("dataset", "unit", "symmetric"),
    "model.conv_impl": ("auto", "xla", "fast"),
    "optim.name": ("sgd", "adamw", "adam"),
    "optim.schedule": ("cosine", "step", "constant"),
    "train.dtype": ("float32", "bfloat16", "float16"),
    "train.best_metric": ("accuracy", "balanced_accuracy", "macro_f1", "loss"),
    "sampling.method": ("none", "random", "smote", "adasyn", "class_weight"),
    "eval.tta": ("none", "flip"),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _check(cond: bool, key: str, value, expected: str) -> None:
    if not cond:
        raise ConfigError(f"config.{key}: got {value!r}, expected {expected}")


def validate(config: ml_collections.ConfigDict, device_count: int = 1) -> None:
    """Raises ConfigError naming the first invalid key."""
    from ferjax.augment import parse_ops
    from ferjax.models import MODELS

    for key, choices in CHOICES.items():
        value = _get(config, key)
        _check(value in choices, key, value, "one of " + ", ".join(choices))
    _check(
        config.model.name in MODELS, "model.name", config.model.name, "one of " + ", ".join(MODELS)
    )
    positive = (
        "optim.learning_rate",
        "train.batch_size",
        "train.num_epochs",
        "train.log_every_steps",
        "train.eval_batch_size",
        "model.width",
        "model.cnn_hidden",
        "model.cnn_convs_per_stage",
        "sampling.k_neighbors",
    )
    for key in positive:
        value = _get(config, key)
        _check(value > 0, key, value, "a positive number")
    non_negative = (
        "optim.weight_decay",
        "optim.warmup_epochs",
        "optim.grad_clip_norm",
        "data.subset",
        "train.checkpoint_every_steps",
        "train.halt_after_steps",
    )
    for key in non_negative:
        value = _get(config, key)
        _check(value >= 0, key, value, "a number >= 0")
    for key in ("model.dropout", "model.conv_dropout", "train.label_smoothing", "optim.momentum"):
        value = _get(config, key)
        _check(0 <= value < 1, key, value, "a number in [0, 1)")
    widths = str(config.model.cnn_widths).split(",")
    _check(
        all(w.strip().isdigit() and int(w) > 0 for w in widths),
        "model.cnn_widths",
        config.model.cnn_widths,
        "comma-separated positive integers such as 64,128,256",
    )
    try:
        [float(e) for e in str(config.optim.step_epochs).split(",") if e.strip()]
    except ValueError:
        _check(
            False,
            "optim.step_epochs",
            config.optim.step_epochs,
            "comma-separated epochs such as 60,90",
        )
    if config.data.name != "synthetic":
        _check(
            bool(config.data.path),
            "data.path",
            config.data.path,
            f"the path of the {config.data.name} data",
        )
    _check(
        config.train.batch_size % device_count == 0,
        "train.batch_size",
        config.train.batch_size,
        f"a multiple of the device count ({device_count})",
    )
    parse_ops(config.augment.ops)

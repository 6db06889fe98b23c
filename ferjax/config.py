"""Validation of a config before anything is loaded or compiled: one clear line per mistake."""

from __future__ import annotations

import ml_collections

from ferjax.errors import ConfigError

CHOICES = {
    "data.name": ("synthetic", "fer2013", "ferplus", "folder", "tfds"),
    "data.on_error": ("raise", "skip"),
    "data.normalize": ("dataset", "per_image", "unit", "symmetric"),
    "data.ferplus_mode": ("majority", "probability"),
    "data.tfds_config": ("fer2013", "ferplus"),
    "model.conv_impl": ("auto", "xla", "fast", "gemm"),
    "optim.name": ("sgd", "adamw", "adam"),
    "optim.schedule": ("cosine", "step", "constant"),
    "train.dtype": ("float32", "bfloat16", "float16"),
    "train.best_metric": ("accuracy", "balanced_accuracy", "macro_f1", "loss"),
    "sampling.method": ("none", "random", "smote", "adasyn", "class_weight"),
    "eval.tta": ("none", "flip", "ten_crop"),
    "data.placement": ("auto", "device", "stream"),
    "train.on_nan": ("stop", "rollback"),
    "sampling.features": ("pixels", "pca"),
    "model.input_adapter": ("sum_rgb", "replicate"),
    "model.style": ("auto", "torch", "keras"),
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
        "data.image_size",
        "sampling.pca_components",
        "optim.backbone_lr_scale",
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
        "data.clean.blank_std",
        "model.input_size",
        "train.unfreeze_at_epoch",
    )
    for key in non_negative:
        value = _get(config, key)
        _check(value >= 0, key, value, "a number >= 0")
    _check(
        config.train.verbosity in (0, 1, 2),
        "train.verbosity",
        config.train.verbosity,
        "0 (quiet), 1 (default) or 2 (verbose)",
    )
    _check(
        config.train.progress_seconds > 0,
        "train.progress_seconds",
        config.train.progress_seconds,
        "a positive number of seconds",
    )
    _check(
        0 < config.train.nan_lr_factor <= 1,
        "train.nan_lr_factor",
        config.train.nan_lr_factor,
        "a number in (0, 1]",
    )
    for key in ("model.dropout", "model.conv_dropout", "train.label_smoothing", "optim.momentum"):
        value = _get(config, key)
        _check(0 <= value < 1, key, value, "a number in [0, 1)")
    _check(
        0 < config.data.val_fraction < 1,
        "data.val_fraction",
        config.data.val_fraction,
        "a number in (0, 1)",
    )
    _check(
        0 <= config.data.clean.near_hamming <= 128,
        "data.clean.near_hamming",
        config.data.clean.near_hamming,
        "an integer in 0..128",
    )
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
    _validate_transfer(config)


def _validate_transfer(config: ml_collections.ConfigDict) -> None:
    import os

    from ferjax.transfer import parse_patterns

    model = config.model
    patterns = parse_patterns(model.freeze)
    _check(
        bool(patterns) or config.train.unfreeze_at_epoch == 0,
        "train.unfreeze_at_epoch",
        config.train.unfreeze_at_epoch,
        "0 when model.freeze is empty (nothing to unfreeze)",
    )
    _check(
        not model.init_from or os.path.exists(model.init_from),
        "model.init_from",
        model.init_from,
        "an existing weight file, converted file or ferjax workdir",
    )


# Files and folders a ferjax run writes into its workdir.
WORKDIR_MARKERS = (
    "config.json",
    "checkpoints",
    "metrics.jsonl",
    "data_report.json",
    "model_info.json",
    "report.json",
)


def check_workdir(workdir: str) -> None:
    """A workdir must be new, empty, or a ferjax run's (never another project's folder)."""
    import os

    if not workdir:
        raise ConfigError("--workdir: empty, expected a directory for checkpoints and reports")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} is a file, expected a directory")
    if os.path.isdir(workdir):
        entries = os.listdir(workdir)
        if entries and not any(m in entries for m in WORKDIR_MARKERS):
            raise ConfigError(
                f"--workdir: {workdir} holds files that are not from a ferjax run "
                f"(e.g. {sorted(entries)[0]!r}); use a new or empty directory"
            )

"""Config validation before anything is loaded or compiled: one clear line per mistake.

Every choice a key accepts comes from the registry or constant next to the code that uses it
(CHOICES below), never from a second list here.
"""

from __future__ import annotations

import os

import ml_collections

from ferjax.data.augment import parse_ops
from ferjax.data.input import PLACEMENTS
from ferjax.data.neighbours import FEATURES
from ferjax.data.preprocess import NORMALIZATIONS
from ferjax.data.sampling import SAMPLERS
from ferjax.data.sources.ferplus import MODES as FERPLUS_MODES
from ferjax.data.sources.formats import FORMATS, TFDS_CONFIGS
from ferjax.data.sources.rows import ON_ERROR
from ferjax.evaluation.predict import BEST_METRICS
from ferjax.evaluation.tta import TTA_MODES
from ferjax.models import DTYPES, MODELS
from ferjax.models.cnn import HEADS
from ferjax.models.imagenet import INPUT_ADAPTERS, STYLES
from ferjax.models.layers import AUTO, CONV_IMPLS
from ferjax.models.resnet import STEMS
from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import did_you_mean
from ferjax.training.checkpoint import flatten
from ferjax.training.losses import LOSSES
from ferjax.training.optim import OPTIMIZERS, SCHEDULES
from ferjax.training.step import ON_NAN
from ferjax.training.transfer import parse_patterns

CHOICES = {
    "data.name": FORMATS.names(),
    "data.on_error": ON_ERROR,
    "data.normalize": NORMALIZATIONS.names(),
    "data.ferplus_mode": FERPLUS_MODES,
    "data.tfds_config": TFDS_CONFIGS,
    "data.placement": PLACEMENTS,
    "data.channels": (1, 3),
    "data.affectnet_classes": (7, 8),
    "model.name": MODELS.names(),
    "model.conv_impl": (AUTO, *CONV_IMPLS.names()),
    "model.input_adapter": INPUT_ADAPTERS,
    "model.style": ("auto", *STYLES),
    "model.stem": ("auto", *STEMS),
    "model.cnn_head": HEADS,
    "optim.name": OPTIMIZERS.names(),
    "optim.schedule": SCHEDULES.names(),
    "train.dtype": tuple(DTYPES),
    "train.best_metric": BEST_METRICS,
    "train.on_nan": ON_NAN,
    "sampling.method": SAMPLERS.names(),
    "sampling.features": FEATURES,
    "eval.tta": TTA_MODES.names(),
    "loss.name": LOSSES.names(),
}

POSITIVE = (
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
NON_NEGATIVE = (
    "optim.weight_decay",
    "optim.warmup_epochs",
    "optim.grad_clip_norm",
    "data.subset",
    "data.workers",
    "train.checkpoint_every_steps",
    "train.halt_after_steps",
    "data.clean.blank_std",
    "model.input_size",
    "train.unfreeze_at_epoch",
    "train.patience",
    "optim.sam_rho",
    "eval.memory_budget_mb",
    "loss.gamma",
    "loss.tau",
    "loss.max_margin",
)
FRACTIONS = (
    "model.dropout",
    "model.conv_dropout",
    "train.label_smoothing",
    "optim.momentum",
    "train.ema_decay",
    "loss.beta",
)


def flat_keys(config: ml_collections.ConfigDict) -> list[str]:
    """Every dotted key of a config ("train.batch_size", ...)."""
    return list(flatten(config.to_dict()))


def get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _check(cond: bool, key: str, value, expected: str) -> None:
    if not cond:
        raise ConfigError(f"config.{key}: got {value!r}, expected {expected}")


def validate(config: ml_collections.ConfigDict, device_count: int = 1) -> None:
    """Raises ConfigError naming the first invalid key."""
    for key, choices in CHOICES.items():
        value = get(config, key)
        if value not in choices:
            raise ConfigError(
                f"config.{key}: got {value!r}, expected one of "
                + ", ".join(str(c) for c in choices)
                + did_you_mean(value, choices)
            )
    for key in POSITIVE:
        _check(get(config, key) > 0, key, get(config, key), "a positive number")
    for key in NON_NEGATIVE:
        _check(get(config, key) >= 0, key, get(config, key), "a number >= 0")
    for key in FRACTIONS:
        _check(0 <= get(config, key) < 1, key, get(config, key), "a number in [0, 1)")
    train, data = config.train, config.data
    _check(
        train.verbosity in (0, 1, 2),
        "train.verbosity",
        train.verbosity,
        "0 (quiet), 1 (default) or 2 (verbose)",
    )
    _check(
        train.progress_seconds > 0,
        "train.progress_seconds",
        train.progress_seconds,
        "a positive number of seconds",
    )
    _check(
        0 < train.nan_lr_factor <= 1,
        "train.nan_lr_factor",
        train.nan_lr_factor,
        "a number in (0, 1]",
    )
    _check(0 < data.val_fraction < 1, "data.val_fraction", data.val_fraction, "a number in (0, 1)")
    _check(16 <= data.image_size <= 512, "data.image_size", data.image_size, "a side in 16..512")
    _check(
        0 <= data.clean.near_hamming <= 128,
        "data.clean.near_hamming",
        data.clean.near_hamming,
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
    if data.name != "synthetic":
        _check(bool(data.path), "data.path", data.path, f"the path of the {data.name} data")
    _check(
        train.batch_size % device_count == 0,
        "train.batch_size",
        train.batch_size,
        f"a multiple of the device count ({device_count})",
    )
    parse_ops(config.augment.ops)
    _validate_transfer(config)
    _validate_imbalance(config)


# Losses that correct the class prior themselves (post-hoc adjustment on top would correct twice).
PRIOR_ADJUSTING = ("logit_adjusted", "balanced_softmax")
# Losses that weight or margin classes by their counts.
COUNT_BASED = ("class_balanced", "ldam", *PRIOR_ADJUSTING)


def _validate_imbalance(config: ml_collections.ConfigDict) -> None:
    """The loss, its sampler and post-hoc adjustment: combinations that cannot work are
    refused before anything is loaded."""
    loss, method = config.loss.name, config.sampling.method
    tau = str(config.eval.logit_adjust_tau).strip().lower()
    try:
        tau_value = 0.0 if tau == "auto" else float(tau)
    except ValueError:
        tau_value = -1.0
    _check(
        tau == "auto" or tau_value >= 0,
        "eval.logit_adjust_tau",
        config.eval.logit_adjust_tau,
        "auto or a number >= 0 (0 = off)",
    )
    _check(config.loss.scale > 0, "loss.scale", config.loss.scale, "a positive number")
    _check(
        config.loss.drw_epoch >= -1,
        "loss.drw_epoch",
        config.loss.drw_epoch,
        "an epoch >= 0 (0: off, ldam: 0.8 x the epochs) or -1 (never)",
    )
    if loss in COUNT_BASED and method == "class_weight":
        raise ConfigError(
            f"config.loss.name: {loss} corrects for the class counts, which "
            "sampling.method=class_weight already equalises (the loss would see a uniform "
            "prior); use one of them"
        )
    if loss in PRIOR_ADJUSTING and (tau == "auto" or tau_value > 0):
        raise ConfigError(
            f"config.eval.logit_adjust_tau: {config.eval.logit_adjust_tau} adjusts the prior "
            f"after training, which loss.name={loss} already did in training; set it to 0"
        )


def _validate_transfer(config: ml_collections.ConfigDict) -> None:
    model = config.model
    _check(
        bool(parse_patterns(str(model.freeze))) or config.train.unfreeze_at_epoch == 0,
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

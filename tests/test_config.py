"""ferjax.config: the imbalance settings are checked before anything is loaded, in one line."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from ferjax.config.validate import validate
from ferjax.runtime.errors import ConfigError


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"loss__name": "focall"},
            "config.loss.name: got 'focall', expected one of cross_entropy, focal, "
            "class_balanced, logit_adjusted, balanced_softmax, ldam; did you mean 'focal'?",
        ),
        (
            {"loss__name": "logit_adjusted", "sampling__method": "class_weight"},
            "config.loss.name: logit_adjusted corrects for the class counts, which "
            "sampling.method=class_weight already equalises (the loss would see a uniform "
            "prior); use one of them",
        ),
        (
            {"loss__name": "balanced_softmax", "eval__logit_adjust_tau": "auto"},
            "config.eval.logit_adjust_tau: auto adjusts the prior after training, which "
            "loss.name=balanced_softmax already did in training; set it to 0",
        ),
        (
            {"eval__logit_adjust_tau": "much"},
            "config.eval.logit_adjust_tau: got 'much', expected auto or a number >= 0 (0 = off)",
        ),
        ({"train__ema_decay": 1.0}, "config.train.ema_decay: got 1.0, expected a number in [0, 1)"),
        ({"optim__sam_rho": -0.1}, "config.optim.sam_rho: got -0.1, expected a number >= 0"),
        ({"train__patience": -1}, "config.train.patience: got -1, expected a number >= 0"),
        ({"loss__scale": 0.0}, "config.loss.scale: got 0.0, expected a positive number"),
        (
            {"model__cnn_head": "gap"},
            "config.model.cnn_head: got 'gap', expected one of auto, flatten",
        ),
    ],
)
def test_bad_imbalance_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(**overrides))
    assert str(e.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss__name": "ldam", "sampling__method": "smote"},
        {"loss__name": "focal", "sampling__method": "class_weight", "train__label_smoothing": 0.1},
        {"eval__logit_adjust_tau": "auto", "sampling__method": "random"},
        {"loss__name": "class_balanced", "augment__ops": "flip|mixup(alpha=0.2)"},
        {"train__ema_decay": 0.999, "optim__sam_rho": 0.05, "train__patience": 5},
    ],
)
def test_workable_combinations_pass(overrides):
    validate(tiny_config(**overrides))

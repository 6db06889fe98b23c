"""Optimisers (`optim.name`) and learning-rate schedules (`optim.schedule`), each registered once.

An optimiser entry turns the `optim` config, a schedule and the weight-decay mask into a list of
optax transformations; a schedule entry turns the `optim` config and the step counts into an
optax schedule. `make_optimizer` chains them (gradient clipping first) and, with `model.freeze`,
routes the frozen parameter groups through `transfer.freezing_optimizer`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import ml_collections
import optax

from ferjax.runtime.registry import Registry
from ferjax.training import transfer

OPTIMIZERS = Registry("optim.name")
SCHEDULES = Registry("optim.schedule")


def decay_mask(params, decay_norm_and_bias: bool):
    """True for the leaves that get weight decay: conv/dense kernels (and, optionally, all)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: decay_norm_and_bias or getattr(path[-1], "key", None) == "kernel", params
    )


# ------------------------------------------------------------------------------- optimisers


@OPTIMIZERS.register("sgd")
def _sgd(optim: ml_collections.ConfigDict, schedule, mask) -> list:
    """SGD with momentum (Nesterov by default); weight decay as L2 added to the gradient."""
    parts = []
    if optim.weight_decay > 0:
        parts.append(optax.add_decayed_weights(optim.weight_decay, mask))
    parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
    return parts


@OPTIMIZERS.register("adamw")
def _adamw(optim: ml_collections.ConfigDict, schedule, mask) -> list:
    """Adam with decoupled weight decay."""
    return [optax.adamw(schedule, optim.b1, optim.b2, weight_decay=optim.weight_decay, mask=mask)]


@OPTIMIZERS.register("adam")
def _adam(optim: ml_collections.ConfigDict, schedule, mask) -> list:
    """Adam; weight decay as L2 added to the gradient."""
    parts = []
    if optim.weight_decay > 0:
        parts.append(optax.add_decayed_weights(optim.weight_decay, mask))
    parts.append(optax.adam(schedule, optim.b1, optim.b2))
    return parts


# ------------------------------------------------------------------------------- schedules


def _after_warmup(after, peak: float, warmup: int):
    """A linear warm-up from 0 to `peak` over `warmup` steps, then `after`."""
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


@SCHEDULES.register("cosine")
def _cosine(optim, peak: float, warmup: int, total: int, steps_per_epoch: int):
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)


@SCHEDULES.register("constant")
def _constant(optim, peak: float, warmup: int, total: int, steps_per_epoch: int):
    return _after_warmup(optax.constant_schedule(peak), peak, warmup)


@SCHEDULES.register("step")
def _step(optim, peak: float, warmup: int, total: int, steps_per_epoch: int):
    """Multiplied by optim.step_factor at each epoch of optim.step_epochs."""
    epochs = [float(e) for e in str(optim.step_epochs).split(",") if e.strip()]
    boundaries = {int(e * steps_per_epoch) - warmup: optim.step_factor for e in epochs}
    return _after_warmup(optax.piecewise_constant_schedule(peak, boundaries), peak, warmup)


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
    """The learning rate per step: `optim.warmup_epochs` of linear warm-up, then the schedule."""
    total = max(num_epochs * steps_per_epoch, 1)
    # Warm-up is capped so that at least one step follows it (short test runs).
    warmup = min(int(round(optim.warmup_epochs * steps_per_epoch)), total - 1)
    return SCHEDULES.get(optim.schedule)(optim, optim.learning_rate, warmup, total, steps_per_epoch)


# ------------------------------------------------------------------------------- the optimiser


def base_optimizer(optim: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    """Gradient clipping (optim.grad_clip_norm > 0), then the OPTIMIZERS entry."""
    mask = functools.partial(decay_mask, decay_norm_and_bias=optim.decay_norm_and_bias)
    parts = []
    if optim.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    parts += OPTIMIZERS.get(optim.name)(optim, schedule, mask)
    return optax.chain(*parts)


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, Callable]:
    """(tx, schedule). With model.freeze, tx routes the frozen groups through
    transfer.freezing_optimizer (zero updates until train.unfreeze_at_epoch)."""
    schedule = make_schedule(config.optim, steps_per_epoch, config.train.num_epochs)
    make_tx = functools.partial(base_optimizer, config.optim)
    if transfer.freeze_patterns(config):
        return transfer.freezing_optimizer(config, make_tx, schedule, steps_per_epoch), schedule
    return make_tx(schedule), schedule

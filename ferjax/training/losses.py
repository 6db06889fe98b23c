"""Training losses (`loss.name`) for class-imbalanced data, each registered once.

Resampling (`sampling.method`) changes which examples the network sees; these losses instead
correct the classifier's bias towards frequent classes directly in the objective, from the
training class prior or counts, and leave the data stream as it is: focal down-weights easy
examples, class_balanced weights each class by its effective number of samples, logit_adjusted and
balanced_softmax add the log prior to the logits so that the softmax learns the balanced
posterior, and ldam enlarges the margin of rare classes (with deferred re-weighting once
`ctx.drw` is on). Only ldam applies deferred re-weighting here; the train step handles it for the
other losses.

Shapes: logits float32[B, K]; targets float32[B, K], soft (rows of probabilities that sum to 1,
e.g. after label smoothing or mixup; one-hot is the special case); each loss returns the
per-example float32[B], which the step weights and reduces. Every loss is pure jax.numpy and
jittable: the only traced value it branches on (`ctx.drw`) goes through `jnp.where`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import Registry

# loss.name -> fn(logits float32[B, K], targets float32[B, K], ctx: LossContext) -> float32[B].
LOSSES = Registry("loss.name")

# The losses that read `ctx.prior` or `ctx.counts` (the training split's class distribution).
LOSS_NEEDS_PRIOR = {"logit_adjusted", "balanced_softmax", "ldam", "class_balanced"}

PRIOR_FLOOR = 1e-12  # log(prior) of an empty class: a large negative adjustment, never -inf


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class LossContext:
    """What a loss may need besides logits and targets. prior: float32[K] training class prior
    (sums to 1); counts: float32[K] training records per class; drw: a traced bool scalar
    (deferred re-weighting on)."""

    prior: jax.Array | np.ndarray
    counts: jax.Array | np.ndarray
    drw: jax.Array | bool
    gamma: float = 2.0
    beta: float = 0.9999
    tau: float = 1.0
    max_margin: float = 0.5
    scale: float = 1.0

    def __post_init__(self):
        # Hyper-parameters given as Python numbers are checked here; traced ones are not.
        checks = (
            ("gamma", lambda v: v >= 0, ">= 0"),
            ("beta", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("tau", lambda v: math.isfinite(v), "finite"),
            ("max_margin", lambda v: v >= 0, ">= 0"),
            ("scale", lambda v: v > 0, "> 0"),
        )
        for field, ok, expected in checks:
            value = getattr(self, field)
            if _number(value) and not (math.isfinite(float(value)) and ok(float(value))):
                raise ConfigError(f"loss.{field}: got {value!r}, expected {expected}")


def _log_softmax(logits) -> jax.Array:
    return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)


def _soft_cross_entropy(logits, targets) -> jax.Array:
    """-sum_k t_k log softmax(z)_k, float32[B] (optax's, as the trainer always used)."""
    return optax.softmax_cross_entropy(
        jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)
    )


def _log_prior(prior) -> jax.Array:
    return jnp.log(jnp.maximum(jnp.asarray(prior, jnp.float32), PRIOR_FLOOR))


def class_balanced_weights(counts, beta) -> jax.Array:
    """float32[K]: Cui et al. (2019) weights (1 - beta) / (1 - beta^n_c), scaled to mean 1 over
    the K classes; a class with no records gets weight 0."""
    if _number(beta) and not 0 <= float(beta) < 1:
        raise ConfigError(f"loss.beta: got {beta!r}, expected in [0, 1)")
    counts = jnp.asarray(counts, jnp.float32)
    present = counts > 0
    # log(beta) in float64 when beta is a number (beta = 0.9999 is not exact in float32);
    # 1 - beta^n = -expm1(n log beta); the constant (1 - beta) cancels in the scaling.
    if _number(beta):
        with np.errstate(divide="ignore"):  # beta = 0: log 0 = -inf, every weight 1
            log_beta = jnp.asarray(np.log(np.float64(beta)), jnp.float32)
    else:
        log_beta = jnp.log(jnp.asarray(beta, jnp.float32))
    effective = -jnp.expm1(jnp.where(present, counts, 1.0) * log_beta)
    w = jnp.where(present, 1.0 / jnp.maximum(effective, jnp.finfo(jnp.float32).tiny), 0.0)
    return w * counts.shape[-1] / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


def ldam_margins(counts, max_margin) -> jax.Array:
    """float32[K]: Cao et al. (2019) margins proportional to n_c^(-1/4), the largest equal to
    `max_margin`; a class with no records gets margin 0 (it only appears in soft targets)."""
    counts = jnp.asarray(counts, jnp.float32)
    present = counts > 0
    m = jnp.where(present, jnp.where(present, counts, 1.0) ** -0.25, 0.0)
    return m * (max_margin / jnp.maximum(jnp.max(m), jnp.finfo(jnp.float32).tiny))


# ------------------------------------------------------------------------------------ losses


@LOSSES.register("cross_entropy")
def cross_entropy(logits, targets, ctx: LossContext) -> jax.Array:
    """-sum_k t_k log p_k."""
    return _soft_cross_entropy(logits, targets)


@LOSSES.register("focal")
def focal(logits, targets, ctx: LossContext) -> jax.Array:
    """Lin et al. (2017): -sum_k t_k (1 - p_k)^gamma log p_k; gamma = 0 is cross_entropy."""
    log_p = _log_softmax(logits)
    one_minus_p = -jnp.expm1(log_p)  # 1 - p, accurate when p is close to 1
    modulating = jnp.power(jnp.maximum(one_minus_p, 0.0), ctx.gamma)
    return -jnp.sum(jnp.asarray(targets, jnp.float32) * modulating * log_p, axis=-1)


@LOSSES.register("class_balanced")
def class_balanced(logits, targets, ctx: LossContext) -> jax.Array:
    """Cui et al. (2019): (sum_k t_k w_k) * cross_entropy, w = class_balanced_weights."""
    targets = jnp.asarray(targets, jnp.float32)
    weight = targets @ class_balanced_weights(ctx.counts, ctx.beta)
    return weight * _soft_cross_entropy(logits, targets)


@LOSSES.register("logit_adjusted")
def logit_adjusted(logits, targets, ctx: LossContext) -> jax.Array:
    """Menon et al. (2021): cross_entropy of z + tau log prior."""
    adjusted = jnp.asarray(logits, jnp.float32) + ctx.tau * _log_prior(ctx.prior)
    return _soft_cross_entropy(adjusted, targets)


@LOSSES.register("balanced_softmax")
def balanced_softmax(logits, targets, ctx: LossContext) -> jax.Array:
    """Ren et al. (2020): cross_entropy of z + log prior (logit_adjusted with tau = 1)."""
    adjusted = jnp.asarray(logits, jnp.float32) + _log_prior(ctx.prior)
    return _soft_cross_entropy(adjusted, targets)


@LOSSES.register("ldam")
def ldam(logits, targets, ctx: LossContext) -> jax.Array:
    """Cao et al. (2019): cross_entropy of scale * (z - t * m), m = ldam_margins; once ctx.drw
    is on, times the class-balanced weight sum_k t_k w_k (deferred re-weighting)."""
    targets = jnp.asarray(targets, jnp.float32)
    margins = ldam_margins(ctx.counts, ctx.max_margin)
    adjusted = ctx.scale * (jnp.asarray(logits, jnp.float32) - targets * margins)
    loss = _soft_cross_entropy(adjusted, targets)
    weight = jnp.where(ctx.drw, targets @ class_balanced_weights(ctx.counts, ctx.beta), 1.0)
    return weight * loss


# ------------------------------------------------------------------------------------- entry


def per_example_loss(name: str, logits, targets, ctx: LossContext) -> jax.Array:
    """float32[B]: the loss `name` (LOSSES) of logits float32[B, K] against soft targets
    float32[B, K] (rows sum to 1)."""
    return LOSSES.get(name)(logits, targets, ctx)


def check_loss(name: str, soft_targets: bool) -> None:
    """A ConfigError (one line, with the closest name) when `name` is not a registered loss.

    `soft_targets` (label smoothing or mixup on) is accepted for the config check: every loss
    here is defined for soft targets, so it rules nothing out at present."""
    LOSSES.get(name)

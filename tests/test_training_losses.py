"""ferjax.training.losses against independent NumPy evaluations of each formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.runtime.errors import ConfigError
from ferjax.training.losses import (
    LOSS_NEEDS_PRIOR,
    LOSSES,
    LossContext,
    check_loss,
    class_balanced_weights,
    per_example_loss,
)

B, K = 6, 7
COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965], np.float64)  # FER2013 train
PRIOR = COUNTS / COUNTS.sum()
RTOL = 1e-5
# float32 absolute error of a log-sum-exp over ldam's scaled logits (|scale * z| ~ 200)
ATOL = 1e-6


def _inputs():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (B, K))
    labels = rng.integers(0, K, B)
    one_hot = np.eye(K)[labels]
    # label smoothing mixed with a second label (mixup-like): rows sum to 1
    other = np.eye(K)[rng.integers(0, K, B)]
    lam = rng.uniform(0.2, 0.8, (B, 1))
    soft = 0.9 * (lam * one_hot + (1 - lam) * other) + 0.1 / K
    return logits, {"one_hot": one_hot, "soft": soft}


LOGITS, TARGETS = _inputs()


def _ctx(drw=False, **kw):
    return LossContext(
        prior=PRIOR.astype(np.float32), counts=COUNTS.astype(np.float32), drw=drw, **kw
    )


# ---------------------------------------------------------------------- NumPy references (float64)


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_ce(z, t):
    return -(t * np_log_softmax(z)).sum(-1)


def np_cb_weights(counts, beta):
    w = np.array([(1 - beta) / (1 - beta**n) if n > 0 else 0.0 for n in counts])
    return w * len(counts) / w.sum()


def np_reference(name, z, t, gamma=2.0, beta=0.9999, tau=1.0, max_margin=0.5, scale=1.0, drw=0):
    if name == "cross_entropy":
        return np_ce(z, t)
    if name == "focal":
        p = np.exp(np_log_softmax(z))
        return -(t * (1 - p) ** gamma * np.log(p)).sum(-1)
    if name == "class_balanced":
        return (t @ np_cb_weights(COUNTS, beta)) * np_ce(z, t)
    if name == "logit_adjusted":
        return np_ce(z + tau * np.log(PRIOR), t)
    if name == "balanced_softmax":
        return np_ce(z + np.log(PRIOR), t)
    if name == "ldam":
        m = 1.0 / COUNTS**0.25
        m = m * max_margin / m.max()
        loss = np_ce(scale * (z - t * m), t)
        return loss * (t @ np_cb_weights(COUNTS, beta)) if drw else loss
    raise AssertionError(name)


NAMES = ("cross_entropy", "focal", "class_balanced", "logit_adjusted", "balanced_softmax", "ldam")


def test_registry_holds_the_losses():
    assert set(LOSSES.names()) == set(NAMES)
    assert LOSS_NEEDS_PRIOR <= set(NAMES)


@pytest.mark.parametrize("kind", ["one_hot", "soft"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy(name, kind):
    t = TARGETS[kind]
    got = per_example_loss(name, jnp.float32(LOGITS), jnp.float32(t), _ctx())
    assert got.shape == (B,) and got.dtype == jnp.float32
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(np.asarray(got), np_reference(name, LOGITS, t), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["one_hot", "soft"])
def test_ldam_drw_matches_numpy(kind):
    t = TARGETS[kind]
    got = per_example_loss("ldam", jnp.float32(LOGITS), jnp.float32(t), _ctx(drw=True))
    np.testing.assert_allclose(
        np.asarray(got), np_reference("ldam", LOGITS, t, drw=1), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("name", NAMES)
def test_jittable_with_traced_drw(name):
    t = jnp.float32(TARGETS["soft"])

    @jax.jit
    def f(z, t, drw):
        return per_example_loss(name, z, t, _ctx(drw=drw))

    eager = per_example_loss(name, jnp.float32(LOGITS), t, _ctx(drw=True))
    jitted = f(jnp.float32(LOGITS), t, jnp.bool_(True))
    assert np.all(np.isfinite(jitted))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradients_on_saturated_logits(name):
    z = jnp.float32(LOGITS) * 100.0  # softmax saturates: some p == 1 and log p very negative
    t = jnp.float32(TARGETS["soft"])
    loss = per_example_loss(name, z, t, _ctx(drw=True))
    grad = jax.grad(lambda z: per_example_loss(name, z, t, _ctx(drw=True)).sum())(z)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", ["one_hot", "soft"])
def test_ldam_drw_differs_by_class_balanced_weights(kind):
    t = TARGETS[kind]
    z, tt = jnp.float32(LOGITS), jnp.float32(t)
    off = np.asarray(per_example_loss("ldam", z, tt, _ctx(drw=False)))
    on = np.asarray(per_example_loss("ldam", z, tt, _ctx(drw=jnp.bool_(True))))
    np.testing.assert_allclose(on, off * (t @ np_cb_weights(COUNTS, 0.9999)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["one_hot", "soft"])
def test_special_cases(kind):
    z, t = jnp.float32(LOGITS), jnp.float32(TARGETS[kind])
    ce = per_example_loss("cross_entropy", z, t, _ctx())
    np.testing.assert_allclose(
        per_example_loss("focal", z, t, _ctx(gamma=0.0)), ce, rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        per_example_loss("logit_adjusted", z, t, _ctx(tau=0.0)), ce, rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        per_example_loss("balanced_softmax", z, t, _ctx()),
        per_example_loss("logit_adjusted", z, t, _ctx(tau=1.0)),
        rtol=RTOL,
        atol=ATOL,
    )


def test_empty_class_is_finite():
    counts = COUNTS.copy()
    counts[1] = 0
    ctx = LossContext(
        prior=(counts / counts.sum()).astype(np.float32), counts=counts.astype(np.float32), drw=True
    )
    for name in NAMES:
        got = per_example_loss(name, jnp.float32(LOGITS), jnp.float32(TARGETS["soft"]), ctx)
        assert np.all(np.isfinite(got)), name


def test_unknown_name():
    with pytest.raises(ConfigError, match="did you mean 'focal'"):
        check_loss("focall", soft_targets=False)
    with pytest.raises(ConfigError, match="did you mean"):
        per_example_loss("ldma", jnp.float32(LOGITS), jnp.float32(TARGETS["soft"]), _ctx())
    for name in NAMES:
        check_loss(name, soft_targets=True)


@pytest.mark.parametrize(
    "bad", [{"beta": 1.0}, {"beta": -0.1}, {"gamma": -1.0}, {"scale": 0.0}, {"max_margin": -1}]
)
def test_bad_hyperparameters(bad):
    with pytest.raises(ConfigError, match=f"loss.{next(iter(bad))}"):
        _ctx(**bad)


def test_class_balanced_weights_edge_cases():
    np.testing.assert_allclose(class_balanced_weights(COUNTS, 0.0), np.ones(K), rtol=RTOL)
    counts = COUNTS.copy()
    counts[1] = 0
    w = np.asarray(class_balanced_weights(counts, 0.9999))
    assert w[1] == 0 and np.all(np.isfinite(w))
    np.testing.assert_allclose(w, np_cb_weights(counts, 0.9999), rtol=RTOL)


@pytest.mark.parametrize("kind", ["one_hot", "soft"])
def test_ldam_scale_matches_the_formula(kind):
    """The paper's s = 30 (for cosine logits) still computes what the formula says."""
    t = TARGETS[kind]
    got = per_example_loss("ldam", LOGITS / 30.0, t, _ctx(drw=True, scale=30.0))
    want = np_reference("ldam", LOGITS.astype(np.float64) / 30.0, t, scale=30.0, drw=1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)

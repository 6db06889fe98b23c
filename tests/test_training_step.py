"""The train step's math, the optimiser and schedules, the loop's helpers and the builder, on
tiny models: no training run."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from ferjax.data.dataset import Split
from ferjax.data.input import one_hot_targets
from ferjax.data.pipeline import index_batches
from ferjax.evaluation.metrics import classification_report, confusion_matrix
from ferjax.runtime.errors import CheckpointError, ConfigError
from ferjax.runtime.registry import Registry
from ferjax.training import step as S
from ferjax.training.checkpoint import check_config_unchanged, config_differences
from ferjax.training.losses import LossContext
from ferjax.training.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from ferjax.training.program import build
from ferjax.training.schedule import Intervals


class Linear(nn.Module):
    """logits = W x (+ b): a model whose gradients are easy to reason about."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def program(**overrides):
    config = tiny_config(augment__ops="", optim__warmup_epochs=0.0, optim__schedule="constant")
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    return build(
        config,
        num_classes=3,
        image_shape=(4, 4, 1),
        steps_per_epoch=10,
        norm=(0.0, 255.0),
        model=Linear(),
    )


def data_and_batch(lam=0.0, weight=1.0, b=4):
    rng = np.random.default_rng(0)
    data = {
        "images": jnp.asarray(rng.integers(0, 256, (8, 4, 4, 1)), jnp.uint8),
        "targets": jax.nn.one_hot(jnp.arange(8) % 3, 3),
    }
    batch = {
        "i": jnp.arange(b, dtype=jnp.int32),
        "j": jnp.arange(b, 2 * b, dtype=jnp.int32),
        "lam": jnp.full(b, lam, jnp.float32),
        "weight": jnp.full(b, weight, jnp.float32),
    }
    return data, batch


# ------------------------------------------------------------------------------- step math


def test_smote_mixing_is_the_interpolation_and_leaves_real_examples_exact():
    xi = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    xj = xi * 3 + 7
    ti, tj = jnp.eye(3)[jnp.array([0, 1])], jnp.eye(3)[jnp.array([2, 2])]
    x, t = S.mix_examples(xi, xj, ti, tj, jnp.array([0.0, 0.25]))
    np.testing.assert_array_equal(x[0], xi[0])  # lam = 0: the real example, bit for bit
    np.testing.assert_allclose(x[1], xi[1] + 0.25 * (xj[1] - xi[1]))
    np.testing.assert_allclose(t[1], [0.0, 0.75, 0.25])


def test_label_smoothing_and_loss_weights():
    t = jnp.eye(4)[jnp.array([1])]
    np.testing.assert_allclose(S.smooth_labels(t, 0.2), [[0.05, 0.85, 0.05, 0.05]])
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = jnp.eye(3)[jnp.array([0, 2])]
    ctx = LossContext(prior=jnp.ones(3) / 3, counts=jnp.ones(3), drw=False)
    loss, per = S.training_loss(logits, targets, jnp.array([1.0, 3.0]), ctx, "cross_entropy")
    np.testing.assert_allclose(per, optax.softmax_cross_entropy(logits, targets))
    np.testing.assert_allclose(loss, (per[0] + 3 * per[1]) / 2)


def test_class_weights_scale_the_gradient():
    """A weight of w on every record scales the loss (and the SGD update) by w."""
    p = program(optim__name="sgd", optim__momentum=0.0, optim__weight_decay=0.0)
    data, batch = data_and_batch(weight=1.0)
    one, _ = p.train_step(p.state, data, batch)
    p = program(optim__name="sgd", optim__momentum=0.0, optim__weight_decay=0.0)
    two, _ = p.train_step(p.state, data, data_and_batch(weight=2.0)[1])
    p0 = program().state.params
    d1 = jax.tree.map(lambda a, b: a - b, one.params, p0)
    d2 = jax.tree.map(lambda a, b: a - b, two.params, p0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(2 * a, b, rtol=1e-5, atol=1e-7), d1, d2)


def test_step_metrics_and_counter():
    p = program()
    data, batch = data_and_batch()
    state, m = p.train_step(p.state, data, batch)
    assert int(state.step) == 1
    assert float(m["count"]) == 4 and 0 <= float(m["correct"]) <= 4
    assert int(m["bad_loss_step"]) == int(m["bad_grad_step"]) == S.NEVER
    logits = Linear().apply({"params": program().state.params}, data["images"][:4] / 255.0)
    want = optax.softmax_cross_entropy(logits, data["targets"][:4]).sum()
    np.testing.assert_allclose(float(m["loss_sum"]), float(want), rtol=1e-5)


def test_non_finite_loss_leaves_the_state_untouched():
    p = program(train__debug_nan_step=1)
    data, batch = data_and_batch()
    before = jax.device_get(p.state)
    state, m = p.train_step(p.state, data, batch)
    after = jax.device_get(state)
    assert int(m["bad_loss_step"]) == 1 and int(m["bad_grad_step"]) == S.NEVER
    assert float(m["count"]) == 0 and int(after.step) == 0
    jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
    jax.tree.map(np.testing.assert_array_equal, before.opt_state, after.opt_state)


def test_accumulate_sums_and_keeps_the_first_bad_step():
    a = {"loss_sum": 1.0, "bad_loss_step": 7, "bad_grad_step": S.NEVER}
    b = {"loss_sum": 2.0, "bad_loss_step": 3, "bad_grad_step": 9}
    out = jax.device_get(S.accumulate(S.accumulate(None, a), b))
    assert out == {"loss_sum": 3.0, "bad_loss_step": 3, "bad_grad_step": 9}


def test_frozen_groups_get_no_update():
    p = program(model__freeze="Dense_0/bias")
    before = jax.tree.map(np.array, p.state.params["Dense_0"])  # the step donates the state
    state, _ = p.train_step(p.state, *data_and_batch())
    after = jax.device_get(state.params["Dense_0"])
    np.testing.assert_array_equal(after["bias"], before["bias"])
    assert not np.array_equal(after["kernel"], before["kernel"])


# ------------------------------------------------------------------------------- optimiser


def test_schedules():
    optim = tiny_config().optim
    optim.update(learning_rate=1.0, warmup_epochs=2.0, schedule="cosine")
    s = make_schedule(optim, steps_per_epoch=10, num_epochs=10)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(0.5)
    assert float(s(20)) == pytest.approx(1.0) and float(s(100)) == pytest.approx(0.0, abs=1e-6)
    optim.update(schedule="step", step_epochs="4,8", step_factor=0.1)
    s = make_schedule(optim, steps_per_epoch=10, num_epochs=10)
    assert [round(float(s(k)), 6) for k in (10, 30, 45, 85)] == [0.5, 1.0, 0.1, 0.01]
    optim.update(schedule="constant", warmup_epochs=0.0)
    assert float(make_schedule(optim, 10, 10)(55)) == 1.0
    # Warm-up is capped so that one step follows it.
    optim.update(schedule="cosine", warmup_epochs=100.0)
    assert float(make_schedule(optim, 10, 1)(9)) == pytest.approx(1.0)


def test_optimizers_registered_once_and_weight_decay_on_kernels_only():
    assert OPTIMIZERS.names() == ("sgd", "adamw", "adam")
    assert SCHEDULES.names() == ("cosine", "constant", "step")
    config = tiny_config(optim__name="sgd", optim__momentum=0.0, optim__warmup_epochs=0.0,
                         optim__schedule="constant", optim__weight_decay=0.5)  # fmt: skip
    config.optim.learning_rate = 0.1
    tx, _ = make_optimizer(config, 10)
    params = {"conv": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.05)  # -lr * wd * w
    np.testing.assert_allclose(updates["conv"]["bias"], 0.0)


def test_registry_rejects_duplicates_and_names_the_closest_choice():
    r = Registry("x.kind")
    r.register("alpha", 1)
    with pytest.raises(ValueError, match="x.kind: 'alpha' is registered twice"):
        r.register("alpha", 2)
    with pytest.raises(ConfigError) as e:
        r.get("alpah")
    assert (
        str(e.value) == "config.x.kind: got 'alpah', expected one of alpha; did you mean 'alpha'?"
    )


# ------------------------------------------------------------------------------- the loop's helpers


def test_intervals():
    i = Intervals(steps_per_epoch=10, log_every=4, checkpoint_every=6, checkpoint_minutes=0.0)
    assert [s for s in range(1, 21) if i.sync_point(s)] == [4, 8, 10, 12, 16, 20]
    assert [s for s in range(1, 21) if i.save_due(s, 0.0)] == [6, 12, 18]
    timed = Intervals(10, 4, 0, checkpoint_minutes=1.0)
    assert not timed.save_due(3, 59.0) and timed.save_due(3, 61.0)


def test_one_hot_targets_keep_soft_targets():
    hard = Split(np.zeros((2, 4, 4, 1), np.uint8), np.array([2, 0], np.int32))
    np.testing.assert_array_equal(one_hot_targets(hard, 3), [[0, 0, 1], [1, 0, 0]])
    soft = Split(hard.images, hard.labels, targets=np.array([[0.2, 0.3, 0.5], [1, 0, 0]]))
    np.testing.assert_allclose(one_hot_targets(soft, 3), soft.targets)


def test_index_batches_split_the_global_batch_between_processes_and_resume():
    n = 23
    records = {"i": np.arange(n, dtype=np.int32), "j": np.arange(n, dtype=np.int32) + 100}
    whole = list(index_batches(records, 8))
    assert [b["i"].tolist() for b in whole] == [list(range(8)), list(range(8, 16))]  # 7 dropped
    halves = [list(index_batches(records, 8, p, 2)) for p in (0, 1)]
    for step in range(2):
        joined = np.concatenate([halves[0][step]["i"], halves[1][step]["i"]])
        np.testing.assert_array_equal(joined, whole[step]["i"])
    resumed = list(index_batches(records, 8, start_step=1))
    assert len(resumed) == 1 and resumed[0]["j"].tolist() == whole[1]["j"].tolist()
    host = {"images": np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1), "targets": np.eye(n)}
    records["j"] = records["i"][::-1].copy()
    gathered = next(index_batches(records, 8, host_arrays=host))
    np.testing.assert_array_equal(gathered["xi"], host["images"][:8])
    np.testing.assert_array_equal(gathered["xj"], host["images"][::-1][:8])


def test_config_differences_on_resume():
    saved = tiny_config().to_dict()
    now = tiny_config(optim__learning_rate=0.01, train__verbosity=0)
    assert config_differences(saved, now) == ["optim.learning_rate"]  # verbosity is runtime
    with pytest.raises(CheckpointError) as e:
        check_config_unchanged(saved, now, "runs/x")
    assert "optim.learning_rate (0.05 -> 0.01)" in str(e.value)
    saved["data"]["old_key"] = 1  # a key this ferjax no longer has
    assert config_differences(saved, tiny_config()) == ["data.old_key"]
    now.train.allow_config_change = True
    check_config_unchanged(saved, now, "runs/x")


def test_classification_report():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 0.9 + 0.1 / 3
    r = classification_report(labels, probs, ("a", "b", "c"), "test")
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion_matrix(labels, labels, 3).trace() == 6


# ------------------------------------------------------------------ imbalance remedies, EMA, SAM


def test_spec_takes_the_prior_from_the_sampled_counts_and_schedules_drw():
    counts = np.array([80.0, 10.0, 10.0])
    config = tiny_config(loss__name="ldam", train__num_epochs=10)
    spec = S.StepSpec.from_config(config, (0.0, 1.0), 7, counts, 3)
    np.testing.assert_allclose(spec.prior, [0.8, 0.1, 0.1])
    assert spec.drw_step == 8 * 7  # ldam's default: 0.8 x the epochs
    assert S.StepSpec.from_config(tiny_config(), (0.0, 1.0), 7, counts, 3).drw_step == -1
    cfg = tiny_config(loss__drw_epoch=3)
    assert S.StepSpec.from_config(cfg, (0.0, 1.0), 7, counts, 3).drw_step == 21
    uniform = S.StepSpec.from_config(tiny_config(), (0.0, 1.0), 7, None, 4)
    np.testing.assert_allclose(uniform.prior, [0.25] * 4)


def test_deferred_reweighting_weights_examples_by_class_from_its_step():
    """Before drw_step the loss is plain; from it, each example is weighted by its class's
    class-balanced weight (any loss but ldam, which weights itself)."""
    logits = jnp.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    targets = jnp.eye(3)[jnp.array([0, 1])]
    counts = jnp.array([100.0, 10.0, 10.0])
    ctx = lambda drw: LossContext(prior=counts / 120, counts=counts, drw=drw, beta=0.99)
    off, per = S.training_loss(logits, targets, jnp.ones(2), ctx(jnp.array(False)), "focal")
    on, _ = S.training_loss(logits, targets, jnp.ones(2), ctx(jnp.array(True)), "focal")
    w = (1 - 0.99) / (1 - 0.99 ** np.array([100.0, 10.0, 10.0]))
    w = w * 3 / w.sum()
    np.testing.assert_allclose(off, per.mean(), rtol=1e-6)
    np.testing.assert_allclose(on, (per * w[[0, 1]]).mean(), rtol=1e-5)


def test_ema_follows_the_parameters_and_sam_changes_the_step():
    """EMA: after one step ema = d * p0 + (1 - d) * p1, leaf by leaf; the averaged weights
    are what evaluation uses. SAM: the update differs from plain SGD's, rho = 0 is plain."""
    data, batch = data_and_batch()
    plain = program(optim__name="sgd", optim__momentum=0.0)
    p0 = jax.device_get(plain.state.params)
    one, _ = plain.train_step(plain.state, data, batch)
    p = program(optim__name="sgd", optim__momentum=0.0, train__ema_decay=0.9)
    ema_state, _ = p.train_step(p.state, data, batch)
    jax.tree.map(
        lambda e, a, b: np.testing.assert_allclose(e, 0.9 * a + 0.1 * b, rtol=1e-6),
        ema_state.ema["params"],
        p0,
        jax.device_get(ema_state.params),
    )
    assert ema_state.eval_variables()["params"] is ema_state.ema["params"]
    assert one.eval_variables()["params"] is one.params and one.ema == {}
    jax.tree.map(np.testing.assert_array_equal, ema_state.params, one.params)
    s = program(optim__name="sgd", optim__momentum=0.0, optim__sam_rho=0.5)
    sam, m = s.train_step(s.state, data, batch)
    delta = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), sam.params, one.params)
    assert max(jax.tree.leaves(delta)) > 1e-4 and bool(np.isfinite(m["loss_sum"]))


def test_one_program_for_every_seed_and_the_same_values():
    """The seed is data: programs built for two seeds lower to the same text (one compile, one
    cache entry), and a step with the seed as data equals the step with it as a constant."""
    config = tiny_config(augment__ops="flip|shift(pad=1)")

    def fresh(seed):
        config.train.seed = seed
        return build(config, num_classes=3, image_shape=(8, 8, 1), steps_per_epoch=10,
                     norm=(0.0, 255.0), model=_DropoutNet())  # fmt: skip

    _, batch = data_and_batch(b=4)
    rng = np.random.default_rng(1)
    data = {
        "images": jnp.asarray(rng.integers(0, 256, (8, 8, 8, 1)), jnp.uint8),
        "targets": jax.nn.one_hot(jnp.arange(8) % 3, 3),
    }
    texts, params = [], []
    for seed in (0, 7):
        seeded = {**data, "seed": np.int32(seed)}
        p = fresh(seed)
        texts.append(p.train_step.lower(p.state, seeded, batch).as_text())
        state, _ = p.train_step(p.state, seeded, batch)  # donates p.state
        q = fresh(seed)
        constant, _ = q.train_step(q.state, data, batch)  # the seed as the program's constant
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(constant.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        params.append(np.asarray(jax.tree.leaves(state.params)[-1]))
    assert texts[0] == texts[1]
    # the premise: the seed changes the step (dropout and augmentation draw from it)
    assert not np.array_equal(params[0], params[1])


class _DropoutNet(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dropout(0.5, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)

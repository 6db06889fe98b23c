"""The train state and the train step: one pure function, jitted once by `ferjax.training.program`.

One step: gather the two examples of each index record from the on-device dataset (or take the
host-gathered ones), build the SMOTE-style interpolation x = x_i + lam (x_j - x_i), median
filter, augment per example, normalise, forward/backward, optax update. A non-finite loss or
gradient leaves the state untouched and is reported in the metrics. The pieces of the math are
small functions so that each can be tested without a training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ferjax.data.augment import make_augment
from ferjax.data.preprocess import median3x3, normalize_images

# train.on_nan: what a non-finite loss or gradient does (the loop stops or rolls back).
ON_NAN = ("stop", "rollback")
# bad_loss_step / bad_grad_step of a step whose loss and gradient are finite.
NEVER = int(jnp.iinfo(jnp.int32).max)


@flax.struct.dataclass
class TrainState:
    """Everything that determines the future of a run, besides the config and the data.

    lr_scale multiplies every update: it starts at 1 and is lowered after a divergence rollback.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    lr_scale: jax.Array


def gather_examples(data: dict, batch: dict):
    """The two examples of each index record: float32 images [B, H, W, C] and targets [B, K].

    Device placement: `data` holds the dataset and `batch` indices i, j. Streaming placement:
    `data` is empty and the host already gathered uint8 images xi, xj and targets ti, tj.
    """
    if "xi" in batch:
        xi, xj, ti, tj = batch["xi"], batch["xj"], batch["ti"], batch["tj"]
    else:
        xi, xj = data["images"][batch["i"]], data["images"][batch["j"]]
        ti, tj = data["targets"][batch["i"]], data["targets"][batch["j"]]
    return xi.astype(jnp.float32), xj.astype(jnp.float32), ti, tj


def mix_examples(xi, xj, ti, tj, lam):
    """SMOTE-style interpolation: x = x_i + lam (x_j - x_i), targets likewise. lam float32[B]
    (0 for real examples, which leaves them exactly unchanged)."""
    x = xi + lam[:, None, None, None] * (xj - xi)
    return x, ti + lam[:, None] * (tj - ti)


def smooth_labels(targets, smoothing: float):
    """Label smoothing: (1 - s) targets + s / K."""
    return targets * (1.0 - smoothing) + smoothing / targets.shape[-1]


def weighted_loss(logits, targets, weight):
    """(mean of weight x softmax cross-entropy, per-example cross-entropy float32[B])."""
    per_example = optax.softmax_cross_entropy(logits, targets)
    return jnp.mean(per_example * weight), per_example


def keep_if(ok, new, old):
    """`new` where ok, else `old`, leaf by leaf (the non-finite guard)."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def accumulate(sums: dict | None, metrics: dict) -> dict:
    """Adds one step's metric sums; the bad_* entries keep the earliest step."""
    if sums is None:
        return metrics
    return {
        k: jnp.minimum(sums[k], v) if k.startswith("bad_") else sums[k] + v
        for k, v in metrics.items()
    }


def make_train_step(
    model,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    norm: tuple[float | None, float | None],
    keep_frozen_stats: Callable | None = None,
) -> Callable:
    """train_step(state, data, batch) -> (state, metric sums).

    data: {"images": uint8[N, H, W, C], "targets": float32[N, K]} on the device (replicated),
    or {} under streaming placement. batch: {"i", "j": int32[B], "lam", "weight": float32[B]}
    index records (batch-sharded), plus "xi", "xj", "ti", "tj" when streaming.
    keep_frozen_stats(old, new, step): BatchNorm statistics to keep (transfer.py), or None.
    """
    augment = make_augment(config.augment.ops)
    base_key = jax.random.PRNGKey(config.train.seed)
    smoothing = config.train.label_smoothing
    nan_step = config.train.debug_nan_step
    median = config.data.median_filter
    # float16 activations need the loss scaled up so that small gradients do not flush to zero.
    loss_scale = config.train.loss_scale or (1024.0 if config.train.dtype == "float16" else 1.0)

    def train_step(state: TrainState, data, batch):
        key = jax.random.fold_in(base_key, state.step)
        aug_key, drop_key = jax.random.split(key)
        x, targets = mix_examples(*gather_examples(data, batch), batch["lam"])
        if median:
            x = median3x3(x)
        x, targets = augment(x, targets, aug_key)
        x = normalize_images(x, norm)
        smoothed = smooth_labels(targets, smoothing)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                rngs={"dropout": drop_key},
                mutable=["batch_stats"],
            )
            loss, per_example = weighted_loss(logits, smoothed, batch["weight"])
            if nan_step:  # test hook: a divergence at one step that a lower learning rate avoids
                poison = (state.step + 1 == nan_step) & (state.lr_scale == 1.0)
                loss = jnp.where(poison, jnp.nan, loss)
            return loss * loss_scale, (loss, logits, per_example, updates["batch_stats"])

        grads, aux = jax.grad(loss_fn, has_aux=True)(state.params)
        if loss_scale != 1.0:
            grads = jax.tree.map(lambda g: g / loss_scale, grads)
        loss, logits, per_example, batch_stats = aux
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * state.lr_scale, updates)
        params = optax.apply_updates(state.params, updates)
        if keep_frozen_stats is not None:
            batch_stats = keep_frozen_stats(state.batch_stats, batch_stats, state.step)
        correct = jnp.argmax(logits, -1) == jnp.argmax(targets, -1)
        # A non-finite loss or gradient leaves the state untouched; the loop stops (or rolls
        # back) when it next reads the metrics, so the last good state is what gets saved.
        loss_ok = jnp.isfinite(loss)
        grad_ok = jnp.isfinite(optax.global_norm(grads))
        ok = loss_ok & grad_ok
        metrics = {
            "loss_sum": jnp.where(ok, jnp.sum(per_example), 0.0),
            "correct": jnp.where(ok, jnp.sum(correct.astype(jnp.float32)), 0.0),
            "count": jnp.where(ok, jnp.asarray(per_example.shape[0], jnp.float32), 0.0),
            "bad_loss_step": jnp.where(loss_ok, NEVER, state.step + 1),
            "bad_grad_step": jnp.where(grad_ok, NEVER, state.step + 1),
        }
        new_state = state.replace(
            step=jnp.where(ok, state.step + 1, state.step),
            params=keep_if(ok, params, state.params),
            batch_stats=keep_if(ok, batch_stats, state.batch_stats),
            opt_state=keep_if(ok, opt_state, state.opt_state),
        )
        return new_state, metrics

    return train_step

"""The train state and the train step: one pure function, jitted once by `ferjax.training.program`.

One step: gather the two examples of each index record from the on-device dataset (or take the
host-gathered ones), build the SMOTE-style interpolation x = x_i + lam (x_j - x_i), median
filter, augment per example, normalise, forward/backward (the loss of `loss.name`, optionally
at a SAM perturbation), optax update, parameter averaging (EMA). A non-finite loss or
gradient leaves the state untouched and is reported in the metrics. The pieces of the math are
small functions so that each can be tested without a training run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ferjax.data.augment import make_augment, parse_ops
from ferjax.data.preprocess import median3x3, normalize_images
from ferjax.training.losses import LossContext, class_balanced_weights, per_example_loss

# train.on_nan: what a non-finite loss or gradient does (the loop stops or rolls back).
ON_NAN = ("stop", "rollback")
# bad_loss_step / bad_grad_step of a step whose loss and gradient are finite.
NEVER = int(jnp.iinfo(jnp.int32).max)


@flax.struct.dataclass
class TrainState:
    """Everything that determines the future of a run, besides the config and the data.

    lr_scale multiplies every update: it starts at 1 and is lowered after a divergence rollback.
    ema: {} (train.ema_decay = 0), or {"params", "batch_stats"}: the exponential moving average.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    lr_scale: jax.Array
    ema: Any = dataclasses.field(default_factory=dict)

    def eval_variables(self) -> dict:
        """The variables that validation, test and exports use: the average when there is one."""
        source = self.ema or {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": source["params"], "batch_stats": source["batch_stats"]}


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


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything the train step takes from the config, decided once (`StepSpec.from_config`).

    augment: the parsed `augment.ops` chain; loss: `loss.name` with its context (class prior and
    counts of the training records after sampling); drw_step: the first step of deferred
    re-weighting (-1: never); loss_scale: the static float16 loss scale.
    """

    seed: int
    augment: tuple
    norm: tuple
    median: bool
    smoothing: float
    loss: str
    prior: tuple
    counts: tuple
    loss_args: tuple  # (gamma, beta, tau, max_margin, scale)
    drw_step: int
    sam_rho: float
    ema_decay: float
    loss_scale: float
    nan_step: int

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        norm: tuple[float | None, float | None],
        steps_per_epoch: int,
        class_counts: np.ndarray | None = None,
        num_classes: int | None = None,
    ) -> StepSpec:
        """class_counts: float[K] training records per class after sampling (with class
        weights folded in); None = uniform over num_classes."""
        if class_counts is None:
            class_counts = np.ones(num_classes or 1, np.float64)
        counts = np.asarray(class_counts, np.float64)
        prior = counts / max(counts.sum(), 1e-12)
        loss, drw = config.loss, drw_epoch(config)
        return cls(
            seed=config.train.seed,
            augment=tuple((n, tuple(sorted(p.items()))) for n, p in parse_ops(config.augment.ops)),
            norm=tuple(norm),
            median=bool(config.data.median_filter),
            smoothing=float(config.train.label_smoothing),
            loss=loss.name,
            prior=tuple(float(p) for p in prior),
            counts=tuple(float(c) for c in counts),
            loss_args=(loss.gamma, loss.beta, loss.tau, loss.max_margin, loss.scale),
            drw_step=drw * steps_per_epoch if drw >= 0 else -1,
            sam_rho=float(config.optim.sam_rho),
            ema_decay=float(config.train.ema_decay),
            # float16 activations need the loss scaled up so that small gradients do not
            # flush to zero.
            loss_scale=config.train.loss_scale
            or (1024.0 if config.train.dtype == "float16" else 1.0),
            nan_step=config.train.debug_nan_step,
        )

    def loss_context(self, step) -> LossContext:
        gamma, beta, tau, max_margin, scale = self.loss_args
        drw = (step >= self.drw_step) if self.drw_step >= 0 else False
        return LossContext(
            prior=jnp.asarray(self.prior, jnp.float32),
            counts=jnp.asarray(self.counts, jnp.float32),
            drw=drw,
            gamma=gamma,
            beta=beta,
            tau=tau,
            max_margin=max_margin,
            scale=scale,
        )


def drw_epoch(config: ml_collections.ConfigDict) -> int:
    """The epoch deferred re-weighting starts (loss.drw_epoch; ldam's 0 = 0.8 x the epochs),
    or -1 for never."""
    epoch = config.loss.drw_epoch
    if epoch == 0:
        return int(0.8 * config.train.num_epochs) if config.loss.name == "ldam" else -1
    return epoch


def training_loss(logits, targets, weight, ctx: LossContext, name: str):
    """(mean of weight x the loss, per-example loss float32[B]). Deferred re-weighting of losses
    other than ldam (which re-weights itself) multiplies each example by its targets' class-
    balanced weight once ctx.drw is on."""
    per_example = per_example_loss(name, logits, targets, ctx)
    if name != "ldam" and ctx.drw is not False:
        cb = targets @ class_balanced_weights(ctx.counts, ctx.beta)
        weight = weight * jnp.where(ctx.drw, cb, 1.0)
    return jnp.mean(per_example * weight), per_example


def ema_update(ema: dict, params, batch_stats, decay: float) -> dict:
    """ema <- decay * ema + (1 - decay) * current, leaf by leaf."""
    current = {"params": params, "batch_stats": batch_stats}
    return jax.tree.map(lambda e, c: decay * e + (1.0 - decay) * c, ema, current)


def train_step(state: TrainState, data: dict, batch: dict, *, spec: StepSpec, model, tx,
               keep_frozen_stats: Callable | None = None):  # fmt: skip
    """One step -> (state, metric sums).

    data: {"images": uint8[N, H, W, C], "targets": float32[N, K]} on the device (replicated),
    or no images under streaming placement; optionally "seed": int32[] (else spec.seed).
    batch: {"i", "j": int32[B], "lam", "weight": float32[B]}
    index records (batch-sharded), plus "xi", "xj", "ti", "tj" when streaming.
    keep_frozen_stats(old, new, step): BatchNorm statistics to keep (transfer.py), or None.
    """
    augment = make_augment([(n, dict(p)) for n, p in spec.augment])
    seed = data.get("seed", spec.seed)  # a traced seed: one program for every seed
    key = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
    aug_key, drop_key = jax.random.split(key)
    x, targets = mix_examples(*gather_examples(data, batch), batch["lam"])
    if spec.median:
        x = median3x3(x)
    x, targets = augment(x, targets, aug_key)
    x = normalize_images(x, spec.norm)
    smoothed = smooth_labels(targets, spec.smoothing)
    ctx = spec.loss_context(state.step)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            rngs={"dropout": drop_key},
            mutable=["batch_stats"],
        )
        loss, per_example = training_loss(logits, smoothed, batch["weight"], ctx, spec.loss)
        if spec.nan_step:  # test hook: a divergence at one step that a lower learning rate avoids
            poison = (state.step + 1 == spec.nan_step) & (state.lr_scale == 1.0)
            loss = jnp.where(poison, jnp.nan, loss)
        return loss * spec.loss_scale, (loss, logits, per_example, updates["batch_stats"])

    grads, aux = jax.grad(loss_fn, has_aux=True)(state.params)
    if spec.sam_rho > 0:
        # SAM: the gradient at the worst nearby point params + rho g / |g| (same batch, same
        # dropout); the BatchNorm statistics and the reported loss are those of the first pass.
        scale = spec.sam_rho / (optax.global_norm(grads) + 1e-12)
        perturbed = jax.tree.map(lambda p, g: p + scale * g, state.params, grads)
        grads, _ = jax.grad(loss_fn, has_aux=True)(perturbed)
    if spec.loss_scale != 1.0:
        grads = jax.tree.map(lambda g: g / spec.loss_scale, grads)
    loss, logits, per_example, batch_stats = aux
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * state.lr_scale, updates)
    params = optax.apply_updates(state.params, updates)
    if keep_frozen_stats is not None:
        batch_stats = keep_frozen_stats(state.batch_stats, batch_stats, state.step)
    ema = state.ema
    if spec.ema_decay > 0:
        ema = ema_update(state.ema, params, batch_stats, spec.ema_decay)
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
        ema=keep_if(ok, ema, state.ema),
    )
    return new_state, metrics

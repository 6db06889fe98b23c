"""Train state, the jitted train and eval steps, and the training loop.

One step is one XLA program: gather the examples of the index batch from the on-device dataset,
build SMOTE-style interpolations, augment per example, forward/backward, optax update. The batch
is sharded over all devices ("data" axis) and parameters are replicated, so BatchNorm sees the
statistics of the global batch and the result does not depend on the device count.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ferjax import parallel, transfer
from ferjax.augment import make_augment, tta_views
from ferjax.checkpoint import Checkpoints
from ferjax.data.dataset import FerData
from ferjax.data.pipeline import index_batches
from ferjax.data.preprocess import median3x3
from ferjax.data.sampling import Sampler, parse_strategy
from ferjax.errors import CheckpointError, ConfigError, FerjaxError
from ferjax.metrics import classification_report
from ferjax.models import create_model


class TrainingDiverged(FerjaxError):
    """A non-finite loss or gradient (train.on_nan=stop, or rollbacks exhausted)."""

    exit_code = 3


class Preempted(FerjaxError):
    """SIGTERM/SIGINT: a checkpoint was written at the current step; re-run to resume."""

    exit_code = 75  # EX_TEMPFAIL: try again


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


# ------------------------------------------------------------------------------- optimiser


def decay_mask(params, decay_norm_and_bias: bool):
    """True for the leaves that get weight decay: conv/dense kernels (and, optionally, all)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: decay_norm_and_bias or getattr(path[-1], "key", None) == "kernel", params
    )


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
    total = max(num_epochs * steps_per_epoch, 1)
    # Warm-up is capped so that at least one step follows it (short test runs).
    warmup = min(int(round(optim.warmup_epochs * steps_per_epoch)), total - 1)
    peak = optim.learning_rate
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)
    if optim.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif optim.schedule == "step":
        epochs = [float(e) for e in str(optim.step_epochs).split(",") if e.strip()]
        boundaries = {int(e * steps_per_epoch) - warmup: optim.step_factor for e in epochs}
        after = optax.piecewise_constant_schedule(peak, boundaries)
    else:
        raise ConfigError(f"optim.schedule: unknown {optim.schedule!r}")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """(tx, schedule). With model.freeze, tx routes the frozen groups through
    transfer.freezing_optimizer (zero updates until train.unfreeze_at_epoch)."""
    optim = config.optim
    schedule = make_schedule(optim, steps_per_epoch, config.train.num_epochs)
    make_tx = functools.partial(_base_optimizer, optim)
    if transfer.parse_patterns(config.model.freeze):
        return transfer.freezing_optimizer(config, make_tx, schedule, steps_per_epoch), schedule
    return make_tx(schedule), schedule


def _base_optimizer(optim: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    mask = functools.partial(decay_mask, decay_norm_and_bias=optim.decay_norm_and_bias)
    parts = []
    if optim.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    if optim.name == "sgd":
        if optim.weight_decay > 0:
            parts.append(optax.add_decayed_weights(optim.weight_decay, mask))
        parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
    elif optim.name == "adamw":
        parts.append(
            optax.adamw(schedule, optim.b1, optim.b2, weight_decay=optim.weight_decay, mask=mask)
        )
    elif optim.name == "adam":
        if optim.weight_decay > 0:
            parts.append(optax.add_decayed_weights(optim.weight_decay, mask))
        parts.append(optax.adam(schedule, optim.b1, optim.b2))
    else:
        raise ConfigError(f"optim.name: unknown {optim.name!r}")
    return optax.chain(*parts)


# ------------------------------------------------------------------------------- steps


def normalization(
    config: ml_collections.ConfigDict, train_images: np.ndarray
) -> tuple[float | None, float | None]:
    """(mean, std) so that the model sees (pixels - mean) / std; (None, None) = per image."""
    mode = config.data.normalize
    if mode == "per_image":
        return None, None
    if mode == "dataset":
        sample = train_images[:: max(1, len(train_images) // 4096)].astype(np.float64)
        return float(sample.mean()), float(max(sample.std(), 1.0))
    if mode == "unit":
        return 0.0, 255.0
    if mode == "symmetric":
        return 127.5, 127.5
    raise ConfigError(
        f"data.normalize: unknown {mode!r}, expected dataset, per_image, unit or symmetric"
    )


def normalize_images(x, norm):
    """float32[..., H, W] pixels -> model input. norm = (mean, std), or (None, None) for
    per-image standardisation (each image to zero mean, unit variance: removes the large
    lighting and skin-tone differences between faces)."""
    mean, std = norm
    if mean is None:
        m = jnp.mean(x, axis=(-2, -1), keepdims=True)
        s = jnp.std(x, axis=(-2, -1), keepdims=True)
        return (x - m) / jnp.maximum(s, 1.0)
    return (x - mean) / std


def create_train_state(model, tx, seed: int, image_shape, mesh) -> TrainState:
    def init():
        key = jax.random.PRNGKey(seed)
        dummy = jnp.zeros((1, *image_shape, 1), jnp.float32)
        variables = model.init({"params": key, "dropout": key}, dummy, train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            lr_scale=jnp.ones((), jnp.float32),
        )

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def gather_examples(data, batch):
    """The two examples of each index record: float32 images [B, H, W] and targets [B, K].

    Device placement: `data` holds the dataset and `batch` indices i, j. Streaming placement:
    `data` is empty and the host already gathered uint8 images xi, xj and targets ti, tj.
    """
    if "xi" in batch:
        xi, xj, ti, tj = batch["xi"], batch["xj"], batch["ti"], batch["tj"]
    else:
        xi, xj = data["images"][batch["i"]], data["images"][batch["j"]]
        ti, tj = data["targets"][batch["i"]], data["targets"][batch["j"]]
    return xi.astype(jnp.float32), xj.astype(jnp.float32), ti, tj


def make_train_step(model, tx, config, norm: tuple[float, float], keep_frozen_stats=None):
    """train_step(state, data, batch) -> (state, metric sums).

    data: {"images": uint8[N, H, W], "targets": float32[N, K]} on the device (replicated).
    batch: {"i", "j": int32[B], "lam", "weight": float32[B]} index records (batch-sharded).
    keep_frozen_stats(old, new, step): BatchNorm statistics to keep (transfer.py), or None.
    """
    augment = make_augment(config.augment.ops)
    base_key = jax.random.PRNGKey(config.train.seed)
    smoothing = config.train.label_smoothing
    nan_step = config.train.debug_nan_step
    # float16 activations need the loss scaled up so that small gradients do not flush to zero.
    loss_scale = config.train.loss_scale or (1024.0 if config.train.dtype == "float16" else 1.0)

    def train_step(state: TrainState, data, batch):
        key = jax.random.fold_in(base_key, state.step)
        aug_key, drop_key = jax.random.split(key)
        lam = batch["lam"]
        xi, xj, ti, tj = gather_examples(data, batch)
        x = xi + lam[:, None, None] * (xj - xi)
        if config.data.median_filter:
            x = median3x3(x)
        targets = ti + lam[:, None] * (tj - ti)
        x, targets = augment(x, targets, aug_key)
        x = normalize_images(x, norm)[..., None]
        k = targets.shape[-1]
        smoothed = targets * (1.0 - smoothing) + smoothing / k

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                rngs={"dropout": drop_key},
                mutable=["batch_stats"],
            )
            per_example = optax.softmax_cross_entropy(logits, smoothed)
            loss = jnp.mean(per_example * batch["weight"])
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
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        never = jnp.iinfo(jnp.int32).max
        metrics = {
            "loss_sum": jnp.where(ok, jnp.sum(per_example), 0.0),
            "correct": jnp.where(ok, jnp.sum(correct.astype(jnp.float32)), 0.0),
            "count": jnp.where(ok, jnp.asarray(per_example.shape[0], jnp.float32), 0.0),
            "bad_loss_step": jnp.where(loss_ok, never, state.step + 1),
            "bad_grad_step": jnp.where(grad_ok, never, state.step + 1),
        }
        new_state = state.replace(
            step=jnp.where(ok, state.step + 1, state.step),
            params=keep(params, state.params),
            batch_stats=keep(batch_stats, state.batch_stats),
            opt_state=keep(opt_state, state.opt_state),
        )
        return new_state, metrics

    return train_step


def make_predict(
    model, norm: tuple[float, float], tta: str, median_filter: bool = False, crop: float = 0.9
):
    """predict(variables, images uint8[N,H,W], idx int32[B]) -> probabilities float32[B, K].

    With test-time augmentation the softmax outputs of the views are averaged.
    """
    tta_views(jnp.zeros((1, 4, 4)), tta, crop)  # rejects an unknown mode now

    def predict(variables, images, idx):
        x = images[idx].astype(jnp.float32)
        if median_filter:
            x = median3x3(x)
        views = tta_views(x, tta, crop)
        v, b, h, w = views.shape
        x = normalize_images(views.reshape(v * b, h, w), norm)[..., None]
        probs = jax.nn.softmax(model.apply(variables, x, train=False))
        return probs.reshape(v, b, -1).mean(axis=0)

    return predict


def predict_split(predict_fn, variables, images, num: int, batch_size: int, mesh) -> np.ndarray:
    """Runs `predict_fn` over images[0:num] in padded, batch-sharded chunks. float32[num, K]."""
    n_dev = mesh.size
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    outs = []
    for start in range(0, num, batch_size):
        idx = np.arange(start, start + batch_size) % max(num, 1)
        local = idx.reshape(jax.process_count(), -1)[jax.process_index()]
        g = parallel.global_batch({"idx": local.astype(np.int32)}, mesh)["idx"]
        outs.append(np.asarray(predict_fn(variables, images, g))[: num - start])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------------------- the loop


class MetricLog:
    """metrics.jsonl (appended and flushed per write, survives a kill) + TensorBoard.

    The TensorBoard writer (clu, i.e. TensorFlow's summary ops: ~1.5 s to set up) is created at
    the first write, after the first train step has been dispatched, together with the
    run-start summaries given as `on_open(writer)`."""

    def __init__(self, workdir: str, on_open=None):
        self.workdir = workdir
        self.on_open = on_open
        self.is_main = jax.process_index() == 0
        self._writer = None
        self.path = os.path.join(workdir, "metrics.jsonl")

    @property
    def writer(self):
        if self._writer is None:
            from ferjax.data.pipeline import hide_gpus_from_tensorflow

            hide_gpus_from_tensorflow()  # clu's TensorBoard writer is TensorFlow
            from clu import metric_writers

            self._writer = metric_writers.create_default_writer(
                self.workdir, just_logging=not self.is_main, asynchronous=False
            )
            if self.on_open is not None:
                self.on_open(self._writer)
        return self._writer

    def write(self, step: int, split: str, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
        if self.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def _val_scalars(report: dict) -> dict:
    out = {k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "loss")}
    for name, m in report["per_class"].items():
        out[f"recall_{name}"] = m["recall"]
    return out


def _is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def _report_with_loss(labels, probs, class_names, split):
    p = probs[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.maximum(p, 1e-12)))) if len(labels) else 0.0
    return classification_report(labels, probs, class_names, split, loss=loss)


def _one_hot_targets(split, num_classes: int) -> np.ndarray:
    if split.targets is not None:
        return split.targets.astype(np.float32)
    return np.eye(num_classes, dtype=np.float32)[split.labels]


# Config keys that may differ between a run and its resumption: they do not change results.
RUNTIME_KEYS = (
    "train.halt_after_steps",
    "train.allow_config_change",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
    "data.cache_dir",
    "train.peak_flops_per_device",
    "train.verbosity",
    "train.progress_seconds",
    "train.compilation_cache_dir",
)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config_unchanged(saved: dict | None, config: ml_collections.ConfigDict, where: str):
    """Refuses to resume with a different config (unless train.allow_config_change)."""
    if saved is None or config.train.allow_config_change:
        return
    now = _flatten(json.loads(config.to_json_best_effort()))
    before = _flatten(saved)
    # Keys the checkpointed run did not have (added by a newer ferjax) are not differences.
    differ = sorted(k for k in before if k not in RUNTIME_KEYS and k in now and now[k] != before[k])
    differ += sorted(k for k in before if k not in now and k not in RUNTIME_KEYS)
    if differ:
        shown = ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in differ[:5])
        raise CheckpointError(
            f"{where}: the config differs from the checkpointed run in {shown}; use a new "
            "workdir, or --config.train.allow_config_change=true to resume anyway"
        )


class StopSignal:
    """Turns SIGTERM/SIGINT into a request to checkpoint and exit at the next step boundary."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def requested(self, sync: bool) -> bool:
        """Whether to stop now. With several processes, all of them must agree on the same
        step, so the flag is only exchanged (an all-gather) when `sync` is true."""
        if jax.process_count() == 1:
            return self.signum is not None
        if not sync:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
        return bool(np.any(flags))

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def choose_placement(setting: str, image_bytes: int, fraction: float = 0.5) -> str:
    """device (the dataset lives on the accelerator; the host sends index records) or stream
    (tf.data gathers uint8 image batches on the host). auto picks device unless the images
    would take more than `fraction` of the first device's memory."""
    if setting != "auto":
        return setting
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit and image_bytes > fraction * limit:
        return "stream"
    return "device"


def say(message: str) -> None:
    """Prints on process 0 only (one line per event, not one per host)."""
    if jax.process_index() == 0:
        print(message, flush=True)


def _accumulate(sums, m):
    if sums is None:
        return m
    return {
        k: jnp.minimum(sums[k], v) if k.startswith("bad_") else sums[k] + v for k, v in m.items()
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, data: FerData
) -> dict | None:
    """Trains on `data`, resuming from the workdir's latest checkpoint, then evaluates the best
    checkpoint on the test split. Returns the test report (None if halted early)."""
    from ferjax import plots, summaries
    from ferjax.progress import Progress

    mesh = parallel.make_mesh()
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    k = data.num_classes
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))

    sampler = Sampler(
        train.labels,
        k,
        config.sampling.method,
        config.train.seed,
        parse_strategy(config.sampling.strategy, data.class_names),
        images=train.images,
        k_neighbors=config.sampling.k_neighbors,
        features=config.sampling.features,
        pca_components=config.sampling.pca_components,
        class_names=data.class_names,
    )
    global_batch = config.train.batch_size
    steps_per_epoch = len(sampler) // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size: {global_batch} is larger than the {len(sampler)} training "
            "records of one epoch"
        )
    total_steps = steps_per_epoch * config.train.num_epochs
    norm = normalization(config, train.images)

    model = create_model(config, k)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    state = create_train_state(model, tx, config.train.seed, data.image_shape, mesh)
    state = transfer.init_from(config, state, workdir)
    train_targets = _one_hot_targets(train, k)
    placement = choose_placement(config.data.placement, train.images.nbytes)
    if placement == "device":
        on_device = parallel.replicate({"images": train.images, "targets": train_targets}, mesh)
        host_arrays = None
    else:
        on_device, host_arrays = {}, {"images": train.images, "targets": train_targets}
    say(f"placement: {placement} ({train.images.nbytes / 2**20:.1f} MiB of images)")
    val_images = parallel.replicate(val.images, mesh)
    train_step = jax.jit(
        make_train_step(
            model, tx, config, norm, transfer.make_keep_frozen_stats(config, steps_per_epoch)
        ),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=(0,),
    )
    predict = jax.jit(
        make_predict(model, norm, config.eval.tta, config.data.median_filter, config.eval.tta_crop),
        out_shardings=parallel.replicated(mesh),
    )
    config_dict = json.loads(config.to_json_best_effort())

    ckpts = Checkpoints(workdir)
    restored, meta = ckpts.restore_latest(state)
    if restored is not None:
        check_config_unchanged(meta.get("config"), config, workdir)
        state = restored
        say(f"resumed from step {int(state.step)} of {total_steps}")
    meta = meta or {"best_value": None, "best_step": None}
    if is_main:
        info = {
            "class_names": list(data.class_names),
            "image_shape": list(data.image_shape),
            "normalization": {"mean": norm[0], "std": norm[1]},
            "model": config.model.name,
        }
        if config.model.name == "resnet50":
            info["style"] = transfer.resnet_style(config)
        with open(os.path.join(workdir, "model_info.json"), "w") as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        with open(os.path.join(workdir, "sampling_report.json"), "w") as f:
            json.dump(sampler.report(), f, indent=2)
    say(sampler.summary_line())

    def run_start_summaries(writer):
        summaries.write_hparams(writer, config)
        summaries.write_augmented_inputs(writer, 0, train.images, config)

    fresh_run = is_main and int(state.step) == 0
    log = MetricLog(workdir, run_start_summaries if fresh_run else None)
    progress = Progress(
        config.train.num_epochs,
        steps_per_epoch,
        global_batch,
        config.train.verbosity,
        config.train.progress_seconds,
    )

    def meta_at(step: int) -> dict:
        return {
            "step": step,
            "epoch": step // steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
            "best_metric": config.train.best_metric,
            "best_value": meta["best_value"],
            "best_step": meta["best_step"],
            "config": config_dict,
        }

    def finish(message: str):
        progress.close()
        ckpts.wait()
        ckpts.close()
        log.close()
        say(message)

    flops_per_step = None

    def throughput(steps: float, seconds: float) -> dict:
        """steps/s, images/s (total and per device) and, with train.peak_flops_per_device,
        model FLOPs utilisation from XLA's cost analysis of the compiled step."""
        out = {
            "steps_per_second": steps / seconds,
            "images_per_second": steps * global_batch / seconds,
            "images_per_second_per_device": steps * global_batch / seconds / mesh.size,
        }
        if flops_per_step and config.train.peak_flops_per_device > 0:
            peak = config.train.peak_flops_per_device * mesh.size
            out["mfu"] = flops_per_step * steps / seconds / peak
        return out

    step = int(state.step)
    if config.train.peak_flops_per_device > 0 and step < total_steps:
        # The first batch exactly as the loop gets it (this process's slice; host-gathered
        # images under streaming placement).
        local = next(
            index_batches(
                sampler.epoch_records(0),
                global_batch,
                jax.process_index(),
                jax.process_count(),
                host_arrays=host_arrays,
            )
        )
        cost = train_step.lower(
            state, on_device, parallel.global_batch(local, mesh)
        ).cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops_per_step = float((cost or {}).get("flops", 0.0)) or None
        say(f"model FLOPs per step (XLA cost analysis): {flops_per_step or 0:.3g}")
    sums, t_log, t_ckpt = None, time.time(), time.time()
    t_first = time.time()
    halt = config.train.halt_after_steps
    rollbacks = 0
    with StopSignal() as stop:
        while step < total_steps:
            epoch = step // steps_per_epoch
            records = sampler.epoch_records(epoch)
            batches = index_batches(
                records,
                global_batch,
                jax.process_index(),
                jax.process_count(),
                start_step=step - epoch * steps_per_epoch,
                host_arrays=host_arrays,
            )
            t_epoch = time.time()
            progress.begin_epoch(epoch, step - epoch * steps_per_epoch)
            rolled_back = False
            for local in batches:
                state, m = train_step(state, on_device, parallel.global_batch(local, mesh))
                if t_first is not None:
                    # The one-off wait that times start-up (bench/startup.py reads this line).
                    t_run = time.time()
                    jax.block_until_ready(m)
                    say(
                        f"first train step done: traced and compiled in {t_run - t_first:.1f}s, "
                        f"ran in {time.time() - t_run:.1f}s"
                    )
                    t_first = None
                sums = _accumulate(sums, m)
                step += 1
                progress.step(m)
                end_of_epoch = step % steps_per_epoch == 0
                every = config.train.checkpoint_every_steps
                minutes = config.train.checkpoint_every_minutes
                save_now = (every and step % every == 0) or (
                    minutes and jax.process_count() == 1 and time.time() - t_ckpt > 60 * minutes
                )
                sync_point = step % config.train.log_every_steps == 0 or end_of_epoch
                stopping = stop.requested(sync_point) or (halt and step >= halt)
                if step % config.train.log_every_steps == 0 or end_of_epoch or save_now or stopping:
                    s = jax.device_get(sums)
                    bad = min(int(s["bad_loss_step"]), int(s["bad_grad_step"]))
                    if bad != np.iinfo(np.int32).max:
                        what = "loss" if int(s["bad_loss_step"]) == bad else "gradient"
                        good = ckpts.latest.latest_step()
                        if config.train.on_nan == "rollback" and good is not None and rollbacks < 3:
                            rollbacks += 1
                            ckpts.wait()
                            state, _ = ckpts.restore_latest(state)
                            state = state.replace(
                                lr_scale=state.lr_scale * config.train.nan_lr_factor
                            )
                            step, sums = int(state.step), None
                            say(
                                f"warning: non-finite {what} at step {bad}; rolled back to step "
                                f"{step} with learning-rate scale {float(state.lr_scale):g}"
                            )
                            rolled_back = True
                            progress.close()
                            break
                        progress.close()
                        ckpts.wait()
                        ckpts.close()
                        log.close()
                        raise TrainingDiverged(
                            f"non-finite {what} at step {bad}; training stopped, the last good "
                            f"checkpoint is step {good} in {ckpts.latest.directory}"
                        )
                    elapsed = max(time.time() - t_log, 1e-9)
                    progress.train_window(s)
                    if s["count"] > 0:
                        scalars = {
                            "loss": s["loss_sum"] / s["count"],
                            "accuracy": s["correct"] / s["count"],
                            "learning_rate": schedule(step - 1) * float(state.lr_scale),
                        }
                        scalars.update(throughput(s["count"] / global_batch, elapsed))
                        log.write(step, "train", scalars)
                    sums, t_log = None, time.time()
                if (save_now or stopping) and not end_of_epoch:
                    ckpts.save_latest(step, state, meta_at(step))
                    t_ckpt = time.time()
                if stopping and not end_of_epoch:
                    break
            if rolled_back:
                continue
            if step % steps_per_epoch == 0:
                variables = {"params": state.params, "batch_stats": state.batch_stats}
                probs = predict_split(
                    predict, variables, val_images, len(val), config.train.eval_batch_size, mesh
                )
                report = _report_with_loss(val.labels, probs, data.class_names, "val")
                log.write(step, "val", _val_scalars(report))
                value = report[config.train.best_metric]
                if _is_better(config.train.best_metric, value, meta["best_value"]):
                    meta["best_value"], meta["best_step"] = value, step
                    ckpts.save_best(step, state, meta_at(step))
                ckpts.save_latest(step, state, meta_at(step))
                t_ckpt = time.time()
                if is_main:
                    summaries.write_confusion_matrix(log.writer, step, report)
                progress.end_epoch(step, report, time.time() - t_epoch)
            if stop.requested(sync=True):
                finish(f"stopped by signal at step {step}; checkpoint saved, re-run to resume")
                raise Preempted(f"stopped by signal at step {step}; re-run to resume")
            if halt and step >= halt:
                finish(f"halted at step {step} (train.halt_after_steps); re-run to resume")
                return None

    ckpts.wait()
    if ckpts.best.latest_step() is not None:
        state, _ = ckpts.restore_best(state)
    ckpts.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    test_images = parallel.replicate(test.images, mesh)
    probs = predict_split(
        predict, variables, test_images, len(test), config.train.eval_batch_size, mesh
    )
    report = _report_with_loss(test.labels, probs, data.class_names, "test")
    report["tta"] = config.eval.tta
    report["checkpoint_step"] = int(state.step)
    log.write(int(state.step), "test", _val_scalars(report))
    if is_main:
        summaries.write_confusion_matrix(log.writer, int(state.step), report)
    log.close()
    if is_main:
        with open(os.path.join(workdir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        plots.training_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "training_curves.png")
        )
        plots.report_figures(workdir, report, test.labels, probs, test.images, test.rows)
        print(
            f"test accuracy {report['accuracy']:.4f} balanced {report['balanced_accuracy']:.4f} "
            f"macro-F1 {report['macro_f1']:.4f} -> {os.path.join(workdir, 'report.json')}",
            flush=True,
        )
    return report

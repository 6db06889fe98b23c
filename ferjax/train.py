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
from ferjax.augment import make_augment
from ferjax.checkpoint import Checkpoints
from ferjax.data.dataset import FerData
from ferjax.data.pipeline import index_batches
from ferjax.data.sampling import Sampler, parse_strategy
from ferjax.errors import ConfigError
from ferjax.metrics import classification_report
from ferjax.models import create_model


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


# ------------------------------------------------------------------------------- optimiser


def decay_mask(params, decay_norm_and_bias: bool):
    """True for the leaves that get weight decay: conv/dense kernels (and, optionally, all)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: decay_norm_and_bias or getattr(path[-1], "key", None) == "kernel", params
    )


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int):
    total = max(num_epochs * steps_per_epoch, 1)
    warmup = min(int(round(optim.warmup_epochs * steps_per_epoch)), total)
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
) -> tuple[float, float]:
    """(mean, std) so that the model sees (pixels - mean) / std."""
    mode = config.data.normalize
    if mode == "dataset":
        sample = train_images[:: max(1, len(train_images) // 4096)].astype(np.float64)
        return float(sample.mean()), float(max(sample.std(), 1.0))
    if mode == "unit":
        return 0.0, 255.0
    if mode == "symmetric":
        return 127.5, 127.5
    raise ConfigError(f"data.normalize: unknown {mode!r}, expected dataset, unit or symmetric")


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
        )

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def make_train_step(model, tx, config, norm: tuple[float, float], keep_frozen_stats=None):
    """train_step(state, data, batch) -> (state, metric sums).

    data: {"images": uint8[N, H, W], "targets": float32[N, K]} on the device (replicated).
    batch: {"i", "j": int32[B], "lam", "weight": float32[B]} index records (batch-sharded).
    keep_frozen_stats(old, new, step): BatchNorm statistics to keep (transfer.py), or None.
    """
    augment = make_augment(config.augment.ops)
    base_key = jax.random.PRNGKey(config.train.seed)
    smoothing = config.train.label_smoothing
    mean, std = norm

    def train_step(state: TrainState, data, batch):
        key = jax.random.fold_in(base_key, state.step)
        aug_key, drop_key = jax.random.split(key)
        lam = batch["lam"]
        xi = data["images"][batch["i"]].astype(jnp.float32)
        xj = data["images"][batch["j"]].astype(jnp.float32)
        x = xi + lam[:, None, None] * (xj - xi)
        ti, tj = data["targets"][batch["i"]], data["targets"][batch["j"]]
        targets = ti + lam[:, None] * (tj - ti)
        x = augment(x, aug_key)
        x = ((x - mean) / std)[..., None]
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
            return loss, (logits, per_example, updates["batch_stats"])

        grads, (logits, per_example, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if keep_frozen_stats is not None:
            batch_stats = keep_frozen_stats(state.batch_stats, batch_stats, state.step)
        correct = jnp.argmax(logits, -1) == jnp.argmax(targets, -1)
        metrics = {
            "loss_sum": jnp.sum(per_example),
            "correct": jnp.sum(correct.astype(jnp.float32)),
            "count": jnp.asarray(per_example.shape[0], jnp.float32),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def make_predict(model, norm: tuple[float, float], tta: str):
    """predict(variables, images uint8[N,H,W], idx int32[B]) -> probabilities float32[B, K]."""
    mean, std = norm
    if tta not in ("none", "flip"):
        raise ConfigError(f"eval.tta: unknown {tta!r}, expected none or flip")

    def predict(variables, images, idx):
        x = ((images[idx].astype(jnp.float32) - mean) / std)[..., None]
        probs = jax.nn.softmax(model.apply(variables, x, train=False))
        if tta == "flip":
            flipped = jax.nn.softmax(model.apply(variables, x[:, :, ::-1], train=False))
            probs = (probs + flipped) / 2.0
        return probs

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
    """metrics.jsonl (appended and flushed per write, survives a kill) + TensorBoard."""

    def __init__(self, workdir: str):
        from clu import metric_writers

        self.is_main = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(
            workdir, just_logging=not self.is_main, asynchronous=False
        )
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, step: int, split: str, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
        if self.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


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


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, data: FerData
) -> dict | None:
    """Trains on `data`, resuming from the workdir's latest checkpoint, then evaluates the best
    checkpoint on the test split. Returns the test report (None if halted early)."""
    from ferjax import plots

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
    on_device = parallel.replicate(
        {"images": train.images, "targets": _one_hot_targets(train, k)}, mesh
    )
    val_images = parallel.replicate(val.images, mesh)
    train_step = jax.jit(
        make_train_step(
            model, tx, config, norm, transfer.make_keep_frozen_stats(config, steps_per_epoch)
        ),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=(0,),
    )
    predict = jax.jit(
        make_predict(model, norm, config.eval.tta), out_shardings=parallel.replicated(mesh)
    )

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

    ckpts = Checkpoints(workdir)
    restored, meta = ckpts.restore_latest(state)
    meta = meta or {"best_value": None, "best_step": None}
    if restored is not None:
        state = restored
        print(f"resumed from step {int(state.step)} of {total_steps}", flush=True)
    log = MetricLog(workdir)

    def meta_at(step: int) -> dict:
        return {
            "step": step,
            "epoch": step // steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
            "best_metric": config.train.best_metric,
            "best_value": meta["best_value"],
            "best_step": meta["best_step"],
        }

    step = int(state.step)
    sums, t_log = None, time.time()
    halt = config.train.halt_after_steps
    while step < total_steps:
        epoch = step // steps_per_epoch
        records = sampler.epoch_records(epoch)
        batches = index_batches(
            records,
            global_batch,
            jax.process_index(),
            jax.process_count(),
            start_step=step - epoch * steps_per_epoch,
        )
        t_epoch = time.time()
        for local in batches:
            state, m = train_step(state, on_device, parallel.global_batch(local, mesh))
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            step += 1
            if step % config.train.log_every_steps == 0 or step % steps_per_epoch == 0:
                s = jax.device_get(sums)
                elapsed = max(time.time() - t_log, 1e-9)
                log.write(
                    step,
                    "train",
                    {
                        "loss": s["loss_sum"] / s["count"],
                        "accuracy": s["correct"] / s["count"],
                        "learning_rate": schedule(step - 1),
                        "images_per_second": s["count"] / elapsed,
                    },
                )
                sums, t_log = None, time.time()
            every = config.train.checkpoint_every_steps
            if every and step % every == 0 and step % steps_per_epoch:
                ckpts.save_latest(step, state, meta_at(step))
            if halt and step >= halt and step % steps_per_epoch:
                break
        if halt and step >= halt and step % steps_per_epoch:
            ckpts.save_latest(step, state, meta_at(step))
            ckpts.wait()
            ckpts.close()
            log.close()
            print(f"halted at step {step} (train.halt_after_steps); re-run to resume", flush=True)
            return None

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
        recalls = " ".join(f"{n}={m['recall']:.2f}" for n, m in report["per_class"].items())
        print(
            f"epoch {epoch + 1}/{config.train.num_epochs} step {step}: "
            f"val accuracy {report['accuracy']:.4f} balanced {report['balanced_accuracy']:.4f} "
            f"loss {report['loss']:.4f} | recall {recalls} | {time.time() - t_epoch:.1f}s",
            flush=True,
        )
        if halt and step >= halt:
            ckpts.wait()
            ckpts.close()
            log.close()
            print(f"halted at step {step} (train.halt_after_steps); re-run to resume", flush=True)
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
    log.close()
    if is_main:
        with open(os.path.join(workdir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        plots.training_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "training_curves.png")
        )
        plots.confusion_matrix(report, os.path.join(workdir, "confusion_matrix.png"))
        print(
            f"test accuracy {report['accuracy']:.4f} balanced {report['balanced_accuracy']:.4f} "
            f"macro-F1 {report['macro_f1']:.4f} -> {os.path.join(workdir, 'report.json')}",
            flush=True,
        )
    return report

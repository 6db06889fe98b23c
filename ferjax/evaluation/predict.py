"""Prediction with test-time augmentation, over a whole split, and the evaluation report.

Training's validation and test, `ferjax evaluate`, `ferjax predict` and `ferjax export` all
classify with `make_predict`, so a number in report.json is what a user gets later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.data.preprocess import median3x3, normalize_images
from ferjax.evaluation.metrics import classification_report
from ferjax.evaluation.tta import tta_views
from ferjax.runtime import devices
from ferjax.runtime.platform import host_memory_bytes

# train.best_metric: validation metrics that can pick the best checkpoint (loss: lower wins).
BEST_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "loss")


def make_classify(
    model,
    norm: tuple[float | None, float | None],
    tta: str,
    median_filter: bool = False,
    crop: float = 0.9,
) -> Callable:
    """classify(variables, images uint8[B, H, W, C]) -> probabilities float32[B, K].

    With test-time augmentation (ferjax.evaluation.tta.TTA_MODES) the softmax outputs of the
    views are averaged.
    """
    # Rejects an unknown mode now (traced only: no eager operations to compile).
    jax.eval_shape(lambda x: tta_views(x, tta, crop), jax.ShapeDtypeStruct((1, 4, 4, 1), "f4"))

    def classify(variables, images):
        x = images.astype(jnp.float32)
        if median_filter:
            x = median3x3(x)
        views = tta_views(x, tta, crop)
        v, b = views.shape[:2]
        x = normalize_images(views.reshape(v * b, *views.shape[2:]), norm)
        probs = jax.nn.softmax(model.apply(variables, x, train=False))
        return probs.reshape(v, b, -1).mean(axis=0)

    return classify


def make_predict(
    model,
    norm: tuple[float | None, float | None],
    tta: str,
    median_filter: bool = False,
    crop: float = 0.9,
) -> Callable:
    """predict(variables, images uint8[N, H, W, C], idx int32[B]) -> float32[B, K]: classify
    the images at `idx` of a dataset that stays on the device."""
    classify = make_classify(model, norm, tta, median_filter, crop)

    def predict(variables, images, idx):
        return classify(variables, images[idx])

    return predict


@functools.cache
def memory_budget_bytes(setting_mb: float = 0) -> int:
    """eval.memory_budget_mb in bytes; 0 = a quarter of the first device's memory (of the
    host's available memory on a CPU)."""
    if setting_mb > 0:
        return int(setting_mb * 2**20)
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if not limit:
        limit = host_memory_bytes()
    return int(limit // 4)


def fitting_batch(compile_at, batch_size: int, n_dev: int, budget: int):
    """(batch, compiled): a batch <= batch_size (a multiple of n_dev) whose compiled program's
    temporary memory fits in `budget` bytes, scaled down from the measured need (temporaries
    grow linearly with the batch). compile_at(batch) returns an XLA-compiled program; one
    without a memory analysis keeps batch_size."""
    while True:
        compiled = compile_at(batch_size)
        try:
            temp = compiled.memory_analysis().temp_size_in_bytes
        except Exception:  # noqa: BLE001 - no memory analysis on this platform
            return batch_size, compiled
        if temp <= budget or batch_size <= n_dev:
            return batch_size, compiled
        smaller = int(batch_size * budget / temp * 0.9) // n_dev * n_dev
        batch_size = max(n_dev, min(smaller, batch_size - n_dev))


def predict_split(
    predict_fn,
    variables,
    images,
    num: int,
    batch_size: int,
    mesh,
    memory_budget_mb: float = 0,
    cache: dict | None = None,
) -> np.ndarray:
    """Runs `predict_fn` over images[0:num] in padded, batch-sharded chunks. float32[num, K].

    Evaluation memory is bounded by design: the chunk is the largest batch (at most
    batch_size) whose compiled program, with every test-time view of every image, needs at
    most the memory budget (memory_budget_bytes) for its temporaries. `cache` (a dict the
    caller keeps, e.g. for a run's every validation) keeps the compiled program by (images'
    shape, batch, budget), so repeated evaluations compile once."""
    n_dev = mesh.size
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    batch_size = min(batch_size, max(n_dev, -(-max(num, 1) // n_dev) * n_dev))

    def indices(start, size):
        idx = np.arange(start, start + size) % max(num, 1)
        local = idx.reshape(jax.process_count(), -1)[jax.process_index()]
        return devices.global_batch({"idx": local.astype(np.int32)}, mesh)["idx"]

    def compile_at(size):
        return predict_fn.lower(variables, images, indices(0, size)).compile()

    if hasattr(predict_fn, "lower"):
        budget = memory_budget_bytes(memory_budget_mb)
        key = (tuple(images.shape), batch_size, budget // 2**20)
        cache = {} if cache is None else cache
        if key not in cache:
            cache[key] = fitting_batch(compile_at, batch_size, n_dev, budget)
        batch_size, run = cache[key]
    else:
        run = predict_fn
    outs = []
    for start in range(0, num, batch_size):
        outs.append(np.asarray(run(variables, images, indices(start, batch_size)))[: num - start])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def adjust_tau_setting(config) -> str:
    """eval.logit_adjust_tau normalised: "" (off), "auto" or a number as text."""
    text = str(config.eval.logit_adjust_tau).strip().lower()
    if text == "auto":
        return text
    return "" if float(text) == 0 else text


def adjust_logits(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al. 2021): softmax(log p - tau log prior), whose
    argmax is the balanced decision for tau = 1. float32[N, K]."""
    z = np.log(np.maximum(probs, 1e-30)) - tau * np.log(np.maximum(prior, 1e-12))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


TAU_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.25), 2))


def choose_tau(labels: np.ndarray, probs: np.ndarray, prior: np.ndarray, metric: str) -> float:
    """The tau of TAU_GRID whose adjusted predictions score best on (labels, probs) by
    `metric` (the smallest such tau on ties)."""
    best, best_tau = None, 0.0
    for tau in TAU_GRID:
        names = [str(c) for c in range(probs.shape[1])]
        report = report_with_loss(labels, adjust_logits(probs, prior, tau), names, "")
        value = report[metric]
        if best is None or is_better(metric, value, best):
            best, best_tau = value, float(tau)
    return best_tau


def report_with_loss(labels: np.ndarray, probs: np.ndarray, class_names, split: str) -> dict:
    """classification_report plus the mean cross-entropy of the true labels."""
    p = probs[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.maximum(p, 1e-12)))) if len(labels) else 0.0
    return classification_report(labels, probs, class_names, split, loss=loss)


def report_scalars(report: dict) -> dict:
    """The scalars logged per evaluation: overall metrics and per-class recall."""
    out = {k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "loss")}
    for name, m in report["per_class"].items():
        out[f"recall_{name}"] = m["recall"]
    return out


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best

"""Prediction with test-time augmentation, over a whole split, and the evaluation report.

Training's validation and test, `ferjax evaluate`, `ferjax predict` and `ferjax export` all
classify with `make_predict`, so a number in report.json is what a user gets later.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.data.augment import tta_views
from ferjax.data.preprocess import median3x3, normalize_images
from ferjax.evaluation.metrics import classification_report
from ferjax.runtime import devices

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

    With test-time augmentation (augment.TTA_MODES) the softmax outputs of the views are
    averaged.
    """
    tta_views(jnp.zeros((1, 4, 4, 1)), tta, crop)  # rejects an unknown mode now

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


def predict_split(predict_fn, variables, images, num: int, batch_size: int, mesh) -> np.ndarray:
    """Runs `predict_fn` over images[0:num] in padded, batch-sharded chunks. float32[num, K]."""
    n_dev = mesh.size
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    outs = []
    for start in range(0, num, batch_size):
        idx = np.arange(start, start + batch_size) % max(num, 1)
        local = idx.reshape(jax.process_count(), -1)[jax.process_index()]
        g = devices.global_batch({"idx": local.astype(np.int32)}, mesh)["idx"]
        outs.append(np.asarray(predict_fn(variables, images, g))[: num - start])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


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

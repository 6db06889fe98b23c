"""Classification metrics people care about on imbalanced FER data."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64[K, K], rows = true class, columns = predicted class."""
    flat = np.asarray(labels, np.int64) * num_classes + np.asarray(preds, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(
    labels: np.ndarray, probs: np.ndarray, class_names, split: str, loss: float | None = None
) -> dict:
    """The report.json contract: accuracy, balanced_accuracy, macro_f1, per_class
    (precision, recall, f1, support), confusion_matrix (rows = true), class_names, split."""
    k = len(class_names)
    preds = np.argmax(probs, axis=-1)
    cm = confusion_matrix(labels, preds, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    report = {
        "split": split,
        "class_names": list(class_names),
        "examples": int(len(labels)),
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(labels, probs),
    }
    if loss is not None:
        report["loss"] = float(loss)
    return report


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence, equal-width bins."""
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)

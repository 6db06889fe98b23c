"""Figures written to the workdir (matplotlib, non-interactive backend)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ferjax.data.dataset import Split  # noqa: E402
from ferjax.evaluation.metrics import expected_calibration_error  # noqa: E402
from ferjax.runtime.workdir import Workdir  # noqa: E402


def read_metrics(path: str) -> dict[str, dict[int, dict]]:
    """metrics.jsonl -> {split: {step: record}}; a later line for the same step wins (resume)."""
    out: dict[str, dict[int, dict]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                out.setdefault(r["split"], {})[int(r["step"])] = r
    return out


def training_curves(metrics_path: str, out_path: str) -> None:
    m = read_metrics(metrics_path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        rows = sorted(m.get(split, {}).items())
        if not rows:
            continue
        steps = [s for s, _ in rows]
        ax_loss.plot(steps, [r["loss"] for _, r in rows], style, label=split)
        ax_acc.plot(steps, [r["accuracy"] for _, r in rows], style, label=split)
        if split == "val":
            ax_acc.plot(
                steps, [r["balanced_accuracy"] for _, r in rows], "s--", label="val balanced"
            )
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def confusion_matrix_figure(report: dict):
    """Counts and row-normalised confusion matrices side by side, with class names."""
    cm = np.asarray(report["confusion_matrix"], np.float64)
    names = report["class_names"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(6 + len(names), 3 + len(names) / 2))
    for ax, mat, title, fmt in (
        (axes[0], cm, "counts", "{:.0f}"),
        (axes[1], norm, "row-normalised (recall)", "{:.2f}"),
    ):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{report['split']}: {title}")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    fmt.format(mat[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    fig.tight_layout()
    return fig


DPI = 100


def save(fig, out_path: str) -> None:
    """Writes a figure as PNG and closes it."""
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)


def precision_recall_figure(report: dict):
    """Per-class precision, recall and F1 as grouped bars (support under each name)."""
    names = report["class_names"]
    per = report["per_class"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=bars_size(len(names)))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        values = [per[n][key] for n in names]
        ax.bar(x + offset, values, width=0.27, label=key)
    ax.set_xticks(x, [f"{n}\n({per[n]['support']})" for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(
        f"{report['split']}: per-class precision / recall / F1 "
        f"(balanced acc {report['balanced_accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f})",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def bars_size(num_classes: int) -> tuple[float, float]:
    return (max(6.0, 1.5 + 0.9 * num_classes), 4.0)


def reliability_figure(labels: np.ndarray, probs: np.ndarray, split: str, bins: int = 15):
    """Accuracy vs confidence of the top-1 prediction in equal-width bins (the ECE bins), with
    the fraction of examples per bin underneath."""
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    which = np.minimum((conf * bins).astype(int), bins - 1)
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    count = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins) / np.maximum(count, 1)
    mean_conf = np.bincount(which, weights=conf, minlength=bins) / np.maximum(count, 1)
    ece = expected_calibration_error(labels, probs, bins)
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=RELIABILITY_SIZE, gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    has = count > 0
    ax.bar(centers[has], acc[has], width=1 / bins, edgecolor="black", alpha=0.8, label="accuracy")
    # The gap is drawn hatched, not as a translucent fill: over an accuracy bar (confidence
    # below accuracy) a translucent red would blend into a colour the legend does not show.
    ax.bar(
        centers[has],
        (mean_conf - acc)[has],
        bottom=acc[has],
        width=1 / bins,
        color="none",
        edgecolor="tab:red",
        hatch="///",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{split}: reliability (ECE {ece:.3f}, {len(labels)} examples)")
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centers, count / max(len(labels), 1), width=1 / bins, color="gray")
    ax_n.set_xlabel("confidence (top-1 probability)")
    ax_n.set_ylabel("fraction")
    fig.tight_layout()
    return fig


RELIABILITY_SIZE = (5.0, 6.0)


def confident_mistakes(
    labels: np.ndarray, probs: np.ndarray, count: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `count` wrong predictions with the highest confidence, most confident
    first, and their confidences. The usual place to find mislabelled data."""
    preds = probs.argmax(axis=-1)
    wrong = np.flatnonzero(preds != labels)
    conf = probs[wrong, preds[wrong]]
    order = np.argsort(-conf, kind="stable")[:count]
    return wrong[order], conf[order]


MISTAKE_COLUMNS = 8


def mistakes_size(count: int) -> tuple[float, float]:
    rows = max(1, -(-count // MISTAKE_COLUMNS))
    return (MISTAKE_COLUMNS * 1.4, rows * 1.7 + 0.5)


def mistakes_figure(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names,
    split: str,
    rows: np.ndarray | None = None,
    count: int = 24,
):
    """A grid of the most confidently wrong images: true label, prediction and confidence
    (and the source row, to look the example up). Drawn as one mosaic image with a caption
    above each face (one axes instead of one per face: a fifth of the drawing time)."""
    idx, conf = confident_mistakes(labels, probs, count)
    grid_rows = max(1, -(-count // MISTAKE_COLUMNS))
    fig = plt.figure(figsize=mistakes_size(count))
    h, w = images.shape[1:3]
    colour = images.ndim == 4 and images.shape[-1] == 3
    # Each cell: a caption band (three lines of 7 pt) above the face, and a margin around both.
    band = int(round(h * 0.62))
    gap = max(1, w // 12)
    cell_h, cell_w = band + h + gap, w + gap
    canvas = np.full(
        (grid_rows * cell_h, MISTAKE_COLUMNS * cell_w, *((3,) if colour else ())), 255, np.uint8
    )
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.45 / fig.get_figheight()))
    for k, (i, c) in enumerate(zip(idx, conf)):
        top, left = (k // MISTAKE_COLUMNS) * cell_h + band, (k % MISTAKE_COLUMNS) * cell_w
        face = images[i] if colour else images[i].reshape(h, w)
        canvas[top : top + h, left : left + w] = face
        where = f"row {int(rows[i])}" if rows is not None else ""
        ax.text(
            left + w / 2,
            top - 1,
            f"true {class_names[labels[i]]}\npred {class_names[probs[i].argmax()]} {c:.2f}"
            f"\n{where}",
            fontsize=7,
            ha="center",
            va="bottom",
        )
    ax.imshow(canvas, cmap=None if colour else "gray", vmin=0, vmax=255)
    ax.set_axis_off()
    fig.suptitle(
        f"{split}: {len(idx)} most confidently wrong of {int((probs.argmax(-1) != labels).sum())} "
        "errors",
        fontsize=10,
    )
    return fig


def report_figures(
    workdir: Workdir,
    report: dict,
    split: Split,
    probs: np.ndarray,
    split_name: str = "",
    data: str = "",
) -> list[str]:
    """Writes the evaluation figures of one split; returns their paths: confusion_matrix,
    per_class (precision/recall bars), reliability, mistakes (workdir.figure names: training
    writes `<name>.png`, evaluate `<name>_<split>[_<data>].png`)."""
    names = report["class_names"]
    figures = {
        "confusion_matrix": lambda: confusion_matrix_figure(report),
        "per_class": lambda: precision_recall_figure(report),
        "reliability": lambda: reliability_figure(split.labels, probs, report["split"]),
        "mistakes": lambda: mistakes_figure(
            split.images, split.labels, probs, names, report["split"], split.rows
        ),
    }
    paths = []
    for name, make in figures.items():
        path = workdir.figure(name, split_name, data)
        save(make(), path)
        paths.append(path)
    return paths


def comparison_figure(reports: list[dict], names: list[str]):
    """Grouped bars: overall metrics, per-class recall, per-class F1 (one colour per run)."""
    classes = []
    for r in reports:
        classes += [c for c in r["class_names"] if c not in classes]
    panels = [
        ("overall", ["accuracy", "balanced_accuracy", "macro_f1"], lambda r, k: r.get(k)),
        ("per-class recall", classes, lambda r, c: r["per_class"].get(c, {}).get("recall")),
        ("per-class F1", classes, lambda r, c: r["per_class"].get(c, {}).get("f1")),
    ]
    fig, axes = plt.subplots(3, 1, figsize=figure_size(len(classes)))
    bar = 0.8 / len(reports)
    for ax, (title, keys, get) in zip(axes, panels):
        x = np.arange(len(keys))
        for i, (r, name) in enumerate(zip(reports, names)):
            values = [get(r, k) for k in keys]
            values = [np.nan if v is None else v for v in values]
            ax.bar(x - 0.4 + bar * (i + 0.5), values, width=bar, label=name)
        ax.set_xticks(x, keys)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def figure_size(num_classes: int) -> tuple[float, float]:
    return (max(8.0, 1.5 + 1.1 * num_classes), 9.0)

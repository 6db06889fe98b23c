"""Figures written to the workdir (matplotlib, non-interactive backend)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def confusion_matrix(report: dict, out_path: str) -> None:
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
    fig.savefig(out_path, dpi=100)
    plt.close(fig)

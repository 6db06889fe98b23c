"""TensorBoard summaries beyond scalars: hyperparameters (HParams plugin), a grid of augmented
training inputs, and the confusion matrix as an image. All take the run's
TensorBoard writer (ferjax.training.tensorboard)."""

from __future__ import annotations

import json

import jax
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from ferjax.data.augment import make_augment
from ferjax.evaluation import plots


def hparams(config: ml_collections.ConfigDict) -> dict:
    """The config flattened to {"optim.learning_rate": 0.05, ...} with HParams-friendly values
    (bool, int, float, str)."""
    out = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, bool | int | float | str):
                out[f"{prefix}{k}"] = v
            elif v is None:
                out[f"{prefix}{k}"] = ""
            else:
                out[f"{prefix}{k}"] = str(v)

    walk(json.loads(config.to_json_best_effort()), "")
    return out


def write_hparams(writer, config: ml_collections.ConfigDict) -> None:
    writer.write_hparams(hparams(config))


def image_grid(images: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
    """uint8[N, H, W, C] -> one uint8[rows*(H+pad)+pad, columns*(W+pad)+pad, C] mosaic."""
    n, h, w, c = images.shape
    columns = min(columns, max(n, 1))
    rows = -(-n // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = im
    return grid


def augmented_samples(
    images: np.ndarray, config: ml_collections.ConfigDict, count: int = 32
) -> np.ndarray:
    """The first `count` training images through the configured augmentation.
    uint8[N, H, W, C]."""
    augment = jax.jit(make_augment(config.augment.ops))
    x = np.asarray(images[:count], np.float32)
    targets = np.zeros((len(x), 1), np.float32)  # batch-level ops (mixup) need targets
    out, _ = augment(x, targets, jax.random.PRNGKey(config.train.seed))
    out = np.asarray(out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_augmented_inputs(writer, step: int, images: np.ndarray, config) -> None:
    """An 8-wide grid of augmented training inputs (written once, at the start of a run)."""
    grid = image_grid(augmented_samples(images, config))
    writer.write_images(step, {"inputs/augmented": grid[None]})


def figure_to_array(fig) -> np.ndarray:
    """A matplotlib figure -> uint8[H, W, 3] (closes the figure)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return np.ascontiguousarray(rgba[..., :3])


def write_confusion_matrix(writer, step: int, report: dict) -> None:
    """The confusion matrix figure (counts + row-normalised) under `<split>/confusion_matrix`."""
    image = figure_to_array(plots.confusion_matrix_figure(report))
    writer.write_images(step, {f"{report['split']}/confusion_matrix": image[None]})

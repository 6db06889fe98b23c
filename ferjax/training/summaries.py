"""TensorBoard summaries beyond scalars: hyperparameters (HParams plugin), a grid of augmented
training inputs, and the confusion matrix as an image. All take the run's
TensorBoard writer (ferjax.training.tensorboard)."""

from __future__ import annotations

import concurrent.futures
import json

import jax
import ml_collections
import numpy as np

from ferjax.data.augment import make_augment


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
    ops = make_augment(config.augment.ops)
    # A picture of 32 faces, compiled once per run: XLA's quickest compilation on the CPU
    # (0.37 s instead of 0.71 s for the demo's chain) is worth more than its speed.
    fast = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    augment = jax.jit(lambda x, t, seed: ops(x, t, jax.random.PRNGKey(seed)), compiler_options=fast)
    x = np.asarray(images[:count], np.float32)
    targets = np.zeros((len(x), 1), np.float32)  # batch-level ops (mixup) need targets
    out, _ = augment(x, targets, np.uint32(config.train.seed % 2**32))
    out = np.asarray(out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class AugmentedGrid:
    """augmented_samples(images, config) on a helper thread, started once the first train step
    has run (`start()`) and at the lowest scheduling priority the OS gives a thread: its
    program's compilation (0.5-0.7 CPU-s for the demo's chain) then takes what the train step's
    compilation and the steps leave of the cores instead of delaying the first step. `write`
    puts the grid in TensorBoard (at step 0) once it is computed: MetricLog tries at each
    write and waits for it when the log closes."""

    def __init__(self, images: np.ndarray, config: ml_collections.ConfigDict):
        self._images, self._config = images, config
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._future: concurrent.futures.Future | None = None
        self.written = False

    def start(self) -> None:
        if self._future is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "ferjax-grid")
            self._future = self._pool.submit(self._compute)

    def _compute(self) -> np.ndarray:
        lower_thread_priority()
        return augmented_samples(self._images, self._config)

    def write(self, writer, wait: bool) -> bool:
        """Writes the grid if computed (wait: until it is; an error raised computing it is
        raised here). True when nothing is left to write: written now or before, or, when
        waiting, never started (a run stopped before its first step)."""
        if self.written:
            return True
        if self._future is None:
            return wait
        if not (wait or self._future.done()):
            return False
        write_augmented_inputs(writer, 0, self._images, self._config, self._future.result())
        self.written = True
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def lower_thread_priority() -> None:
    """The calling thread to the lowest CPU priority (Linux: nice 19 for this thread only);
    nothing elsewhere."""
    import os
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def write_augmented_inputs(
    writer, step: int, images: np.ndarray, config, samples: np.ndarray | None = None
) -> None:
    """An 8-wide grid of augmented training inputs (written once, at the start of a run);
    `samples`: augmented_samples(images, config) when already computed."""
    grid = image_grid(augmented_samples(images, config) if samples is None else samples)
    writer.write_images(step, {"inputs/augmented": grid[None]})


def confusion_matrix_image(report: dict, cell: tuple[int, int] = (60, 24)) -> np.ndarray:
    """The confusion matrix as uint8[H, W, 3] for TensorBoard: each cell coloured by the row's
    recall share (white to blue) with its count and share, class names on the left and top.

    Drawn with PIL (a few ms) rather than matplotlib (~0.3 s, every epoch); the final
    confusion_matrix.png is matplotlib's (evaluation.plots)."""
    from PIL import Image, ImageDraw

    cm = np.asarray(report["confusion_matrix"], np.float64)
    names = [str(n) for n in report["class_names"]]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k, (cw, ch) = len(names), cell
    left, top = 8 + 7 * max(len(n) for n in names), 36
    image = Image.new("RGB", (left + k * cw + 8, top + k * ch + 8), "white")
    draw = ImageDraw.Draw(image)
    title = f"{report['split']}: true (rows) x predicted (columns); count, recall"
    draw.text((4, 4), title, "black")
    light, dark = np.array([247, 251, 255]), np.array([8, 48, 107])
    for j, name in enumerate(names):
        draw.text((left + j * cw + 2, top - 14), name[: cw // 7], "black")
    for i, name in enumerate(names):
        y = top + i * ch
        draw.text((4, y + ch // 2 - 5), name, "black")
        for j in range(k):
            x = left + j * cw
            colour = tuple(int(c) for c in np.rint(light + (dark - light) * norm[i, j]))
            draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=colour)
            ink = "white" if norm[i, j] > 0.5 else "black"
            draw.text((x + 3, y + ch // 2 - 5), f"{cm[i, j]:.0f} {norm[i, j]:.2f}", ink)
    return np.asarray(image)


def write_confusion_matrix(writer, step: int, report: dict) -> None:
    """The confusion matrix image (counts + recall shares) under `<split>/confusion_matrix`."""
    image = confusion_matrix_image(report)
    writer.write_images(step, {f"{report['split']}/confusion_matrix": image[None]})

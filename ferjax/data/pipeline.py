"""tf.data pipeline of per-step index batches.

The images live on the device; per step the host sends only a few bytes per example (indices,
interpolation weight, loss weight). Each process yields only its part of every global batch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator

import jax
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# data.placement: where the training images live during training.
PLACEMENTS = ("auto", "device", "stream")


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


class _NoKerasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("keras: not loaded while TensorFlow is imported for tf.data")


class _SkipKeras(importlib.abc.MetaPathFinder):
    """While TensorFlow is being imported, executing `import keras` raises ImportError (looking
    Keras up still works). TensorFlow's __init__ eagerly imports Keras (and through it
    scikit-learn), ~40% of its import time, and catches that ImportError; ferjax needs only
    tf.data. A later `import keras` works as usual."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        real = importlib.machinery.PathFinder.find_spec(name, path)
        if real is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, _NoKerasLoader(), origin=real.origin)
        spec.submodule_search_locations = real.submodule_search_locations
        return spec


def import_tensorflow():
    """TensorFlow for tf.data: imported without Keras (when nothing imported it yet)."""
    if "tensorflow" not in sys.modules and "keras" not in sys.modules:
        skip = _SkipKeras()
        sys.meta_path.insert(0, skip)
        try:
            import tensorflow
        finally:
            sys.meta_path.remove(skip)
    import tensorflow

    return tensorflow


_gpus_hidden = False


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow is used for tf.data only: it must never take accelerator memory. Safe to call
    any number of times (only the first call does anything)."""
    global _gpus_hidden
    if _gpus_hidden:
        return
    tf = import_tensorflow()
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type
    _gpus_hidden = True


def index_batches(
    records: dict[str, np.ndarray],
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    host_arrays: dict[str, np.ndarray] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of each global batch of `records`, from `start_step` on.

    The remainder that does not fill a global batch is dropped (every process takes the same
    number of steps). Batches are prefetched in the background. With `host_arrays` (streaming
    placement: {"images": uint8[N,H,W,C], "targets": float32[N,K]} kept in host memory), each
    batch also carries the gathered uint8 images xi, xj and targets ti, tj (one batched gather
    per step, so the host stays far ahead of the device).
    """
    tf = import_tensorflow()
    hide_gpus_from_tensorflow()
    local = global_batch // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    steps = len(records["i"]) // global_batch
    trimmed = {k: v[: steps * global_batch] for k, v in records.items()}
    ds = tf.data.Dataset.from_tensor_slices(trimmed).batch(global_batch, drop_remainder=True)

    @tf.autograph.experimental.do_not_convert
    def this_process(b):
        return {k: v[lo:hi] for k, v in b.items()}

    ds = ds.skip(start_step).map(this_process)
    if host_arrays is not None:
        images = tf.constant(host_arrays["images"])
        targets = tf.constant(host_arrays["targets"])

        @tf.autograph.experimental.do_not_convert
        def gather(b):
            return {
                **b,
                "xi": tf.gather(images, b["i"]),
                "xj": tf.gather(images, b["j"]),
                "ti": tf.gather(targets, b["i"]),
                "tj": tf.gather(targets, b["j"]),
            }

        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()

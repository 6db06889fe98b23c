"""tf.data pipeline of per-step index batches.

The images live on the device; per step the host sends only a few bytes per example (indices,
interpolation weight, loss weight). Each process yields only its part of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow is used for tf.data only: it must never take accelerator memory."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type


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
    placement: {"images": uint8[N,H,W], "targets": float32[N,K]} kept in host memory), each
    batch also carries the gathered uint8 images xi, xj and targets ti, tj (one batched gather
    per step, so the host stays far ahead of the device).
    """
    import tensorflow as tf

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

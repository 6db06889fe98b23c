"""Per-step index batches: slices of the epoch's index records, plus (host placement) a tf.data
pipeline that gathers each batch's faces in parallel.

The images live on the device; per step the host sends only a few bytes per example (indices,
interpolation weight, loss weight). Each process yields only its part of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ferjax.data.store.reader import prefetch_batches
from ferjax.runtime.tensorflow import import_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Batches of faces read ahead by threaded_gather (host memory: about this many + 2 batches).
STREAM_PREFETCH = 3


def index_batches(
    records: dict[str, np.ndarray],
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    host_arrays: dict[str, np.ndarray] | None = None,
    threaded_gather=None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slice of each global batch of `records`, from `start_step` on.

    The remainder that does not fill a global batch is dropped (every process takes the same
    number of steps). Batches are prefetched in the background. With `host_arrays` ({"images":
    uint8[N,H,W,C], "targets": float32[N,K]} in host memory), tf.data also gathers each batch's
    uint8 images xi, xj and targets ti, tj; with `threaded_gather(batch) -> batch` (a shard
    store's random reads), background threads add them, STREAM_PREFETCH batches ahead.
    """
    local = global_batch // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    steps = len(records["i"]) // global_batch
    if host_arrays is None:
        # Index records only (the images are on the device or read by threaded_gather): a
        # slice per step, no TensorFlow needed.
        mine = (
            {k: v[s * global_batch + lo : s * global_batch + hi] for k, v in records.items()}
            for s in range(start_step, steps)
        )
        if threaded_gather is not None:
            return prefetch_batches(mine, threaded_gather, depth=STREAM_PREFETCH)
        return mine
    tf = import_tensorflow()
    trimmed = {k: v[: steps * global_batch] for k, v in records.items()}
    ds = tf.data.Dataset.from_tensor_slices(trimmed).batch(global_batch, drop_remainder=True)

    @tf.autograph.experimental.do_not_convert
    def this_process(b):
        return {k: v[lo:hi] for k, v in b.items()}

    ds = ds.skip(start_step).map(this_process)
    images_t = tf.constant(host_arrays["images"])
    targets_t = tf.constant(host_arrays["targets"])

    @tf.autograph.experimental.do_not_convert
    def gather_in_memory(b):
        return {
            **b,
            "xi": tf.gather(images_t, b["i"]),
            "xj": tf.gather(images_t, b["j"]),
            "ti": tf.gather(targets_t, b["i"]),
            "tj": tf.gather(targets_t, b["j"]),
        }

    ds = ds.map(gather_in_memory, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()

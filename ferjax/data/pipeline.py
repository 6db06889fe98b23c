"""tf.data pipeline of per-step index batches.

The images live on the device; per step the host sends only a few bytes per example (indices,
interpolation weight, loss weight). Each process yields only its part of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import jax
import numpy as np

from ferjax.data.store.reader import prefetch_batches
from ferjax.runtime.tensorflow import hide_gpus_from_tensorflow, import_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# data.placement: where the training images live during training. device: on the accelerator
# (the host sends index records); host: in host memory (uint8 batches gathered per step by
# tf.data; "stream" is its former name); disk: in a shard store read per step
# (ferjax.data.store.stored); auto: by size.
PLACEMENTS = ("auto", "device", "host", "stream", "disk")
# Batches of faces read ahead from a shard store (host memory: about this many + 2 batches).
STREAM_PREFETCH = 3
# auto keeps the images on the device while they take at most this fraction of its memory, and
# in host memory while they take at most this fraction of the memory available.
DEVICE_FRACTION, HOST_FRACTION = 0.5, 0.5


def choose_placement(setting: str, image_bytes: int, stored: bool = False) -> str:
    """device, host or disk for training images of `image_bytes` (stored: they are in a shard
    store already, which only disk placement reads). auto: device while they fit in
    DEVICE_FRACTION of the first device's memory, else host."""
    if stored:
        return "disk"
    if setting == "stream":
        return "host"
    if setting in ("device", "host"):
        return setting
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit and image_bytes > DEVICE_FRACTION * limit:
        return "host"
    return "device"


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
    number of steps). Batches are prefetched in the background. With `host_arrays` ({"images":
    uint8[N,H,W,C] in host memory (placement host) or a StoredImages (placement disk),
    "targets": float32[N,K]}), each batch also carries the gathered uint8 images xi, xj and
    targets ti, tj, gathered ahead of the device step.
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
    images = None if host_arrays is None else host_arrays["images"]
    if images is not None and not isinstance(images, np.ndarray):
        # A shard store (placement disk): tf.data yields the index records, background threads
        # read each batch's faces by random access.
        targets = host_arrays["targets"]
        ds = ds.prefetch(tf.data.AUTOTUNE)

        def gather(b):
            xi, xj = images.store.gather_pairs(images.index[b["i"]], images.index[b["j"]])
            return {**b, "xi": xi, "xj": xj, "ti": targets[b["i"]], "tj": targets[b["j"]]}

        return prefetch_batches(ds.as_numpy_iterator(), gather, depth=STREAM_PREFETCH)
    if images is not None:
        images_t = tf.constant(images)
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

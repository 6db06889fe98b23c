"""The training input as one object: `TrainInput.from_config(...)` owns the sampler, the one
placement decision (where the training images live while training) and `batches(epoch,
start_step)`, this process's slice of each step's global batch.

Placements (data.placement):
- device: the images on the accelerator(s), replicated; per step the host sends only index
  records (i, j, lam, weight) and the train step gathers the faces.
- host: the images in host memory; tf.data gathers each step's uint8 faces.
- disk: the images in a shard store (ferjax.data.store), read per step by background threads.
- auto: disk when the decoded images would take more than HOST_FRACTION of the memory
  available (decided when the data is read, `stream_from_disk`), else device while they fit in
  DEVICE_FRACTION of the device's memory, else host.
The order of the records is a function of (seed, epoch, step) in every placement, so the
placements give the same losses and a run resumes bitwise mid-epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from ferjax.data.dataset import Split
from ferjax.data.pipeline import index_batches
from ferjax.data.sampling import Sampler, parse_strategy
from ferjax.data.store.stored import StoredImages
from ferjax.runtime import devices
from ferjax.runtime.errors import ConfigError
from ferjax.runtime.platform import host_memory_bytes

PLACEMENTS = ("auto", "device", "host", "stream", "disk")  # "stream": host's former name
# auto keeps the images on the device while they take at most this fraction of its memory, and
# in host memory while they take at most this fraction of the memory available.
DEVICE_FRACTION, HOST_FRACTION = 0.5, 0.5


def is_stored(images) -> bool:
    """Whether a split's images live in a shard store (read on demand) rather than in memory."""
    return isinstance(images, StoredImages)


def stream_from_disk(setting: str, image_bytes: int) -> bool:
    """At read time, for a source that can be streamed: convert it into a shard store (disk,
    or auto when the decoded images would take more than HOST_FRACTION of the memory
    available) rather than decode it into memory."""
    return setting == "disk" or (
        setting == "auto" and image_bytes > HOST_FRACTION * host_memory_bytes()
    )


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


def one_hot_targets(split: Split, num_classes: int) -> np.ndarray:
    """float32[N, K]: the split's soft targets, or one-hot labels."""
    if split.targets is not None:
        return split.targets.astype(np.float32)
    return np.eye(num_classes, dtype=np.float32)[split.labels]


@dataclasses.dataclass
class TrainInput:
    """The training split as the loop consumes it.

    sampler: the epoch's index records (sampling.*); placement: device | host | disk;
    on_device: {"images", "targets"} replicated on the mesh under device placement, else {}
    (the train step's `data` argument); global_batch, steps_per_epoch.
    """

    sampler: Sampler
    placement: str
    on_device: dict
    host_arrays: dict | None
    global_batch: int
    steps_per_epoch: int
    description: str

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        train: Split,
        num_classes: int,
        class_names,
        mesh,
    ) -> TrainInput:
        """The sampler of `config.sampling` (as it is) over the training split, and its images
        placed by `config.data.placement`."""
        images = train.images
        stored = is_stored(images)
        s = config.sampling
        sampler = Sampler(
            train.labels,
            num_classes,
            s.method,
            config.train.seed,
            parse_strategy(s.strategy, class_names),
            # Neighbours of streamed faces: on the embeddings the conversion stored.
            images=images.embeddings() if stored else images,
            k_neighbors=s.k_neighbors,
            features=s.features,
            pca_components=s.pca_components,
            class_names=class_names,
        )
        global_batch = config.train.batch_size
        steps = len(sampler) // global_batch
        if steps == 0:
            raise ConfigError(
                f"train.batch_size: {global_batch} is larger than the {len(sampler)} "
                "training records of one epoch"
            )
        targets = one_hot_targets(train, num_classes)
        placement = choose_placement(config.data.placement, images.nbytes, stored)
        if placement == "device":
            on_device = {"images": images, "targets": targets}
            host_arrays = None
        else:
            on_device, host_arrays = {}, {"images": images, "targets": targets}
        seed = config.train.seed
        if 0 <= seed < 2**31:
            # The step's random seed as data, not as a constant of the program: runs that
            # differ only in their seed share one compiled program (and its cache entry).
            on_device["seed"] = np.int32(seed)
        on_device = devices.replicate(on_device, mesh)
        where = f" in {images.store.directory}" if stored else ""
        description = f"placement: {placement} ({images.nbytes / 2**20:.1f} MiB of images{where})"
        return cls(sampler, placement, on_device, host_arrays, global_batch, steps, description)

    def step_arguments(self, mesh) -> tuple | None:
        """(data, batch) as the loop passes them to the train step, for compiling it ahead of
        the first step (training.program.CompileAhead), when the images are on the device (the
        batches are then index records, cheap to make once more); else None."""
        if self.placement != "device":
            return None
        return self.on_device, devices.global_batch(next(self.batches(0)), mesh)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """This process's slice of each global batch of `epoch`, from `start_step` on: index
        records, plus the gathered uint8 faces (xi, xj) and targets (ti, tj) unless the images
        are on the device."""
        gather = None
        if self.placement == "disk":
            images, targets = self.host_arrays["images"], self.host_arrays["targets"]

            def gather(b):
                xi, xj = images.store.gather_pairs(images.index[b["i"]], images.index[b["j"]])
                return {**b, "xi": xi, "xj": xj, "ti": targets[b["i"]], "tj": targets[b["j"]]}

        return index_batches(
            self.sampler.epoch_records(epoch),
            self.global_batch,
            jax.process_index(),
            jax.process_count(),
            start_step=start_step,
            host_arrays=self.host_arrays if self.placement == "host" else None,
            threaded_gather=gather,
        )

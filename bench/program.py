"""The trainer's compiled program for benchmarks: `ferjax.training.program.build` (the very
jitted step, with the training run's shardings and donation, that `python -m ferjax.main` runs)
on random uint8 faces held on the device, with the index batches of the trainer's own input
object (`ferjax.data.input.TrainInput`)."""

from __future__ import annotations

import itertools

import numpy as np

from ferjax.data.dataset import Split
from ferjax.data.input import TrainInput
from ferjax.runtime import devices
from ferjax.training.program import Program, build


def ferjax_program(
    config,
    image_shape: tuple[int, int, int] = (48, 48, 1),
    num_classes: int = 7,
    examples: int = 0,
    num_batches: int = 4,
    seed: int = 0,
) -> tuple[Program, dict, list[dict]]:
    """(program, on-device dataset, global index batches) for `config`'s model and batch."""
    batch = config.train.batch_size
    program = build(
        config,
        num_classes=num_classes,
        image_shape=image_shape,
        steps_per_epoch=100,
        norm=(128.0, 64.0),
    )
    rng = np.random.default_rng(seed)
    n = max(examples or 4 * batch, batch * num_batches)
    split = Split(
        images=rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
        labels=rng.integers(0, num_classes, n).astype(np.int32),
    )
    config = config.copy_and_resolve_references()
    config.data.placement = "device"
    names = tuple(f"class{k}" for k in range(num_classes))
    train_input = TrainInput.from_config(config, split, num_classes, names, program.mesh)
    local = itertools.islice(train_input.batches(0), num_batches)
    batches = [devices.global_batch(b, program.mesh) for b in local]
    return program, train_input.on_device, batches

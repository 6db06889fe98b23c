"""The trainer's compiled program for benchmarks: `ferjax.training.program.build` (the very
jitted step,
with the training run's shardings and donation, that `python -m ferjax.main` runs) on random
uint8 faces held on the device, with index batches as the training loop makes them."""

from __future__ import annotations

import numpy as np

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
    n = examples or 4 * batch
    data = devices.replicate(
        {
            "images": rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
            "targets": np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, n)],
        },
        program.mesh,
    )
    batches = [
        devices.global_batch(
            {
                "i": rng.integers(0, n, batch).astype(np.int32),
                "j": rng.integers(0, n, batch).astype(np.int32),
                "lam": np.zeros(batch, np.float32),
                "weight": np.ones(batch, np.float32),
            },
            program.mesh,
        )
        for _ in range(num_batches)
    ]
    return program, data, batches

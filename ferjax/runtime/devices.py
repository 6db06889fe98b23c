"""Device mesh and shardings: data parallelism over every device of every host.

The batch axis is sharded over the mesh axis "data"; parameters, optimizer state and the
on-device dataset are replicated. The same code runs on 1 CPU, 8 GPUs or a multi-host pod.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over all devices. Auto axis types: XLA propagates shardings through the step
    (the batch gather from the replicated dataset needs no annotations)."""
    return jax.make_mesh(
        (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh):
    """Places host arrays (identical on every process) on every device."""
    return jax.device_put(tree, replicated(mesh))


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into one global, batch-sharded jax.Array."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}

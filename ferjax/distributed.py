"""Multi-process start-up: JAX's distributed runtime when this process is one of several.

One process per host (or per GPU); each drives its local devices and feeds its part of every
global batch. Processes join through a coordinator (process 0) over TCP.
"""

from __future__ import annotations

import os

import jax


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> str:
    """Starts JAX's distributed runtime when this is one process of several.

    Explicit arguments win; then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID;
    then JAX's own cluster detection (SLURM with more than one task, Cloud TPU pods, Open MPI,
    Kubernetes). Returns how it was started ("" when single-process).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address and num_processes and num_processes > 1:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return "explicit"
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
    tpu_pod = "TPU_WORKER_HOSTNAMES" in env and "," in env["TPU_WORKER_HOSTNAMES"]
    mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    if slurm or tpu_pod or mpi:
        jax.distributed.initialize()
        return "auto"
    return ""

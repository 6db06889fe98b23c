"""Command-line entry point: python -m ferjax.main --config=configs/demo.py --workdir=DIR.

Re-running the same command with the same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots and report.json.")
config_flags.DEFINE_config_file(
    "config", None, "Training config file (a Python file with get_config()).", lock_config=True
)
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs (optional)."
)
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "Index of this process in a multi-process run.")


def init_distributed(coordinator_address=None, num_processes=None, process_id=None) -> str:
    """Starts JAX's distributed runtime when this is one process of several.

    Explicit flags win; then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; then
    JAX's own cluster detection (SLURM with more than one task, Cloud TPU pods, Open MPI,
    Kubernetes). Returns how it was started ("" when single-process).
    """
    import jax

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


def _unknown_override(argv: list[str]) -> str | None:
    """The first --config.KEY=... override whose KEY the config file does not define."""
    import runpy

    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None or not os.path.isfile(path.split(":")[0]):
        return None
    config = runpy.run_path(path.split(":")[0])["get_config"]()
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            node = config
            key = arg[len("--config.") :].split("=", 1)[0]
            for part in key.split("."):
                if not hasattr(node, "keys") or part not in node:
                    return key
                node = node[part]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with one clear line (no traceback) for bad flags or config keys."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - config files and overrides raise anything
        key = _unknown_override(argv)
        if key is not None:
            print(
                f"error: --config.{key}: unknown config key (every key is defined and "
                "documented in configs/default.py)",
                file=sys.stderr,
            )
        else:
            print(f"error: --config: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
    sys.exit(2)


def run(config, workdir: str):
    """Validates the config, loads the data and trains. Returns the test report."""
    import jax

    from ferjax import platform
    from ferjax.config import check_workdir, validate
    from ferjax.data.load import load_data
    from ferjax.data.pipeline import hide_gpus_from_tensorflow
    from ferjax.train import train_and_evaluate

    hide_gpus_from_tensorflow()
    platform.enable_compilation_cache(config.train.compilation_cache_dir)
    if jax.process_count() > 1 and jax.process_index() != 0:
        logging.set_verbosity(logging.ERROR)
    validate(config, jax.device_count())
    check_workdir(workdir)
    data = load_data(config)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        summary = {
            "source": data.source,
            "class_names": list(data.class_names),
            "skipped_rows": dict(data.skipped),
            "cleaning": data.cleaning,
            "splits": data.summary(),
        }
        with open(os.path.join(workdir, "data_report.json"), "w") as f:
            json.dump(summary, f, indent=2)
        counts = {n: len(s) for n, s in data.splits.items()}
        if data.cleaning:
            from ferjax.data.cleaning import summary_line

            print(summary_line(data.cleaning), flush=True)
        print(
            f"data: {data.source} classes={','.join(data.class_names)} sizes={counts}", flush=True
        )
    return train_and_evaluate(config, workdir, data)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from ferjax.errors import FerjaxError
    from ferjax.train import Preempted

    logging.set_verbosity(logging.WARNING)
    init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        config = FLAGS.config
        config.keys()  # a config file that failed to load raises here
    except Exception as e:  # noqa: BLE001
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        print(f"error: --config: cannot load the config file ({lines[-1]})", file=sys.stderr)
        sys.exit(2)
    try:
        run(config, FLAGS.workdir)
    except Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except FerjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    from ferjax import platform

    platform.reexec_with_malloc_tuning("ferjax.main")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)

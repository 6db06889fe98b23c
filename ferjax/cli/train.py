"""Trains a facial-expression classifier: python -m ferjax.main --config=FILE --workdir=DIR.

Re-running the same command with the same workdir resumes from the latest checkpoint. Several
processes (hosts) are joined by JAX's distributed runtime (--coordinator_address,
--num_processes, --process_id, the JAX_* variables, or SLURM/TPU/MPI detection).
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging

from ferjax.cli.flags import Parser, run_training_command
from ferjax.config.validate import validate
from ferjax.data.cleaning import summary_line
from ferjax.data.load import load_data
from ferjax.runtime import distributed, platform
from ferjax.runtime.clock import Clock
from ferjax.runtime.errors import Preempted
from ferjax.runtime.workdir import DATA_REPORT, Workdir
from ferjax.training.loop import train_and_evaluate


def run_training(
    config: ml_collections.ConfigDict, workdir: str, clock: Clock | None = None
) -> dict | None:
    """Validates the config, loads the data and trains. Returns the test report (None when
    halted early by train.halt_after_steps). `clock`: the wall-clock account (default: one
    started here)."""
    clock = (clock or Clock()).activate()
    platform.enable_compilation_cache(config.train.compilation_cache_dir)
    if jax.process_count() > 1 and jax.process_index() != 0:
        logging.set_verbosity(logging.ERROR)
    validate(config, jax.device_count())
    run_dir = Workdir(workdir)
    run_dir.check_usable()
    clock.enter("data")
    data = load_data(config)
    if jax.process_index() == 0:
        run_dir.write_json(
            DATA_REPORT,
            {
                "source": data.source,
                "class_names": list(data.class_names),
                "skipped_rows": dict(data.skipped),
                "cleaning": data.cleaning,
                "splits": data.summary(),
            },
        )
        if config.train.verbosity > 0:
            if data.cleaning:
                print(summary_line(data.cleaning), flush=True)
            counts = {n: len(s) for n, s in data.splits.items()}
            names = ",".join(data.class_names)
            print(f"data: {data.source} classes={names} sizes={counts}", flush=True)
    return train_and_evaluate(config, workdir, data, clock)


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax train", __doc__.split("\n\n")[0], config=True)
    p.add_argument("--workdir", required=True, help="checkpoints, logs, figures and report.json")
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None, help="processes of the run")
    p.add_argument("--process_id", type=int, default=None, help="index of this process")
    clock = Clock(since_command_start=True)  # `start`: the command's start to here and on
    args = p.parse(argv)
    logging.set_verbosity(logging.WARNING)
    distributed.init_distributed(args.coordinator_address, args.num_processes, args.process_id)
    try:
        run_training(args.config, args.workdir, clock)
    except Preempted:
        raise  # every process stops at the same step: a normal exit
    except BaseException as e:
        if distributed.multi_process():
            distributed.fail(e)  # tell the other processes, one line, exit now
        raise
    finally:
        distributed.stop_watchdog()  # joined before Python finalises (see distributed.py)
    return 0


if __name__ == "__main__":
    platform.reexec_with_malloc_tuning("ferjax.cli.train")
    run_training_command(main)

"""The command-line convention every ferjax tool follows.

- `--help` lists every flag and exits 0; no arguments at all prints the usage in one line and
  exits 2.
- Tools that take a config read `--config=FILE[:ARG]` (a Python file whose `get_config()` returns
  an `ml_collections.ConfigDict`; `:ARG` is passed to `get_config(ARG)`) and any number of
  `--config.KEY=VALUE` overrides, each parsed as the type of the key's value in the file. An
  unknown key names the closest known one.
- A mistake a user can make is reported as `error: ...` on stderr and a non-zero exit: one line
  (a data file with several bad rows lists them under it), never a traceback. Exit codes: 2 for
  mistakes, 3 for a diverged run, 75 for a run stopped by a signal (re-run to resume), 130 for
  Ctrl-C outside training.
- Outputs go to the run's workdir or to a path given on the command line, never to the current
  directory by default.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Callable

from ferjax.config.overrides import load_config
from ferjax.runtime.errors import ConfigError, FerjaxError, Preempted, out_of_memory

OVERRIDE = "--config."


class Parser(argparse.ArgumentParser):
    """argparse with the conventions above. `config=True` adds --config and the overrides."""

    def __init__(self, prog: str, description: str, config: bool = False, epilog: str = ""):
        """prog: the command as a user types it, e.g. "ferjax evaluate"."""
        if config:
            epilog = (
                "Any config key can be overridden: --config.KEY=VALUE, e.g. "
                "--config.train.num_epochs=50 --config.data.classes=happy,sad,neutral "
                "(every key is defined and documented in configs/default.py).\n" + epilog
            )
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.takes_config = config
        if config:
            self.add_argument(
                "--config",
                required=True,
                metavar="FILE[:ARG]",
                help="config file (a Python file with get_config()), e.g. configs/demo.py",
            )

    def error(self, message: str):
        """Bad flags: one line, exit 2."""
        sys.stderr.write(f"error: {message} ({self.prog} --help)\n")
        sys.exit(2)

    def usage_line(self) -> str:
        return " ".join(self.format_usage().split())

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """Parses argv (default sys.argv[1:]); with config=True, `args.config` is the loaded,
        overridden and locked ConfigDict and `args.config_path` the file."""
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:
            sys.stderr.write(f"{self.usage_line()} (--help for every flag)\n")
            sys.exit(2)
        overrides, rest = split_overrides(argv) if self.takes_config else ([], argv)
        args = self.parse_args(rest)
        if self.takes_config:
            args.config_path = args.config
            args.overrides = overrides
            try:
                args.config = load_config(args.config, overrides)
            except ConfigError as e:
                sys.stderr.write(f"error: {e}\n")
                sys.exit(2)
        return args


def split_overrides(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """([(key, value text)], the other arguments). Accepts --config.KEY=VALUE and
    --config.KEY VALUE."""
    overrides, rest = [], []
    k = 0
    while k < len(argv):
        arg = argv[k]
        if arg.startswith(OVERRIDE):
            key, eq, value = arg[len(OVERRIDE) :].partition("=")
            if not eq:
                if k + 1 >= len(argv):
                    raise_usage(f"{arg}: expected a value ({arg}=VALUE)")
                k += 1
                value = argv[k]
            overrides.append((key, value))
        else:
            rest.append(arg)
        k += 1
    return overrides, rest


def raise_usage(message: str):
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Calls main(argv) and exits with its status; user mistakes become `error: ...` lines."""
    try:
        code = main(argv)
    except Preempted as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(e.exit_code)
    except FerjaxError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # XLA's allocation failures are RuntimeErrors
        oom = out_of_memory(e)
        if oom is None:
            raise
        sys.stderr.write(f"error: {oom}\n")
        sys.exit(oom.exit_code)
    sys.exit(code or 0)


def run_training_command(
    main: Callable[[list[str] | None], int | None], argv: list[str] | None = None
) -> None:
    """run(main, argv) as the process of a training command: once it has finished, the process
    ends through exit_now."""
    try:
        run(main, argv)
    except SystemExit as e:
        exit_now(e.code)


def exit_now(code) -> None:
    """Ends a finished command's process the way the interpreter would, minus its teardown of
    every module and of JAX's runtime (~0.3 s after a training run, all of it after the report):
    non-daemon threads are joined and exit handlers run as at a normal exit, output is flushed,
    then os._exit. Every file a training run writes is closed before this point. A process of a
    multi-process run (or an interpreter without these hooks) exits the usual way."""
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    shutdown = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    jax = sys.modules.get("jax")
    several = jax is not None and jax.process_count() > 1
    if several or shutdown is None or run_exit_handlers is None:
        sys.exit(status)
    shutdown()  # what Python does first at exit: thread-pool exits, then joins the threads
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

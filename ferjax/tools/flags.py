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
import ast
import os
import runpy
import sys
from collections.abc import Callable

import ml_collections

from ferjax.config import flat_keys
from ferjax.errors import ConfigError, FerjaxError, Preempted
from ferjax.registry import did_you_mean

OVERRIDE = "--config."


class Parser(argparse.ArgumentParser):
    """argparse with the conventions above. `config=True` adds --config and the overrides."""

    def __init__(self, module: str, description: str, config: bool = False, epilog: str = ""):
        if config:
            epilog = (
                "Any config key can be overridden: --config.KEY=VALUE, e.g. "
                "--config.train.num_epochs=50 --config.data.classes=happy,sad,neutral "
                "(every key is defined and documented in configs/default.py).\n" + epilog
            )
        super().__init__(
            prog=f"python -m {module}",
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
        sys.stderr.write(f"error: {message} (python {self.prog[len('python ') :]} --help)\n")
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


def load_config(spec: str, overrides: list[tuple[str, str]]) -> ml_collections.ConfigDict:
    """The ConfigDict of `FILE[:ARG]` with the overrides applied, locked."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config: {path} is not a file (expected e.g. configs/demo.py)")
    try:
        get_config = runpy.run_path(path)["get_config"]
        config = get_config(arg) if arg else get_config()
    except Exception as e:  # noqa: BLE001 - a config file can raise anything
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ConfigError(f"--config: cannot load {path} ({type(e).__name__}: {first})") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config: {path}: get_config() must return a ConfigDict")
    for key, text in overrides:
        set_override(config, key, text)
    config.lock()
    return config


def set_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """config[key] = text parsed as the type of the key's current value."""
    node, parts = config, key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            _unknown(config, key)
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
        _unknown(config, key)
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"--config.{key}: a section, not a key (e.g. --config.{key}.<key>=...)")
    node[parts[-1]] = parse_value(text, current, key)


def _unknown(config, key: str):
    raise ConfigError(
        f"--config.{key}: unknown config key"
        + did_you_mean(key, flat_keys(config))
        + " (every key is defined and documented in configs/default.py)"
    )


def parse_value(text: str, current, key: str):
    """`text` as the type of `current` (bool, int, float, str, or a literal for None)."""
    low = text.strip().lower()
    if isinstance(current, bool):
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}: expected true or false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{key}: expected an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}: expected a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    sys.exit(code or 0)

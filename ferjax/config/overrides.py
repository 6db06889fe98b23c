"""Config files and command-line overrides: `--config=FILE[:ARG]` and `--config.KEY=VALUE`,
each value parsed as the type of the key's default (configs/default.py)."""

from __future__ import annotations

import ast
import os
import runpy

import ml_collections

from ferjax.config.validate import flat_keys
from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import did_you_mean


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

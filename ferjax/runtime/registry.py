"""Named choices, each registered once: the only source of the values a config key accepts.

Data formats, samplers, optimisers, schedules, normalisations, augmentation ops, test-time
augmentation modes, models and convolution implementations each live in a `Registry` next to
their code. Config validation and every command-line tool take their choices from these
registries, so adding a choice is one function and one `@REGISTRY.register("name")`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from ferjax.runtime.errors import ConfigError


def did_you_mean(word: str, options) -> str:
    """'; did you mean 'x'?' for the closest of `options`, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry:
    """name -> value for one config key (e.g. `sampling.method`).

    `register(name)` decorates (or, with a value, registers) an entry; registering a name twice
    is an error, so a second definition can never silently replace the first.
    """

    def __init__(self, key: str):
        self.key = key
        self._entries: dict[str, Any] = {}

    def register(self, name: str, value: Any = None) -> Callable:
        def add(entry):
            if name in self._entries:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add if value is None else add(value)

    def get(self, name: str) -> Any:
        """The entry; an unknown name is a ConfigError naming the key, the choices and the
        closest one."""
        if name not in self._entries:
            raise ConfigError(
                f"config.{self.key}: got {name!r}, expected one of {', '.join(self._entries)}"
                + did_you_mean(name, self._entries)
            )
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

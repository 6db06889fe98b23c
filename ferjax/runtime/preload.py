"""Imports a module on a helper thread, so that a slow import (matplotlib's ~0.4 s) runs while
the caller waits on something that leaves a core idle (the train step's compilation).

The later `import` of the same module either finds it ready or waits for the helper's import
to finish (Python's per-module import lock); an import error is left for that import to raise.
"""

from __future__ import annotations

import importlib
import threading


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - raised again by the caller's own import
        pass


def preload(name: str) -> threading.Thread:
    """Starts importing `name` on a daemon thread; returns the thread."""
    thread = threading.Thread(
        target=_import, args=(name,), name=f"ferjax-import-{name}", daemon=True
    )
    thread.start()
    return thread

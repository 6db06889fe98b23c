"""ferjax.runtime.preload: a module imported on a helper thread is imported once, and the
caller's own import gets it (waiting for it if needed) or raises its error."""

from __future__ import annotations

import builtins
import importlib
import sys
import threading

import pytest

from ferjax.runtime.preload import preload

SLOW = """
GATE.wait(30)
RUNS.append(1)
"""


@pytest.fixture
def modules(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("ferjax_preload_slow", "ferjax_preload_bad"):
        sys.modules.pop(name, None)


def test_the_import_runs_on_the_thread_once(modules):
    runs: list = []
    gate = threading.Event()
    (modules / "ferjax_preload_slow.py").write_text(SLOW)
    builtins.RUNS, builtins.GATE = runs, gate  # the module's body waits on GATE, appends to RUNS
    try:
        assert "ferjax_preload_slow" not in sys.modules
        thread = preload("ferjax_preload_slow")
        assert thread.daemon and thread.is_alive() and runs == []  # held in the module's body
        threading.Timer(0.2, gate.set).start()
        module = importlib.import_module("ferjax_preload_slow")  # waits for the thread's import
        assert runs == [1]  # the body ran once, on the thread
        thread.join(5)
        assert not thread.is_alive() and sys.modules["ferjax_preload_slow"] is module
    finally:
        gate.set()
        del builtins.RUNS, builtins.GATE


def test_an_import_error_is_left_to_the_callers_import(modules):
    (modules / "ferjax_preload_bad.py").write_text("raise ImportError('no backend here')\n")
    preload("ferjax_preload_bad").join()
    with pytest.raises(ImportError, match="no backend here"):
        importlib.import_module("ferjax_preload_bad")

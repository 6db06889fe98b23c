"""The wall-clock account: phases add up to the total, compilation is taken out of the phase it
happened in, and a training run prints and writes its account (without importing TensorFlow
when its images live on the device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.runtime.clock import PHASES, Clock, command_start_time
from tests.conftest import ROOT, TINY, latest_params


def test_phases_add_up_and_sleeps_land_where_they_happened():
    """Each phase lies between the times read just inside and just outside its two `enter`
    calls, so the bounds hold however late a busy machine wakes a sleep (the account rounds
    to 1 ms: 0.5 ms per phase)."""
    clock = Clock()
    t0 = time.time()
    clock.enter("data")
    t1 = time.time()
    time.sleep(0.2)
    t2 = time.time()
    clock.enter("steps")
    t3 = time.time()
    time.sleep(0.3)
    t4 = time.time()
    clock.enter("report")
    t5 = time.time()
    account = clock.account()
    t6 = time.time()
    phases, r = account["phases"], 0.0005
    assert set(phases) <= set(PHASES)
    assert t2 - t1 >= 0.2 and t4 - t3 >= 0.3  # the premise: the sleeps slept
    assert t2 - t1 - r <= phases["data"] <= t3 - t0 + r
    assert t4 - t3 - r <= phases["steps"] <= t5 - t2 + r
    # the account's total is read a moment after its phases end
    assert -4 * r <= account["total"] - sum(phases.values()) <= t6 - t5 + 4 * r
    line = clock.summary(account)
    assert line.startswith(f"time: {account['total']:.1f} s = ")
    assert f"data {phases['data']:.1f}" in line and f"steps {phases['steps']:.1f}" in line


def test_compilation_is_charged_to_compile_by_program():
    clock = Clock().activate()
    try:
        clock.enter("eval")

        @jax.jit
        def clock_test_program(x):
            return jnp.sin(x) @ jnp.cos(x).T + np.float32(time.time() % 1)  # a fresh program

        x = jnp.ones((64, 64))
        t = time.time()
        clock_test_program(x).block_until_ready()
        first = time.time() - t
        clock.enter("report")
        account = clock.account()
    finally:
        clock.close()
    compiled = account["compile_by_program"]["clock_test_program"]
    assert 0 < compiled <= first + 0.01
    assert account["phases"]["compile"] >= compiled - 0.01
    # what is left of the eval phase is the call without its compilation
    assert account["phases"]["eval"] < first - 0.5 * compiled


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase 'waiting'"):
        Clock().enter("waiting")


def test_command_start_is_when_ferjax_was_imported():
    import ferjax

    start = command_start_time()
    assert start == ferjax.STARTED_AT <= time.time()
    assert time.time() - start > 0.05  # this module's own imports came after it


def test_started_at_takes_the_passed_time_out_of_the_environment(monkeypatch):
    from ferjax.runtime import platform

    monkeypatch.setenv("FERJAX_STARTED_AT", "100.5")
    assert platform.started_at(200.0) == 100.5
    assert "FERJAX_STARTED_AT" not in os.environ  # no child inherits it
    assert platform.started_at(200.0) == 200.0
    monkeypatch.setenv("FERJAX_STARTED_AT", "garbage")
    assert platform.started_at(200.0) == 200.0


@pytest.mark.slow
def test_training_run_prints_and_writes_its_account(tmp_path):
    """`python -m ferjax.main` started by a shell that sleeps first and then execs it: the last
    line is the account, time.json holds it, its total is at most the command's wall clock (the
    shell's sleep is not in it), and TensorFlow was never imported (device placement)."""
    script = (
        "import sys; sys.argv = ['ferjax.main', '--config', sys.argv[1], "
        "'--workdir', sys.argv[2]]\n"
        "from ferjax.cli.flags import run\nfrom ferjax.cli.train import main\n"
        "try:\n    run(main)\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    t = time.time()
    command = f'sleep 3; exec {sys.executable} -c "$0" "$@"'
    out = subprocess.run(
        ["bash", "-c", command, script, TINY, str(tmp_path / "run")],
        cwd=ROOT,
        # the malloc setting the command would re-execute itself with (which would replace
        # this script's process before its last line)
        env={**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.time() - t - 3
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "tensorflow imported: False"
    assert lines[-2].startswith("time: ")
    account = json.loads((tmp_path / "run" / "time.json").read_text())
    phases = account["phases"]
    assert abs(sum(phases.values()) - account["total"]) < 0.05
    assert 0 < account["total"] <= wall
    for phase in ("start", "data", "compile", "steps", "eval", "checkpoints", "report"):
        assert phases[phase] > 0, phase
    assert account["compile_by_program"]["train_step"] > 0
    first = account["marks"]["first_step"]
    assert phases["start"] < first < account["total"]
    assert lines[-2].endswith(f"(first step done at {first:.1f} s)")
    assert f"time: {account['total']:.1f} s = start {phases['start']:.1f}" in lines[-2]


@pytest.mark.slow
def test_the_training_command_exits_without_teardown_and_leaves_every_file_whole(tmp_path):
    """`python -m ferjax.main` ends through flags.exit_now (premise: its os._exit ran, after
    the account line): every file of the run is complete - report.json, time.json, the metric
    log, the TensorBoard events and checkpoints that plain Orbax restores."""
    script = (
        "import os, runpy, sys\n"
        "real = os._exit\n"
        "def spy(code):\n"
        "    sys.stdout.write(f'os._exit({code})\\n'); sys.stdout.flush(); real(code)\n"
        "os._exit = spy\n"
        "sys.argv = ['ferjax.main', '--config', sys.argv[1], '--workdir', sys.argv[2]]\n"
        "runpy.run_module('ferjax.main', run_name='__main__')\n"
    )
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-c", script, TINY, str(run)],
        cwd=ROOT,
        env={**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},  # no re-exec
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "os._exit(0)" and lines[-2].startswith("time: ")
    report = json.loads((run / "report.json").read_text())
    assert json.loads((run / "time.json").read_text())["total"] > 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["split"] == "test" and logged[-1]["accuracy"] == report["accuracy"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    assert "test/accuracy" in events.Tags()["tensors"]  # the last summary written
    for which in ("latest", "best"):
        step, state = latest_params(str(run), which)
        assert step > 0 and state["params"]

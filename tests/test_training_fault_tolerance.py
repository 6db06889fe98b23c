"""Real processes, real signals: kills, preemption, corrupt checkpoints, divergence, bad configs."""

import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import (
    ROOT,
    TINY,
    assert_trees_equal,
    explain,
    latest_params,
    tiny_config,
    train_losses,
)
from conftest import train as run

from ferjax.config.validate import validate
from ferjax.runtime.errors import CheckpointError, ConfigError, TrainingDiverged
from ferjax.runtime.workdir import Workdir

# 8 epochs of 8 steps, a checkpoint every 2 steps: long enough to stop the run mid-way.
EPOCHS, STEPS_PER_EPOCH = 8, 8
TOTAL = EPOCHS * STEPS_PER_EPOCH
ARGS = [f"--config.train.num_epochs={EPOCHS}", "--config.train.checkpoint_every_steps=2"]


def cli(workdir, *extra, wait=True):
    cmd = [sys.executable, "-m", "ferjax.main", f"--config={TINY}", f"--workdir={workdir}"]
    cmd += [*ARGS, *extra]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    out = cli(workdir)
    assert out.returncode == 0, explain(out)
    assert latest_params(workdir)[0] == TOTAL
    return workdir


def assert_same_params(a, b):
    (sa, pa), (sb, pb) = latest_params(a), latest_params(b)
    assert sa == sb == TOTAL
    assert_trees_equal(pa, pb)


def logged_step(workdir) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    losses = train_losses(workdir) if os.path.exists(path) else {}
    return max(losses, default=0)


def committed_steps(workdir) -> list[int]:
    latest = os.path.join(workdir, "checkpoints", "latest")
    if not os.path.isdir(latest):
        return []
    return sorted(int(d) for d in os.listdir(latest) if d.isdigit())


def freeze_mid_run(workdir, proc, at_step: int, timeout=300) -> int:
    """Waits until the run has logged `at_step` and committed a checkpoint, then freezes it
    with SIGSTOP, so that nothing more happens until the test sends the next signal. Returns
    the last logged step. Fails if the run ended (or died) first: the test's premise."""
    start = time.time()
    while time.time() - start < timeout:
        if logged_step(workdir) >= at_step and committed_steps(workdir):
            proc.send_signal(signal.SIGSTOP)
            assert proc.poll() is None, "the run ended before it could be stopped mid-way"
            stopped = logged_step(workdir)
            assert stopped < TOTAL and not os.path.exists(os.path.join(workdir, "report.json"))
            return stopped
        assert proc.poll() is None, explain((proc.returncode, proc.stderr.read()))
        time.sleep(0.01)
    raise AssertionError(f"step {at_step} not reached in {timeout}s")


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, straight):
    kill_at = random.Random().randint(3, TOTAL // 2)
    proc = cli(str(tmp_path), wait=False)
    stopped = freeze_mid_run(str(tmp_path), proc, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # The premise: the process died of the SIGKILL, mid-run, before its final checkpoint and
    # report.
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "report.json")
    assert max(committed_steps(str(tmp_path))) <= stopped < TOTAL
    out = cli(str(tmp_path))
    assert out.returncode == 0, explain(out)
    resumed = int(out.stdout.split("resumed from step ")[1].split()[0])
    assert 2 <= resumed <= stopped, (resumed, stopped, kill_at)
    assert_same_params(straight, str(tmp_path))
    assert train_losses(straight) == train_losses(str(tmp_path))


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits(tmp_path, straight):
    proc = cli(str(tmp_path), wait=False)
    stopped = freeze_mid_run(str(tmp_path), proc, 11)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, explain((proc.returncode, err))
    assert err.count("stopped by signal at step") == 1, err  # said once
    at = int(err.split("stopped by signal at step ")[1].split(";")[0])
    assert stopped <= at < TOTAL and not os.path.exists(tmp_path / "report.json")
    assert latest_params(str(tmp_path))[0] == at
    out = cli(str(tmp_path))
    assert out.returncode == 0, explain(out)
    assert f"resumed from step {at} " in out.stdout
    assert_same_params(straight, str(tmp_path))


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    workdir = str(tmp_path)
    halted = tiny_config(train__checkpoint_every_steps=2, train__halt_after_steps=6)
    assert run(halted, workdir) is None
    latest = os.path.join(workdir, "checkpoints", "latest")
    assert sorted(int(d) for d in os.listdir(latest) if d.isdigit()) == [4, 6]
    truncated = 0
    for root, _, files in os.walk(os.path.join(latest, "6")):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 0:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                truncated += 1
    assert truncated > 0
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        run(tiny_config(train__checkpoint_every_steps=2), workdir)
    assert f"warning: checkpoint {latest}/6 cannot be restored" in err.getvalue()
    assert "resumed from step 4 of 16" in out.getvalue()
    assert latest_params(workdir)[0] == 16


@pytest.mark.slow
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_config(train__checkpoint_every_steps=2, train__debug_nan_step=5)
    with pytest.raises(TrainingDiverged) as e:
        run(config, str(tmp_path))
    assert str(e.value) == (
        "non-finite loss at step 5; training stopped, the last good checkpoint is step 4 in "
        f"{tmp_path}/checkpoints/latest"
    )
    step, state = latest_params(str(tmp_path))
    assert step == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


@pytest.mark.slow
def test_nan_rollback_lowers_learning_rate_and_finishes(tmp_path, capsys):
    config = tiny_config(
        train__checkpoint_every_steps=2, train__debug_nan_step=5, train__on_nan="rollback"
    )
    report = run(config, str(tmp_path))
    assert report is not None
    assert "non-finite loss at step 5; rolled back to step 4 with learning-rate scale 0.5" in (
        capsys.readouterr().out
    )
    _, state = latest_params(str(tmp_path))
    assert float(np.asarray(state["lr_scale"])) == 0.5


@pytest.mark.slow
def test_changed_config_is_refused_on_resume(tmp_path):
    run(tiny_config(train__halt_after_steps=3), str(tmp_path))
    with pytest.raises(CheckpointError) as e:
        run(tiny_config(optim__learning_rate=0.01), str(tmp_path))
    assert "optim.learning_rate (0.05 -> 0.01)" in str(e.value)
    assert (
        run(tiny_config(optim__learning_rate=0.01, train__allow_config_change=True), str(tmp_path))
        is not None
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            dict(optim__learning_rate=-0.1),
            "config.optim.learning_rate: got -0.1, expected a positive number",
        ),
        (
            dict(train__batch_size=30),
            "config.train.batch_size: got 30, expected a multiple of the device count (8)",
        ),
        (dict(model__name="vgg99"), "config.model.name: got 'vgg99', expected one of "),
        (dict(sampling__method="smite"), "config.sampling.method: got 'smite', expected one of"),
    ],
)
def test_config_mistakes(override, message):
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(**override), device_count=8)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_unknown_class_name(tmp_path):
    with pytest.raises(ConfigError) as e:
        run(tiny_config(data__classes="happy,gloomy"), str(tmp_path))
    assert str(e.value).startswith("data.classes: unknown class 'gloomy'; this dataset has angry,")


def test_foreign_workdir_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError) as e:
        Workdir(str(tmp_path)).check_usable()
    assert "holds files that are not from a ferjax run" in str(e.value)
    Workdir(str(tmp_path / "new")).check_usable()  # a new directory is fine


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, line",
    [
        (["--config.train.bogus=1"], "error: --config.train.bogus: unknown config key"),
        (
            ["--config.optim.learning_rate=-1"],
            "error: config.optim.learning_rate: got -1.0, expected a positive number",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, line):
    out = cli(str(tmp_path / "w"), *extra)
    assert out.returncode == 2
    assert out.stderr.strip().startswith(line)
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr

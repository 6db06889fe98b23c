"""Shared test helpers: tiny configs on procedural faces, training runs, reading checkpoints and
metrics back with plain Orbax / JSON, and running the command-line tools in subprocesses.

Tiers: `pytest -m "not slow"` runs in under 3 minutes on 2 cores (no test in it runs the
trainer end to end); every test that runs the trainer or a tool in a subprocess is marked slow.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "configs" / "tiny.py")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ferjax  # noqa: E402,F401 - sets the XLA and TensorFlow environment first

# The CPU that kernel choices depending on the host (ferjax.runtime.cpu) are made for in tests, so
# that every test takes the same paths on any x86-64 machine: half-width AVX-512 units (AMD Zen
# 4), where WinogradConv computes every 3x3 stride-1 layer of >= 8 input channels by Winograd.
PINNED_CPU = ("AuthenticAMD", 0x19, frozenset({"avx2", "fma", "avx512f"}))


@pytest.fixture(autouse=True)
def _pinned_cpu(monkeypatch):
    from ferjax.runtime import cpu

    monkeypatch.setattr(cpu, "host_cpu", lambda path=cpu.CPUINFO: cpu.Cpu(*PINNED_CPU))


def load_config(name: str = "default"):
    return runpy.run_path(str(ROOT / "configs" / f"{name}.py"))["get_config"]()


def set_keys(config, **overrides):
    """Overrides given as section__key=value (e.g. train__num_epochs=1)."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def tiny_config(**overrides):
    """tests/configs/tiny.py (256 procedural faces, a CNN of 8/16 channels, 2 epochs of 8 steps)
    with overrides given as section__key=value."""
    return set_keys(runpy.run_path(TINY)["get_config"](), **overrides)


def train(config, workdir) -> dict | None:
    """One training run in this process, as `python -m ferjax.main` runs it."""
    from ferjax.cli.train import run_training

    return run_training(config, str(workdir))


def latest_params(workdir, which: str = "latest"):
    """(step, train state) of the newest checkpoint, read with plain Orbax (no ferjax code) as
    NumPy arrays, whatever device topology wrote it."""
    root = os.path.join(workdir, "checkpoints", which)
    step = max(int(d) for d in os.listdir(root) if d.isdigit())
    path = os.path.join(root, str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return step, checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def train_losses(workdir) -> dict[int, float]:
    """{step: logged train loss} of metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def assert_trees_equal(a, b) -> int:
    """Leaf-by-leaf bitwise equality of two checkpointed states; returns the leaf count."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    return len(la)


def gemm_rounds_like_xla(x, kern, strides, padding) -> bool:
    """Whether this CPU's XLA convolution of a single-channel x and the GEMM of its patches
    (ferjax.models.ops.im2col's single-channel forward) give the same bits for these operands:
    they accumulate the KH*KW products in the same order on the CPUs measured, but a machine
    whose kernels differ may round otherwise. The premise of the bitwise comparisons."""
    from jax import lax

    from ferjax.models.ops import im2col

    pads = tuple(tuple(p) for p in im2col._pads(x.shape[1:3], kern.shape[:2], strides, padding))
    dn = im2col.DIMENSION_NUMBERS
    xla = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, strides, pads, dimension_numbers=dn))
    gemm = jax.jit(lambda a, b: im2col._single_channel_forward(a, b, strides, pads))
    return bool(np.array_equal(xla(x, kern), gemm(x, kern)))


def explain(out: subprocess.CompletedProcess | tuple) -> str:
    """A failed subprocess for an assertion message: exit status, the first line that looks
    like an error, then the head and the tail of stderr (the cause is usually near the top, the
    module list of a crash at the bottom)."""
    rc, err = (out.returncode, out.stderr) if hasattr(out, "stderr") else out
    err = err or ""
    lines = err.splitlines()
    first = next(
        (ln for ln in lines if any(w in ln for w in ("error", "Error", "FAILED", "Timed out"))),
        "",
    )
    head, tail = "\n".join(lines[:40]), "\n".join(lines[-15:])
    return (
        f"exit {rc}; first error line: {first}\n--- stderr head ---\n{head}\n--- tail ---\n{tail}"
    )


def cli(tool: str, *args, env=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    """python -m ferjax <tool> ARGS (`python -m ferjax.main ARGS` for tool "main") from the
    repository root (captured, text)."""
    command = ["ferjax.main"] if tool == "main" else ["ferjax", tool]
    return subprocess.run(
        [sys.executable, "-m", *command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished tiny run (1 epoch, quiet), shared by the tests that only read a workdir."""
    path = tmp_path_factory.mktemp("tiny_run")
    train(tiny_config(train__num_epochs=1, train__verbosity=0), path)
    return path


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """An untrained tiny run's workdir (untrained_run), one per test module."""
    return untrained_run(tmp_path_factory.mktemp("fresh"), tiny_config())


@pytest.fixture(scope="module")
def trained(fresh_run):
    """fresh_run loaded as the tools load a run (ferjax.deploy.inference.load_run)."""
    from ferjax.deploy.inference import load_run

    return load_run(fresh_run)


def call_tool(main, argv: list[str]) -> int:
    """A tool's main(argv) under the command-line convention (ferjax.cli.flags.run): its exit
    status, with `error: ...` lines on stderr for user mistakes."""
    from ferjax.cli.flags import run

    with pytest.raises(SystemExit) as e:
        run(main, argv)
    return e.value.code


def untrained_run(workdir, config, num_classes: int = 7, class_names=None) -> str:
    """A workdir as a finished run leaves it (config.json, model_info.json, a best
    checkpoint) with the initial parameters, written without training: for the tools that read
    runs (evaluate, predict, export) in fast tests."""
    from ferjax.data.dataset import FER2013_CLASSES
    from ferjax.runtime.workdir import RunInfo, Workdir
    from ferjax.training.checkpoint import Checkpoints
    from ferjax.training.program import build

    size, channels = config.data.image_size, config.data.channels
    program = build(
        config,
        num_classes=num_classes,
        image_shape=(size, size, channels),
        steps_per_epoch=1,
        norm=(128.0, 64.0),
    )
    run = Workdir(str(workdir))
    run.write_config(config)
    model = program.config.model
    run.write_info(
        RunInfo(
            class_names=tuple(class_names or FER2013_CLASSES[:num_classes]),
            image_shape=(size, size),
            channels=channels,
            normalization=program.norm,
            model=model.name,
            style=model.style if model.name == "resnet50" else None,
            stem=model.stem if model.name in ("resnet18", "resnet34") else None,
        )
    )
    ckpts = Checkpoints(run, async_save=False)
    ckpts.save_best(1, program.state, {"best_value": 0.0, "best_step": 1})
    ckpts.close()
    return str(workdir)


def initial_params():
    """The tiny config's initial parameters (without warm-up): the same for every device layout
    (the initialisation depends on the seed only)."""
    from ferjax.training.program import build

    config = tiny_config(optim__warmup_epochs=0.0)
    program = build(
        config, num_classes=7, image_shape=(48, 48, 1), steps_per_epoch=8, norm=(128.0, 64.0)
    )
    return jax.device_get(program.state.params)


def assert_same_step(a, b, p0) -> None:
    """Two layouts' parameters after the same step equal to float32 rounding, measured against
    the size of the step's update: max |a - b| <= 1e-4 max |a - p0|, tensor by tensor."""
    la, lb, l0 = jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(p0)
    assert len(la) == len(lb) == len(l0) > 0
    for x, y, z in zip(la, lb, l0, strict=True):
        update = float(np.max(np.abs(np.asarray(x) - np.asarray(z))))
        assert update > 0
        assert float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) <= 1e-4 * update + 1e-9

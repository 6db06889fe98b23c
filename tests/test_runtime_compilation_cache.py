"""JAX's persistent compilation cache (train.compilation_cache_dir) never hands back a program
compiled under other settings: changing FERJAX_CPU_TUNING, XLA_FLAGS, the device count or the
model compiles afresh, and the same settings again hit the entry they made. Counted with JAX's
public monitoring events, around the compilation of the train step only. Slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, explain

pytestmark = pytest.mark.slow

CHILD = """
import json, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import ferjax
from ferjax.runtime import platform
import jax
from jax import monitoring
from bench.program import ferjax_program
from conftest import tiny_config

from ferjax.runtime.clock import CACHE_EVENTS

events = {{"hits": 0, "misses": 0}}
def listen(name, **kwargs):
    if name in CACHE_EVENTS:
        events[CACHE_EVENTS[name]] += 1
monitoring.register_event_listener(listen)
# JAX stores (and counts a miss) only for programs slower to compile than a threshold; the
# test is about keys, so every compiled program is stored however fast this machine is
platform.CACHE_MIN_COMPILE_SECS = 0
platform.enable_compilation_cache({cache!r})
config = tiny_config(model__cnn_widths={widths!r}, train__batch_size=32)
program, data, batches = ferjax_program(config, num_batches=1)
events.update(hits=0, misses=0)  # the train step's compilation only
program.train_step.lower(program.state, data, batches[0]).compile()
print(json.dumps({{**events, "devices": jax.device_count()}}))
"""


def compile_step(cache: str, widths: str = "8,16", devices: int = 1, **env) -> dict:
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), cache=cache, widths=widths)
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "FERJAX_CPU_TUNING")}
    environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environ
    )
    assert out.returncode == 0, explain(out)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_other_settings_compile_afresh_and_the_same_settings_hit(tmp_path):
    cache = str(tmp_path / "cache")
    miss, hit = {"hits": 0, "misses": 1}, {"hits": 1, "misses": 0}
    first = compile_step(cache)
    assert {k: first[k] for k in miss} == miss and first["devices"] == 1
    assert {k: v for k, v in compile_step(cache).items() if k in hit} == hit
    variants = {
        "FERJAX_CPU_TUNING=0": dict(FERJAX_CPU_TUNING="0"),
        "another XLA flag": dict(XLA_FLAGS_EXTRA="1"),
        "2 devices": dict(devices=2),
        "another model": dict(widths="8,24"),
    }
    for name, change in variants.items():
        kwargs = dict(change)
        if kwargs.pop("XLA_FLAGS_EXTRA", None):
            kwargs["XLA_FLAGS"] = (
                "--xla_force_host_platform_device_count=1 --xla_cpu_enable_fast_math=false"
            )
        got = compile_step(cache, **kwargs)
        assert {k: got[k] for k in miss} == miss, name  # compiled afresh
    # Its own entry is what a second run with the same other settings gets.
    again = compile_step(cache, FERJAX_CPU_TUNING="0")
    assert {k: again[k] for k in hit} == hit

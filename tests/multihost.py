"""Running ferjax as several processes on this machine (JAX's distributed runtime over
loopback, gloo collectives), with an optional CPU load next to it: shared by
tests/test_runtime_multihost.py and the by-hand loop tests/stress_multihost.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "configs" / "tiny.py")
# 1 epoch of 8 steps, no warm-up (so that step 1 already updates the parameters).
ARGS = [
    "--config.train.num_epochs=1",
    "--config.optim.warmup_epochs=0",
    "--config.train.compilation_cache_dir=",
]


# What python runs by default: the trainer.
TRAINER = ("-m", "ferjax.main")


def command(workdir: str, entry: tuple[str, ...] = TRAINER) -> list[str]:
    return [sys.executable, *entry, f"--config={TINY}", f"--workdir={workdir}"]


def launch(
    workdir: str,
    processes: int,
    devices: int,
    *extra: str,
    wait=True,
    timeout=900,
    entry: tuple[str, ...] = TRAINER,
):
    """`processes` x `devices`: one process (forced CPU devices) or launch/local.sh. `entry`:
    what python runs (the trainer's module by default)."""
    cmd = command(workdir, entry) + ARGS + list(extra)
    env = dict(os.environ, DEVICES_PER_PROCESS=str(devices))
    env.pop("XLA_FLAGS", None)
    if processes == 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    else:
        cmd = ["bash", "launch/local.sh", str(processes), *cmd]
    kwargs = dict(cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return subprocess.Popen(cmd, start_new_session=True, **kwargs)
    return subprocess.run(cmd, timeout=timeout, **kwargs)


class CpuLoad:
    """`processes` busy loops (one per core by default) for at most `seconds`: another
    CPU-heavy job next to the run under test."""

    CODE = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"

    def __init__(self, seconds: float = 300.0, processes: int | None = None):
        self.seconds = seconds
        self.count = processes or len(os.sched_getaffinity(0))
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> CpuLoad:
        code = self.CODE.format(s=self.seconds)
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.count)]
        self.started = time.time()
        return self

    def busy(self) -> bool:
        """The premise of a test under load: every busy loop is still running."""
        return all(p.poll() is None for p in self.procs)

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()


def jax_processes(session: int) -> dict[int, int]:
    """{JAX_PROCESS_ID: pid} of the ferjax processes started in session `session` (a launch
    with wait=False starts its own session)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != session:
                continue
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        ids = [e.split(b"=", 1)[1] for e in env if e.startswith(b"JAX_PROCESS_ID=")]
        if ids and b"ferjax.main" in cmdline:
            found[int(ids[0])] = int(entry)
    return found

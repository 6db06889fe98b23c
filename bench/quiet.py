"""Timing on a shared machine: wait until other processes are idle, then run measurements as
fresh subprocesses in alternation and keep a record of how quiet the machine was.

On the 2-core benchmark VM, other jobs change ratios, not just times (PyTorch's OpenMP threads
lose far more than XLA's under load: 1.07x under load vs 0.61x quiet for the same comparison),
so every sample records the CPU time other processes used before and while it ran.

CPU accounting: /proc/stat gives the machine's busy time (user, nice, system, irq, softirq and
steal jiffies: steal is time the hypervisor gave to other VMs). /proc/<pid>/stat gives this
process's utime + stime + cutime + cstime, and the same for every live descendant, so "other" =
machine busy - own busy, in cores (1.0 = one core fully used by someone else).

    python -m bench.quiet            # one reading of the machine, as JSON
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# /proc/stat "cpu" fields: user nice system idle iowait irq softirq steal guest guest_nice.
# guest and guest_nice are already counted in user and nice.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_COUNTED_FIELDS = 8


@dataclass(frozen=True)
class MachineTimes:
    """Cumulative jiffies of all CPUs together (from /proc/stat's first line)."""

    busy: int
    total: int
    steal: int
    cpus: int


def parse_proc_stat(text: str) -> MachineTimes:
    """/proc/stat contents -> MachineTimes. The number of CPUs is the number of 'cpuN' lines."""
    lines = text.splitlines()
    head = next((ln for ln in lines if ln.startswith("cpu ")), None)
    if head is None:
        raise ValueError("/proc/stat: no aggregate 'cpu ' line")
    fields = [int(v) for v in head.split()[1:]]
    fields += [0] * (_COUNTED_FIELDS - len(fields))
    busy = sum(fields[i] for i in _BUSY_FIELDS)
    total = sum(fields[:_COUNTED_FIELDS])
    cpus = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return MachineTimes(busy=busy, total=total, steal=fields[7], cpus=max(cpus, 1))


def parse_pid_stat(text: str) -> int:
    """/proc/<pid>/stat contents -> utime + stime + cutime + cstime in jiffies.

    The command name (field 2) may contain spaces and parentheses, so fields are counted from
    the last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(v) for v in rest[11:15])


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids += [int(v) for v in _read(f"/proc/{pid}/task/{tid}/children").split()]
        except OSError:
            continue
    return kids


def own_jiffies(pid: int | None = None) -> int:
    """CPU jiffies of this process (or `pid`), its reaped children and all live descendants."""
    root = pid or os.getpid()
    total, todo, seen = 0, [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            total += parse_pid_stat(_read(f"/proc/{p}/stat"))
        except (OSError, ValueError):
            continue
        todo += _children(p)
    return total


@dataclass(frozen=True)
class Snapshot:
    machine: MachineTimes
    own: int
    wall: float


def snapshot() -> Snapshot:
    return Snapshot(parse_proc_stat(_read("/proc/stat")), own_jiffies(), time.monotonic())


def other_cores(before: Snapshot, after: Snapshot) -> dict:
    """Cores' worth of CPU used by other processes between two snapshots (and the steal part)."""
    total = max(after.machine.total - before.machine.total, 1)
    busy = after.machine.busy - before.machine.busy
    own = after.own - before.own
    cpus = after.machine.cpus
    return {
        "other_cores": max(busy - own, 0) / total * cpus,
        "own_cores": own / total * cpus,
        "steal_cores": (after.machine.steal - before.machine.steal) / total * cpus,
        "seconds": after.wall - before.wall,
    }


def loadavg() -> list[float]:
    return [float(v) for v in _read("/proc/loadavg").split()[:3]]


def wait_until_quiet(
    max_other_cores: float = 0.15, window_s: float = 1.0, max_wait_s: float = 300.0
) -> dict:
    """Blocks until other processes used less than `max_other_cores` over one `window_s` window,
    or until `max_wait_s` has passed. Returns the last window's reading: other_cores (float),
    steal_cores, loadavg [1, 5, 15 min], waited_s, windows (how many were read) and gave_up
    (True when the machine never became quiet)."""
    start = time.monotonic()
    windows = 0
    while True:
        before = snapshot()
        time.sleep(window_s)
        reading = other_cores(before, snapshot())
        windows += 1
        waited = time.monotonic() - start
        quiet = reading["other_cores"] < max_other_cores
        if quiet or waited >= max_wait_s:
            return {
                "other_cores": round(reading["other_cores"], 4),
                "steal_cores": round(reading["steal_cores"], 4),
                "loadavg": loadavg(),
                "waited_s": round(waited, 2),
                "windows": windows,
                "gave_up": not quiet,
            }


def parse_result_line(stdout: str) -> dict:
    """The last line of a runner's stdout that is a JSON object (earlier lines may be logs)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(f"no JSON object line in the runner's output: {stdout[-500:]!r}")


def _numeric_leaves(d: Mapping, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            out[key] = float(v)
        elif isinstance(v, Mapping):
            out.update(_numeric_leaves(v, key + "/"))
    return out


def summarize(samples: Sequence[Mapping]) -> dict:
    """Per numeric leaf of the samples (nested keys joined by '/'): median, min, max and n over
    the samples that have it."""
    values: dict[str, list[float]] = {}
    for s in samples:
        for k, v in _numeric_leaves(s).items():
            values.setdefault(k, []).append(v)
    return {
        "median": {k: statistics.median(v) for k, v in values.items()},
        "min": {k: min(v) for k, v in values.items()},
        "max": {k: max(v) for k, v in values.items()},
        "n": {k: len(v) for k, v in values.items()},
    }


def interleave(
    runners: Mapping[str, Sequence[str]],
    repeats: int,
    max_other_cores: float = 0.15,
    window_s: float = 1.0,
    max_wait_s: float = 300.0,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    verbose: bool = True,
) -> dict:
    """Runs every runner (an argv list; it prints one JSON object line with its measurement)
    `repeats` times as a fresh subprocess, in the order A, B, ..., A, B, ..., waiting for a
    quiet machine before each run.

    Returns {"runners": {name: {"samples": [dict], "quiet": [dict], "median": {key: value},
    "min": ..., "max": ..., "n": ...}}, "order": [name, ...]}, where a sample's "quiet" record
    is wait_until_quiet's reading before it plus "during": other processes' CPU use while it
    ran (other_cores, steal_cores, seconds). Raises RuntimeError when a runner fails."""
    out: dict = {"runners": {k: {"samples": [], "quiet": []} for k in runners}, "order": []}
    run_env = dict(os.environ if env is None else env)
    for rep in range(repeats):
        for name, argv in runners.items():
            quiet = wait_until_quiet(max_other_cores, window_s, max_wait_s)
            before = snapshot()
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, env=run_env, timeout=timeout_s
            )
            quiet["during"] = {k: round(v, 4) for k, v in other_cores(before, snapshot()).items()}
            if proc.returncode != 0:
                raise RuntimeError(
                    f"runner {name!r} exited with {proc.returncode}: {proc.stderr[-2000:]}"
                )
            sample = parse_result_line(proc.stdout)
            out["runners"][name]["samples"].append(sample)
            out["runners"][name]["quiet"].append(quiet)
            out["order"].append(name)
            if verbose:
                during = quiet["during"]["other_cores"]
                print(
                    f"[{rep + 1}/{repeats}] {name}: {during:.2f} other cores while running, "
                    f"{quiet['other_cores']:.2f} before (waited {quiet['waited_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    for rec in out["runners"].values():
        rec.update(summarize(rec["samples"]))
    return out


def quiet_summary(result: dict) -> dict:
    """Worst and median 'other cores' over all samples of an interleave() result, before and
    while running, and how many waits gave up."""
    before, during, gave_up = [], [], 0
    for rec in result["runners"].values():
        for q in rec["quiet"]:
            before.append(q["other_cores"])
            during.append(q["during"]["other_cores"])
            gave_up += bool(q["gave_up"])
    if not before:
        return {}
    return {
        "other_cores_before_max": max(before),
        "other_cores_during_median": statistics.median(during),
        "other_cores_during_max": max(during),
        "gave_up": gave_up,
        "samples": len(before),
    }


if __name__ == "__main__":
    print(json.dumps(wait_until_quiet(max_wait_s=0)))

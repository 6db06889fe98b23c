"""Multi-process runs: start-up of JAX's distributed runtime, and a watchdog so that a run with
a failed or vanished process never hangs.

One process per host (or per GPU); each drives its local devices and feeds its part of every
global batch. Processes join through a coordinator (process 0) over TCP.

When something goes wrong in one process of a multi-process run, the others would otherwise sit
in their next collective or barrier until a timeout (minutes) and then abort with a stack
trace. Instead:
- each process records where it is (`where(step, phase)`), for the error line;
- a process that fails (an exception, a collective that errors because a peer vanished, a
  checkpoint barrier that times out) publishes one line in the coordination service's
  key-value store and leaves at once (`fail`), without JAX's exit barrier, which would wait for
  the dead peer and then abort;
- a watchdog thread in every process reads that key and the peers' heartbeats: it stops its
  process with one line when a peer reported a failure, or when a peer's heartbeat has not
  moved for `STALE_SECONDS` (killed, frozen, or its host is gone).
So every process exits within about a minute, each with one line naming the process, the step
and what it was doing.

The watchdog is stopped and joined before the interpreter exits (`stop_watchdog`, also run at
exit before JAX shuts its runtime down): a daemon thread still inside a call into the runtime's
client when Python finalises is ended by a forced unwind through C++ frames, which aborts the
process ("terminate called ... FATAL: exception not rethrown", exit 134) after a run that
succeeded.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

import jax

FAILED_KEY = "ferjax/failed"
HEARTBEAT_KEY = "ferjax/heartbeat/"
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 45.0
EXIT_CODE = 2

_where = {"step": 0, "phase": "start-up"}
_watchdog: Watchdog | None = None


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> str:
    """Starts JAX's distributed runtime when this is one process of several, and the watchdog.

    Explicit arguments win; then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID;
    then JAX's own cluster detection (SLURM with more than one task, Cloud TPU pods, Open MPI,
    Kubernetes). Returns how it was started ("" when single-process).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    how = ""
    if coordinator_address and num_processes and num_processes > 1:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        how = "explicit"
    else:
        slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
        tpu_pod = "TPU_WORKER_HOSTNAMES" in env and "," in env["TPU_WORKER_HOSTNAMES"]
        mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        if slurm or tpu_pod or mpi:
            jax.distributed.initialize()
            how = "auto"
    if how and jax.process_count() > 1:
        start_watchdog()
    return how


def where(step: int, phase: str) -> None:
    """Records what this process is doing (named in the line printed if the run fails)."""
    _where["step"], _where["phase"] = step, phase


def _client():
    from jax._src import distributed  # the runtime's key-value store: no public accessor

    return distributed.global_state.client


def _position() -> str:
    return (
        f"process {jax.process_index()} of {jax.process_count()}, step {_where['step']}, "
        + (_where["phase"])
    )


def _leave(line: str) -> None:
    """Prints `line` and ends the process now (skipping JAX's exit barrier)."""
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def fail(error: BaseException | str) -> None:
    """This process failed: tell the others (coordination service key), print one line, exit."""
    text = error if isinstance(error, str) else _first_line(error)
    message = f"{_position()}: {text}"
    try:
        _client().key_value_set(FAILED_KEY, message, allow_overwrite=True)
    except Exception:  # noqa: BLE001 - the coordinator itself may be gone
        pass
    _leave(f"error: {message}")


def _first_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:400]


class Watchdog(threading.Thread):
    """Publishes this process's heartbeat and stops the process when a peer failed or its
    heartbeat stalled (see the module docstring)."""

    def __init__(self, stale_seconds: float = STALE_SECONDS):
        super().__init__(name="ferjax-watchdog", daemon=True)
        self.me, self.count = jax.process_index(), jax.process_count()
        self.stale_seconds = stale_seconds
        self.beats = 0
        self.stopping = threading.Event()

    def stop(self, timeout: float = 30.0) -> None:
        """Ends the loop and waits for it (a call into the runtime in flight returns first)."""
        self.stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout)

    def run(self) -> None:
        client = _client()
        seen: dict[int, tuple[str | None, float]] = {}
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                self.beats += 1
                client.key_value_set(f"{HEARTBEAT_KEY}{self.me}", str(self.beats), True)
                failed = client.key_value_try_get(FAILED_KEY)
            except Exception as e:  # noqa: BLE001 - not found, or the coordinator is gone
                failed = None
                if "NOT_FOUND" not in str(e) and "not found" not in str(e).lower():
                    _leave(
                        f"error: {_position()}: lost the coordination service (process 0) "
                        f"({_first_line(e)})"
                    )
            if failed:
                _leave(f"error: {_position()}: stopping because {failed}")
            for peer in range(self.count):
                if peer == self.me:
                    continue
                try:
                    beat = client.key_value_try_get(f"{HEARTBEAT_KEY}{peer}")
                except Exception:  # noqa: BLE001 - no heartbeat yet
                    beat = None
                last, since = seen.get(peer, (None, now))
                if beat != last:
                    seen[peer] = (beat, now)
                elif now - since > self.stale_seconds:
                    _leave(
                        f"error: {_position()}: process {peer} stopped responding (no "
                        f"heartbeat for {now - since:.0f} s: killed, frozen or its host is gone)"
                    )
            self.stopping.wait(HEARTBEAT_SECONDS)


def start_watchdog(stale_seconds: float = STALE_SECONDS) -> Watchdog:
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog(stale_seconds)
        _watchdog.start()
        # atexit runs last-registered first: this comes before JAX's runtime shutdown, which
        # was registered when the runtime started.
        atexit.register(stop_watchdog)
    return _watchdog


def stop_watchdog() -> None:
    """Stops and joins the watchdog (at the end of a run; harmless when none runs)."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None


def multi_process() -> bool:
    return jax.process_count() > 1

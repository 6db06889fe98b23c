"""Where a training run's wall clock goes: one account from the command's start to the report.

The account is a sequence of phases; `Clock.enter(name)` ends the current phase and starts
`name`, so every second from the clock's start to `Clock.account()` is charged to exactly one
phase and the parts add up to the total. Compilation is taken out of whichever phase it
happened in: JAX reports the duration of each trace, lowering and backend compile (a persistent
cache hit included) through `jax.monitoring`, and those seconds are charged to `compile`, by
program. Work dispatched asynchronously is charged to the phase in which the host waits for it
(a step's time to `steps`, a checkpoint's to `checkpoints`).

Phases, in the order a run meets them:
  start        the command's start (imports, the malloc re-exec, flags) to the run's start
  data         reading, parsing or generating the splits, cleaning, filtering
  sampling     the sampler (neighbour search for SMOTE/ADASYN) and the images' placement
  setup        model initialisation, optimizer, checkpoint manager, resume, run files
  steps        the training steps (host waits included)
  eval         validation and test predictions
  checkpoints  saving (and waiting for) checkpoints
  report       metrics, TensorBoard summaries and report.json
  figures      the figures
  compile      tracing, lowering and compiling every program (taken out of the phases above)
The interpreter's start before it imports ferjax and the process's exit after the summary line
are outside the account; bench/end_to_end.py measures them from outside.
"""

from __future__ import annotations

import collections
import resource
import threading
import time

PHASES = (
    "start",
    "data",
    "sampling",
    "setup",
    "compile",
    "steps",
    "eval",
    "checkpoints",
    "report",
    "figures",
)
# jax.monitoring's duration events of a compilation (jax/_src/dispatch.py).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_active: Clock | None = None
_listening = False


def command_start_time() -> float:
    """Seconds since the epoch at which this command started: when `ferjax` was first imported
    (the first thing every entry point does), carried over the malloc re-exec. Not the process's
    start in /proc: a shell's `exec` (`bash -c "... && python -m ferjax.main"` execs its last
    command) would date it to the shell's start."""
    import ferjax

    return ferjax.STARTED_AT


# jax.monitoring's events of the persistent compilation cache (jax/_src/compiler.py).
CACHE_EVENTS = {
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "misses",
}


def _on_event(event: str, **kwargs) -> None:
    clock = _active
    if clock is not None and event in CACHE_EVENTS:
        clock.cache[CACHE_EVENTS[event]] += 1


def _on_duration(event: str, duration: float, **kwargs) -> None:
    clock = _active
    if clock is not None and event in COMPILE_EVENTS:
        name = str(kwargs.get("fun_name", "?"))  # "jit(f)" when traced, "f" when compiled
        clock.add_compile(name[4:-1] if name.startswith("jit(") else name, duration)


def _listen() -> None:
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _listening = True


class Clock:
    """The account of one run. `since_command_start=True` (the command-line tools) starts it
    when the command started (`start` then covers the imports and the malloc re-exec; the
    interpreter's own start before importing ferjax, ~0.05 s, is outside); otherwise at
    construction."""

    def __init__(self, since_command_start: bool = False):
        now = time.time()
        self.t0 = min(command_start_time(), now) if since_command_start else now
        self.phase = "start"
        self.t_phase = self.t0
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.compiled: dict[str, float] = collections.defaultdict(float)
        self.cache = {"hits": 0, "misses": 0}
        self.marks: dict[str, float] = {}
        self._compile_in_phase = 0.0
        self._thread = threading.get_ident()
        self._lock = threading.Lock()

    def activate(self) -> Clock:
        """Makes this the clock that JAX's compile events are charged to."""
        global _active
        _listen()
        _active = self
        return self

    def add_compile(self, program: str, seconds: float) -> None:
        with self._lock:
            self.compiled[program] += seconds
            if threading.get_ident() == self._thread:
                self._compile_in_phase += seconds

    def enter(self, phase: str) -> str:
        """Ends the current phase, starts `phase`; returns the phase that ended."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
        now = time.time()
        with self._lock:
            compile_s = min(self._compile_in_phase, now - self.t_phase)
            self.seconds[self.phase] += now - self.t_phase - compile_s
            self.seconds["compile"] += compile_s
            self._compile_in_phase = 0.0
        ended, self.phase, self.t_phase = self.phase, phase, now
        return ended

    def mark(self, name: str) -> None:
        """Records the seconds from the clock's start to now as `name` (first one wins), e.g.
        "first_step": command to the first train step done."""
        self.marks.setdefault(name, round(time.time() - self.t0, 3))

    def account(self) -> dict:
        """The account up to now: {"total": s, "phases": {phase: s}, "compile_by_program":
        {name: s}, "compilation_cache": {"hits": n, "misses": n}, "process": {...}} where
        process holds the CPU seconds used (user, system: their sum over the total says how
        busy the run kept the cores) and the page faults and blocks read from disk (a cold
        page cache shows as thousands of major faults)."""
        self.enter(self.phase)
        phases = {p: round(self.seconds[p], 3) for p in PHASES if p in self.seconds}
        programs = sorted(self.compiled.items(), key=lambda kv: -kv[1])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "total": round(time.time() - self.t0, 3),
            "phases": phases,
            "compile_by_program": {k: round(v, 3) for k, v in programs},
            "marks": dict(self.marks),
            "compilation_cache": dict(self.cache),
            "process": {
                "user_s": round(usage.ru_utime, 2),
                "system_s": round(usage.ru_stime, 2),
                "major_page_faults": usage.ru_majflt,
                "blocks_read": usage.ru_inblock,
            },
        }

    def summary(self, account: dict | None = None) -> str:
        """`time: 71.0 s = start 6.0 + data 3.0 + compile 9.0 + steps 45.0 + ...` (phases of
        0.05 s or more, in PHASES order) of `account` (default: the account up to now)."""
        acc = account or self.account()
        parts = [f"{p} {s:.1f}" for p, s in acc["phases"].items() if s >= 0.05]
        line = f"time: {acc['total']:.1f} s = " + " + ".join(parts)
        if "first_step" in acc.get("marks", {}):
            line += f" (first step done at {acc['marks']['first_step']:.1f} s)"
        return line

    def close(self) -> None:
        global _active
        if _active is self:
            _active = None

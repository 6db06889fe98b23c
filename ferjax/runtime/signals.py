"""SIGTERM/SIGINT as a request to checkpoint and stop at the next step boundary (preemption is
a normal event: the run resumes from that checkpoint when the same command is run again)."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignal:
    """Context manager: while active, SIGTERM/SIGINT set a flag instead of killing the process.

    With several processes, all must stop at the same step, so the flag is exchanged (an
    all-gather) only at agreed sync points."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def requested(self, sync: bool) -> bool:
        """Whether to stop now. Single process: as soon as a signal arrived. Several processes:
        only when `sync` (every process calls this at the same steps with the same `sync`)."""
        if jax.process_count() == 1:
            return self.signum is not None
        if not sync:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
        return bool(np.any(flags))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

"""`ferjax train` with the multi-process watchdog polling the runtime's client without pause, so
that at any moment it is almost surely inside a call into the client: the worst case for the
interpreter's exit (see ferjax/runtime/distributed.py). Prints how often the watchdog beat and
whether it was still running when the run ended. Used by tests/test_runtime_multihost.py."""

from __future__ import annotations

import sys

from ferjax.cli import train
from ferjax.runtime import distributed

distributed.HEARTBEAT_SECONDS = 0.0
stop = distributed.stop_watchdog


def stop_and_report() -> None:
    dog = distributed._watchdog
    if dog is not None:
        print(f"watchdog beats {dog.beats} alive {dog.is_alive()}", flush=True)
    stop()


distributed.stop_watchdog = stop_and_report
sys.exit(train.main(sys.argv[1:]))

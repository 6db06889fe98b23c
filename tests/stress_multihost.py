"""By-hand reliability loop for multi-process runs under load (not collected by pytest):

    python tests/stress_multihost.py [--runs 5] [--layouts 2x1,4x1,2x2] [--load-seconds 900]

Each run trains the tiny config as N processes x D devices (launch/local.sh) while busy loops
keep every core busy, then checks that it finished (exit 0, report.json, 8 steps) and agrees
with a 1-process run at step 1. Prints one line per run and the pass count with times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from conftest import train_losses  # noqa: E402
from multihost import CpuLoad, launch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--layouts", default="2x1,4x1,2x2", help="PROCESSESxDEVICES, comma-separated")
    p.add_argument("--load-seconds", type=float, default=1800)
    args = p.parse_args(argv)
    layouts = [tuple(int(v) for v in x.split("x")) for x in args.layouts.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="stress_multihost_"))
    passed, total = 0, 0
    try:
        with CpuLoad(args.load_seconds) as load:
            reference = launch(str(tmp / "reference"), 1, 1)
            assert reference.returncode == 0, reference.stderr[-2000:]
            ref = train_losses(tmp / "reference")
            for run in range(args.runs):
                for procs, devices in layouts:
                    total += 1
                    workdir = tmp / f"run{run}_{procs}x{devices}"
                    start = time.time()
                    out = launch(str(workdir), procs, devices)
                    seconds = time.time() - start
                    ok = out.returncode == 0 and (workdir / "report.json").exists()
                    note = ""
                    if ok:
                        losses = train_losses(workdir)
                        ok = sorted(losses) == list(range(1, 9))
                        ok = ok and np.isclose(losses[1], ref[1], rtol=1e-5)
                        note = f"step-1 loss {losses.get(1, float('nan')):.6f} vs {ref[1]:.6f}"
                    else:
                        errors = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
                        note = f"exit {out.returncode}: {errors[:1]}"
                    passed += ok
                    busy = "under load" if load.busy() else "LOAD ENDED"
                    print(f"run {run + 1} {procs}x{devices}: {'ok' if ok else 'FAILED'} in "
                          f"{seconds:.0f} s ({busy}); {note}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed}/{total} runs passed")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())

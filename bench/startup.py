"""Start-up time: seconds from command to the first training step, cold and warm.

python -m bench.startup [--config cnn] [--csv fer2013.csv] [--runs 2]

Runs `python -m ferjax.main --config=configs/<config>.py` on a FER2013-sized Kaggle-format CSV
(35,887 procedural faces, written first unless --csv is given) with a fresh workdir each time and
reads its output as it comes: the time of the data line (imports + CSV parse or cache +
cleaning), of the placement line (model built, data on the device), when the first step started
(traced, compiled or loaded from the cache, dispatched) and when it was done (the trainer's
"first train step done ... ran in X s" line). The process is then killed. Run 1 starts with
empty compilation and data caches (cold); later runs reuse both (warm: JAX's persistent
compilation cache and the parsed-CSV cache). Writes bench/results/startup-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402

MARKS = {"data": "data: ", "placement": "placement: ", "first_step": "first train step done"}


def timed_start(cmd: list[str], timeout: float = 900.0) -> dict:
    """Seconds from launch until each MARKS line appears; kills the process after the last."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    seen: dict[str, float] = {}
    tail: list[str] = []
    try:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            for key, mark in MARKS.items():
                if key not in seen and line.startswith(mark):
                    seen[key] = time.perf_counter() - t0
                    ran = re.search(r"ran in ([0-9.]+)s", line)
                    if key == "first_step" and ran:
                        # The step started (compiled, dispatched) this long before its line.
                        seen["first_step_started"] = seen[key] - float(ran.group(1))
            if "first_step" in seen or time.perf_counter() - t0 > timeout:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    if "first_step" not in seen:
        raise RuntimeError("no 'first train step done' line; last output:\n" + "\n".join(tail))
    return seen


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cnn", help="configs/<name>.py")
    parser.add_argument("--csv", default="", help="a fer2013.csv (default: generate one)")
    parser.add_argument("--runs", type=int, default=2, help="1 cold + (runs - 1) warm")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": args.config,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="ferjax-startup-") as tmp:
        csv_path = Path(args.csv) if args.csv else Path(tmp) / "fer2013.csv"
        if not args.csv:
            from ferjax.data.sources.fer2013 import write_fer2013_csv
            from ferjax.data.sources.synthetic import make_synthetic

            write_fer2013_csv(str(csv_path), make_synthetic(28709, 3589, 3589, seed=0))
        for i in range(args.runs):
            cmd = [
                sys.executable,
                "-m",
                "ferjax.main",
                f"--config={ROOT / 'configs' / (args.config + '.py')}",
                f"--workdir={Path(tmp) / f'run{i}'}",
                "--config.data.name=fer2013",
                f"--config.data.path={csv_path}",
                f"--config.data.cache_dir={Path(tmp) / 'data_cache'}",
                f"--config.train.compilation_cache_dir={Path(tmp) / 'jax_cache'}",
                "--config.train.halt_after_steps=1",
            ]
            seen = timed_start(cmd)
            run = {"kind": "cold" if i == 0 else "warm", **{f"{k}_s": v for k, v in seen.items()}}
            results["runs"].append(run)
            print(
                f"{run['kind']:5s} data ready {seen.get('data', float('nan')):5.1f}s  "
                f"model + placement {seen.get('placement', float('nan')):5.1f}s  "
                f"first step started {seen.get('first_step_started', float('nan')):5.1f}s  "
                f"done {seen['first_step']:5.1f}s",
                flush=True,
            )
    results_io.save(results, args.out, "startup")
    return results


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()

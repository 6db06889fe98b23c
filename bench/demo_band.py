"""The README demo's accuracy band: `python -m ferjax.main --config=configs/demo.py` for several
training seeds and both FERJAX_CPU_TUNING settings (the two settings round convolutions
differently), each in a fresh process and workdir, on a quiet machine.

    python -m bench.demo_band [--seeds 0,1,2] [--tuning 0,1] [--caches warm] [--config.KEY=VALUE]

Prints test accuracy, balanced accuracy and wall time per run, the band (min-max) and the
majority-class rate, and writes bench/results/demo_band-<UTC time>.json. --config.* overrides
are passed to every run (for trying recipes). --caches cold gives every run fresh, empty
compilation and data caches (as the first run after install); warm (the default) uses the
user's. Each run's wall-clock account (time.json) is printed and saved.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402
from bench.quiet import wait_until_quiet  # noqa: E402


def run_once(
    seed: int, tuning: str, overrides: list[str], workdir: str, cache: str | None = None
) -> dict:
    """One demo run in a fresh process; `cache`: its compilation cache directory, with an empty
    data cache beside it (None: the user's caches)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
    env.update(FERJAX_CPU_TUNING=tuning, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "ferjax.main", "--config=configs/demo.py", f"--workdir={workdir}"]
    cmd += [f"--config.train.seed={seed}", *overrides]
    if cache:
        cmd.append(f"--config.train.compilation_cache_dir={cache}")
        env["FERJAX_CACHE"] = f"{cache}_data"  # rendered faces, parsed files
    quiet = wait_until_quiet()
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"run failed (seed {seed}, tuning {tuning}):\n{out.stderr[-3000:]}")
    report = json.loads((Path(workdir) / "report.json").read_text())
    support = [m["support"] for m in report["per_class"].values()]
    rare = min(report["per_class"], key=lambda n: report["per_class"][n]["support"])
    return {
        "rare_class": rare,
        "rare_recall": report["per_class"][rare]["recall"],
        "seed": seed,
        "cpu_tuning": tuning,
        "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "macro_f1": report["macro_f1"],
        "majority_rate": max(support) / sum(support),
        "wall_s": wall,
        "account": json.loads((Path(workdir) / "time.json").read_text()),
        "summary": next(ln for ln in out.stdout.splitlines() if ln.startswith("time: ")),
        "quiet": quiet,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tuning", default="0,1", help="FERJAX_CPU_TUNING values")
    p.add_argument("--caches", default="warm", choices=("warm", "cold"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        p.error(f"unknown arguments: {' '.join(bad)}")
    runs = []
    tmp = tempfile.mkdtemp(prefix="demo_band_")
    try:
        for tuning in args.tuning.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                workdir = os.path.join(tmp, f"t{tuning}_s{seed}")
                cache = (
                    os.path.join(tmp, f"jax_t{tuning}_s{seed}") if args.caches == "cold" else None
                )
                r = run_once(seed, tuning, overrides, workdir, cache)
                runs.append(r)
                print(
                    f"seed {seed} FERJAX_CPU_TUNING={tuning}: test accuracy {r['accuracy']:.3f} "
                    f"balanced {r['balanced_accuracy']:.3f} {r['rare_class']} recall "
                    f"{r['rare_recall']:.2f} in {r['wall_s']:.0f} s "
                    f"(other processes {r['quiet']['other_cores']:.2f} cores, "
                    f"load {r['quiet']['loadavg'][0]:.2f})",
                    flush=True,
                )
                print(f"  {r['summary']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    acc = [r["accuracy"] for r in runs]
    bal = [r["balanced_accuracy"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    rare = [r["rare_recall"] for r in runs]
    summary = {
        "rare_recall_band": [min(rare), max(rare)],
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "overrides": overrides,
        "caches": args.caches,
        "runs": runs,
        "accuracy_band": [min(acc), max(acc)],
        "balanced_accuracy_band": [min(bal), max(bal)],
        "wall_s_band": [min(wall), max(wall)],
        "majority_rate": runs[0]["majority_rate"],
    }
    print(
        f"band over {len(runs)} runs: test accuracy {min(acc):.3f}-{max(acc):.3f}, balanced "
        f"{min(bal):.3f}-{max(bal):.3f}, {runs[0]['rare_class']} recall "
        f"{min(rare):.2f}-{max(rare):.2f}, {min(wall):.0f}-{max(wall):.0f} s per run "
        f"(majority-class rate {summary['majority_rate']:.3f})"
    )
    results_io.save(summary, args.out, "demo_band")
    return summary


if __name__ == "__main__":
    main()

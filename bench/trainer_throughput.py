"""The trainer's own logged throughput (images/s that `python -m ferjax.main` writes to
metrics.jsonl) against PyTorch's train step of the same network, interleaved on a quiet machine.

python -m bench.trainer_throughput [--models cnn,resnet18] [--steps 16] [--repeats 3]
    -> table + bench/results/trainer_throughput-<UTC time>.json

A ferjax sample is one fresh `python -m ferjax.main` run of configs/default.py (procedural
faces, the default augmentation and sampling, `model.conv_impl=auto`) for `--steps` steps
logged every `--log-every` steps; it reports the median images/s over the logged windows but
the first (which holds compilation's tail). A PyTorch sample is one fresh process timing
`--steps` steps of bench/peers.py's channels-last build after 2 warm-up steps (a fixed batch:
no data loading or augmentation, which the trainer's figure includes). Runners alternate
A, B, A, B, each after a quiet-machine wait (bench/quiet.py) that is recorded with the sample.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quiet, results_io  # noqa: E402

BATCH = {"cnn": 128, "resnet18": 64}


def ferjax_sample(model: str, steps: int, log_every: int) -> dict:
    """One trainer run in a subprocess; the logged windows' images/s."""
    batch = BATCH[model]
    with tempfile.TemporaryDirectory(prefix="ferjax-tput-") as tmp:
        cmd = [
            sys.executable, "-m", "ferjax.main",
            f"--config={ROOT / 'configs' / 'default.py'}",
            f"--workdir={tmp}/run",
            f"--config.model.name={model}",
            f"--config.train.batch_size={batch}",
            f"--config.data.synthetic.num_train={batch * steps}",
            "--config.data.synthetic.num_val=256",
            "--config.data.synthetic.num_test=256",
            "--config.train.num_epochs=1",
            f"--config.train.log_every_steps={log_every}",
            f"--config.train.compilation_cache_dir={tmp}/cache",
        ]  # fmt: skip
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"ferjax.main exited with {proc.returncode}: {proc.stderr[-2000:]}")
        rows = [json.loads(line) for line in open(f"{tmp}/run/metrics.jsonl")]
    windows = [r for r in rows if "images_per_second" in r]
    if len(windows) < 2:
        raise RuntimeError(f"expected >= 2 logged train windows, got {len(windows)}")
    ips = [r["images_per_second"] for r in windows[1:]]
    return {
        "images_per_s": statistics.median(ips),
        "windows_images_per_s": [r["images_per_second"] for r in windows],
        "batch": batch,
        "wall_s": wall,
    }


def torch_sample(model: str, steps: int) -> dict:
    from bench import peers

    runner = peers.make("torch", model, BATCH[model])
    for _ in range(2):
        runner.step()
    times = [runner.step() for _ in range(steps)]
    med = statistics.median(times)
    return {"images_per_s": runner.batch / med, "step_s": times, "batch": runner.batch}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-other-cores", type=float, default=0.15)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.child:
        who, model = args.child.split(":")
        if who == "ferjax":
            print(json.dumps(ferjax_sample(model, args.steps, args.log_every)))
        else:
            print(json.dumps(torch_sample(model, args.steps)))
        return {}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    me = [
        sys.executable, "-m", "bench.trainer_throughput",
        "--steps", str(args.steps), "--log-every", str(args.log_every), "--child",
    ]  # fmt: skip
    models = [m for m in args.models.split(",") if m]
    runners = {f"{w}:{m}": [*me, f"{w}:{m}"] for m in models for w in ("ferjax", "torch")}
    env = dict(
        os.environ, GLIBC_TUNABLES=os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    )
    run = quiet.interleave(
        runners, args.repeats, max_other_cores=args.max_other_cores, env=env, timeout_s=1800
    )
    results = {"time": now, "steps": args.steps, "repeats": args.repeats, "models": {}}
    results["quiet"] = quiet.quiet_summary(run)
    print(f"{'model':9s} {'ferjax trainer img/s':>22s} {'torch step img/s':>18s}  ratio (band)")
    for m in models:
        f = [s["images_per_s"] for s in run["runners"][f"ferjax:{m}"]["samples"]]
        t = [s["images_per_s"] for s in run["runners"][f"torch:{m}"]["samples"]]
        ratio = statistics.median(f) / statistics.median(t)
        results["models"][m] = {
            "ferjax": run["runners"][f"ferjax:{m}"],
            "torch": run["runners"][f"torch:{m}"],
            "ratio_median": ratio,
            "ratio_min": min(f) / max(t),
            "ratio_max": max(f) / min(t),
        }
        print(
            f"{m:9s} {statistics.median(f):10.1f} [{min(f):.1f}-{max(f):.1f}]"
            f" {statistics.median(t):8.1f} [{min(t):.1f}-{max(t):.1f}]"
            f"  {ratio:.2f}x ({min(f) / max(t):.2f}-{max(f) / min(t):.2f})"
        )
    print(f"quiet: {json.dumps(results['quiet'])}")
    results_io.save(results, args.out, "trainer_throughput", now)
    return results


if __name__ == "__main__":
    main()

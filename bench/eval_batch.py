"""Evaluation throughput by batch size (`train.eval_batch_size`), and whether the probabilities
change with it.

python -m bench.eval_batch [--models demo_cnn,cnn,resnet18] [--batches 128,512] [--faces 3589]
                           [--repeats 3]

Each repeat is a fresh process started after a wait for a quiet machine (bench.quiet): it
builds the model of the config (seed 0, 48x48 grayscale, 7 classes), puts `--faces` random
faces on the device and times `evaluation.predict.predict_split` at every batch size (compiled
once, then the median of 3 passes), and says whether the probabilities are bitwise those of the
first batch size. Prints seconds per pass and faces/s (median and band over the repeats) with the
machine's CPU and how quiet it was; writes bench/results/eval_batch-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine, results_io  # noqa: E402
from bench.quiet import parse_result_line, wait_until_quiet  # noqa: E402

CONFIGS = {"demo_cnn": "demo.py", "cnn": "cnn.py", "resnet18": "resnet.py"}


def measure(model: str, batches: list[int], faces: int) -> dict:
    """One process's timings: {batch: seconds per pass}, and {batch: bitwise equal to the first
    batch size's probabilities}."""
    import runpy

    import numpy as np

    from ferjax.evaluation.predict import predict_split
    from ferjax.runtime import devices
    from ferjax.training.program import build

    config = runpy.run_path(str(ROOT / "configs" / CONFIGS[model]))["get_config"]()
    mesh = devices.make_mesh()
    program = build(
        config,
        num_classes=7,
        image_shape=(48, 48, 1),
        steps_per_epoch=100,
        norm=(None, None),
        mesh=mesh,
        class_counts=np.ones(7),
    )
    rng = np.random.default_rng(0)
    images = devices.replicate(rng.integers(0, 256, (faces, 48, 48, 1)).astype(np.uint8), mesh)
    variables = program.state.eval_variables()
    seconds, same, first = {}, {}, None
    for batch in batches:
        cache: dict = {}
        probs = predict_split(program.predict, variables, images, faces, batch, mesh, cache=cache)
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            predict_split(program.predict, variables, images, faces, batch, mesh, cache=cache)
            passes.append(time.perf_counter() - t)
        seconds[str(batch)] = statistics.median(passes)
        first = probs if first is None else first
        same[str(batch)] = bool(np.array_equal(probs, first))
    return {"seconds": seconds, "bitwise_same_as_first": same}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn")
    parser.add_argument("--batches", default="128,512")
    parser.add_argument("--faces", type=int, default=3589)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.run:
        print(json.dumps(measure(args.run, batches, args.faces)))
        return {}
    rec = machine.record()
    print(machine.line(rec))
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": rec,
        "faces": args.faces,
        "batches": batches,
        "models": {},
    }
    for model in args.models.split(","):
        runs = []
        for _ in range(args.repeats):
            quiet = wait_until_quiet()
            cmd = [sys.executable, "-m", "bench.eval_batch", "--run", model]
            cmd += ["--batches", args.batches, "--faces", str(args.faces)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
            runs.append({**parse_result_line(out.stdout), "quiet": quiet})
        results["models"][model] = runs
        for b in map(str, batches):
            s = [r["seconds"][b] for r in runs]
            same = all(r["bitwise_same_as_first"][b] for r in runs)
            worst = max(r["quiet"]["other_cores"] for r in runs)
            load = max(r["quiet"]["loadavg"][0] for r in runs)
            print(
                f"{model:9s} batch {b:>5s}: {statistics.median(s):.3f} s per pass "
                f"({min(s):.3f}-{max(s):.3f}), {args.faces / statistics.median(s):.0f} faces/s, "
                f"probabilities bitwise as at batch {batches[0]}: {same} "
                f"(other processes <= {worst:.2f} cores, load <= {load:.2f})"
            )
    results_io.save(results, args.out, "eval_batch")
    return results


if __name__ == "__main__":
    main()

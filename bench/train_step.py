"""Train-step throughput of ferjax's models (model.conv_impl=auto and others) and of PyTorch and
Keras peers of the same models, side by side.

python -m bench.train_step [--models demo_cnn,cnn,resnet18] [--steps 5] [--peers torch,keras]
python -m bench.train_step --dtype bfloat16 --batch 512 --models cnn,resnet18   # on a GPU

Each model runs ferjax's real jitted train step (gather, augmentation, forward/backward, SGD with
momentum and weight decay) on generated 48x48x1 data after warm-up; steps of all runners are
interleaved so that all see the same machine load, and the median step time is reported.
The process runs with ferjax's CPU tuning (ferjax/platform.py), peers included.
MFU = model FLOPs (XLA's cost analysis of the xla-impl step) / step time / practical peak, where
the peak is the best of a large float32 matmul through XLA and through numpy, measured in the
same run. Writes bench/results/train_step-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import runpy
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import results_io  # noqa: E402
from bench.program import ferjax_program  # noqa: E402
from ferjax import parallel  # noqa: E402
from ferjax import platform as ferjax_platform  # noqa: E402
from ferjax.models.layers import resolve_conv_impl  # noqa: E402

NUM_CLASSES = 7
IMAGE = 48
# name -> (config file, batch size)
MODELS = {
    "demo_cnn": ("demo.py", 128),
    "cnn": ("default.py", 128),
    "resnet18": ("default.py", 64),
}


def model_config(name: str, impl: str, dtype: str = "float32", batch: int = 0):
    config_file, default_batch = MODELS[name]
    config = runpy.run_path(str(ROOT / "configs" / config_file))["get_config"]()
    config.model.name = "resnet18" if name == "resnet18" else "cnn"
    config.model.conv_impl = impl
    config.train.batch_size = batch or default_batch
    config.train.dtype = dtype
    return config


def practical_peak(size: int = 3072, reps: int = 5, dtype: str = "float32") -> dict:
    """Best GFLOP/s of a [size, size] matmul through XLA (in `dtype`) and through numpy/BLAS
    (float32; on CPU only)."""
    rng = np.random.default_rng(0)
    if jax.default_backend() != "cpu":
        size *= 4
    a = rng.standard_normal((size, size), np.float32)
    flops = 2 * size**3
    aj = jnp.asarray(a, dtype)
    mm = jax.jit(lambda x: x @ x)
    mm(aj).block_until_ready()
    best = {"xla": 0.0, "numpy": 0.0}
    for _ in range(reps):
        t = time.perf_counter()
        mm(aj).block_until_ready()
        best["xla"] = max(best["xla"], flops / (time.perf_counter() - t) / 1e9)
        if jax.default_backend() == "cpu":
            t = time.perf_counter()
            a @ a
            best["numpy"] = max(best["numpy"], flops / (time.perf_counter() - t) / 1e9)
    best["peak"] = max(best["xla"], best["numpy"])
    return best


class FerjaxStep:
    """One model/impl: state, jitted step, fixed data; step() runs one blocking train step."""

    def __init__(self, name: str, impl: str, mesh, dtype: str = "float32", batch: int = 0):
        config = model_config(name, impl, dtype, batch)
        self.batch = config.train.batch_size
        program, self.data, self.batches = ferjax_program(config, (IMAGE, IMAGE, 1), NUM_CLASSES)
        self.state, self.fn = program.state, program.train_step
        self.flops = None
        self.calls = 0
        # Seconds until the jitted call returned (the step is dispatched, not finished).
        self.dispatch_s: list[float] = []

    def compile(self) -> float:
        t = time.perf_counter()
        compiled = self.fn.lower(self.state, self.data, self.batches[0]).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        self.flops = float(cost.get("flops", 0.0)) if cost else 0.0
        return time.perf_counter() - t

    def step(self) -> float:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        t = time.perf_counter()
        self.state, metrics = self.fn(self.state, self.data, batch)
        self.dispatch_s.append(time.perf_counter() - t)
        jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - t


def time_interleaved(
    runners: dict, steps: int, warmup: int, pause: float = 1.0
) -> dict[str, list[float]]:
    """Warm-up, then `steps` rounds of one step per runner in turn; returns seconds per step.
    `pause` seconds of sleep before each timed step let the previous runner's worker threads
    (OpenMP, Eigen and TensorFlow pools spin for a while after their work) go idle."""
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    times = {k: [] for k in runners}
    for _ in range(steps):
        for k, r in runners.items():
            time.sleep(pause)
            times[k].append(r.step())
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn,cnn,resnet18")
    parser.add_argument(
        "--impls", default="auto,xla", help="model.conv_impl values (auto = ferjax's default)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--dtype", default="float32", help="train.dtype of ferjax's step (GPU: bfloat16)"
    )
    parser.add_argument("--batch", type=int, default=0, help="batch size (0 = per model)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds before each step")
    parser.add_argument("--peers", default="", help="comma-separated: torch")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    mesh = parallel.make_mesh()
    peak = practical_peak(dtype=args.dtype)
    print(f"practical peak: XLA {peak['xla']:.0f}, numpy {peak['numpy']:.0f} GFLOP/s")
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "conv_impl_auto": resolve_conv_impl("auto"),
        "env": {
            k: os.environ.get(k) for k in ("XLA_FLAGS", "GLIBC_TUNABLES", ferjax_platform.SWITCH)
        },
        "peak_gflops": peak,
        "models": {},
    }
    peers = [p for p in args.peers.split(",") if p]
    for name in args.models.split(","):
        runners = {
            impl: FerjaxStep(name, impl, mesh, args.dtype, args.batch)
            for impl in args.impls.split(",")
        }
        compile_s = {impl: r.compile() for impl, r in runners.items()}
        for peer in peers:
            from bench import peers as peer_impls

            runners[peer] = peer_impls.make(peer, name, runners[args.impls.split(",")[0]].batch)
        times = time_interleaved(runners, args.steps, args.warmup, args.pause)
        batch = next(iter(runners.values())).batch
        # XLA's cost analysis counts a scan body once: take FLOPs from the plain-XLA impl.
        first = "xla" if "xla" in runners else args.impls.split(",")[0]
        flops = runners[first].flops
        row = {"batch": batch, "flops_per_step": flops, "compile_s": compile_s, "runs": {}}
        for k, ts in times.items():
            med = statistics.median(ts)
            row["runs"][k] = {
                "step_s": ts,
                "median_step_s": med,
                "images_per_s": batch / med,
                "mfu": flops / med / (peak["peak"] * 1e9) if flops else None,
            }
        for k, r in runners.items():
            if isinstance(r, FerjaxStep):
                row["runs"][k]["median_dispatch_s"] = statistics.median(r.dispatch_s[-args.steps :])
        results["models"][name] = row
        print_row(name, row, args.impls.split(","), peers)
        # The machine's load changes during a run: the peak is the best seen before and after
        # every model, and MFU is recomputed against it at the end.
        again = practical_peak(dtype=args.dtype)
        for key in ("xla", "numpy", "peak"):
            peak[key] = max(peak[key], again[key])
    for row in results["models"].values():
        for run in row["runs"].values():
            if row["flops_per_step"]:
                run["mfu"] = row["flops_per_step"] / run["median_step_s"] / (peak["peak"] * 1e9)
    print(
        f"\npractical peak over the run: XLA {peak['xla']:.0f}, numpy {peak['numpy']:.0f} GFLOP/s"
    )
    print(summary_table(results, peers))
    results_io.save(results, args.out, "train_step")
    return results


def summary_table(results: dict, peers: list[str]) -> str:
    """Markdown table: images/s per model and implementation, ferjax/peer ratios and MFU.
    'ferjax' is conv_impl=auto (what a run gets by default)."""
    impls = list(next(iter(results["models"].values()))["runs"])
    impls = [k for k in impls if k not in peers]
    head = "| model | batch | " + " | ".join(f"{c} img/s" for c in impls + peers) + " | "
    head += "".join(f"ferjax/{p} | " for p in peers) + "MFU ferjax |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in results["models"].items():
        runs = row["runs"]
        ips = {c: runs[c]["images_per_s"] for c in runs}
        cells = [f"{ips[c]:.1f}" if c in ips else "-" for c in impls + peers]
        ours = ips.get("auto", max(ips[c] for c in impls))
        peer_cells = [f"{ours / ips[p]:.2f}x" if p in ips else "-" for p in peers]
        mfu = runs.get("auto", {}).get("mfu")
        mfu_cell = f"{100 * mfu:.0f}%" if mfu else "-"
        line = f"| {name} | {row['batch']} | " + " | ".join(cells) + " | "
        lines.append(line + "".join(c + " | " for c in peer_cells) + mfu_cell + " |")
    return "\n".join(lines)


def print_row(name: str, row: dict, impls: list[str], peers: list[str]) -> None:
    runs = row["runs"]
    print(f"\n{name} (batch {row['batch']}, {row['flops_per_step'] / 1e9:.0f} GFLOP/step)")
    for k, r in runs.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        step = r["median_step_s"]
        line = f"  {k:8s} {r['images_per_s']:8.1f} images/s  median step {step:.3f} s  MFU {mfu}"
        if "median_dispatch_s" in r:
            line += f"  (call returns after {1e3 * r['median_dispatch_s']:.1f} ms)"
        print(line)
    ours = (
        runs["auto"]
        if "auto" in runs
        else max((runs[i] for i in impls if i in runs), key=lambda r: r["images_per_s"])
    )
    for p in peers:
        print(f"  ferjax/{p}: {ours['images_per_s'] / runs[p]['images_per_s']:.2f}x")


if __name__ == "__main__":
    ferjax_platform.reexec_with_malloc_tuning("bench.train_step")
    main()

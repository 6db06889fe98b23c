"""Train-step throughput of ferjax's models (model.conv_impl=auto and others) and of PyTorch and
Keras peers of the same models, side by side.

python -m bench.train_step [--models demo_cnn,cnn,resnet18] [--steps 5] [--peers torch,keras]
python -m bench.train_step --dtype bfloat16 --batch 512 --models cnn,resnet18   # on a GPU

Each model runs ferjax's real jitted train step (gather, augmentation, forward/backward, SGD with
momentum and weight decay) on generated 48x48x1 data after warm-up. Every runner (a ferjax
conv_impl, a peer, the matmul-peak probe) runs in fresh processes, `--repeats` times, in the
order A, B, ..., A, B, ..., each after a quiet-machine wait (bench/quiet.py); a process times
`--steps` steps and reports their median, and the table shows the median over processes.
The processes run with ferjax's CPU tuning (ferjax/runtime/platform.py, huge-page malloc),
peers included.
MFU = model FLOPs (XLA's cost analysis of the xla or fast impl's step: a direct convolution's
FLOPs; without either impl in --impls it is not reported) / step time / practical peak, where
the peak is the best of a large float32 matmul through XLA and through numpy, measured in the
same run. Winograd layers do 2.25-4x fewer multiplies than the FLOPs counted, so their "MFU"
can pass 100%. Writes bench/results/train_step-<UTC time>.json.

Besides model.conv_impl values (auto, xla, fast, gemm, winograd), --impls takes
wino<tile>[-<weight_grad>] (e.g. wino2, wino4): the step with every convolution built as
ferjax.models.winograd_conv.WinogradConv with those settings (as in bench.conv_layers).
"""

from __future__ import annotations

import argparse
import datetime
import json
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

from bench import quiet, results_io  # noqa: E402
from bench.program import ferjax_program  # noqa: E402
from ferjax.models.layers import resolve_conv_impl  # noqa: E402
from ferjax.runtime import devices  # noqa: E402
from ferjax.runtime import platform as ferjax_platform  # noqa: E402

NUM_CLASSES = 7
IMAGE = 48
# name -> (config file, batch size)
MODELS = {
    "demo_cnn": ("demo.py", 128),
    "narrow_cnn": ("quick.py", 128),
    "cnn": ("default.py", 128),
    "resnet18": ("default.py", 64),
}


def use_winograd_convs(impl: str) -> None:
    """Makes ferjax.models build every convolution as WinogradConv (impl wino<tile>[-<dW>] or
    best, as in bench.conv_layers), with ferjax.models.ops' max-pool; a bench-only switch for this
    process (the models take their convolutions from ferjax.models.layers.conv)."""
    from bench.conv_layers import parse_impl
    from ferjax.models import layers
    from ferjax.models.winograd_conv import WinogradConv

    spec = parse_impl(impl)

    def conv(impl_, features, kernel, strides=1, **kwargs):  # layers.conv's signature
        return WinogradConv(features, (kernel, kernel), (strides, strides), **kwargs, **spec)

    layers.conv = conv


def model_config(name: str, impl: str, dtype: str = "float32", batch: int = 0):
    config_file, default_batch = MODELS[name]
    config = runpy.run_path(str(ROOT / "configs" / config_file))["get_config"]()
    config.model.name = "resnet18" if name == "resnet18" else "cnn"
    if impl == "best":  # the trainer's own Winograd layers (conv_impl=auto on one CPU device)
        impl = "winograd"
    elif impl.startswith("wino") and impl != "winograd":
        use_winograd_convs(impl)
        impl = "fast"
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


def run_child(spec: str, args) -> dict:
    """One runner in this (fresh) process: "peak", "<model>:<impl>" or "<model>:<peer>".
    Compiles, warms up and times args.steps steps; returns the measurement."""
    if spec == "peak":
        return practical_peak(dtype=args.dtype)
    name, impl = spec.split(":")
    peers = [p for p in args.peers.split(",") if p]
    if impl in peers:
        from bench import peers as peer_impls

        batch = args.batch or MODELS[name][1]
        runner = peer_impls.make(impl, name, batch)
        compile_s = None
    else:
        runner = FerjaxStep(name, impl, devices.make_mesh(), args.dtype, args.batch)
        compile_s = runner.compile()
    for _ in range(args.warmup):
        runner.step()
    times = []
    for _ in range(args.steps):
        time.sleep(args.pause)
        times.append(runner.step())
    out = {"median_step_s": statistics.median(times), "step_s": times, "batch": runner.batch}
    if isinstance(runner, FerjaxStep):
        out["flops"] = runner.flops
        out["compile_s"] = compile_s
        out["median_dispatch_s"] = statistics.median(runner.dispatch_s[-args.steps :])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn,cnn,resnet18")
    parser.add_argument(
        "--impls",
        default="auto,xla",
        help="model.conv_impl values (auto = ferjax's default), wino<tile>[-<weight_grad>], best",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per runner")
    parser.add_argument(
        "--dtype", default="float32", help="train.dtype of ferjax's step (GPU: bfloat16)"
    )
    parser.add_argument("--batch", type=int, default=0, help="batch size (0 = per model)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds before each step")
    parser.add_argument("--peers", default="", help="comma-separated: torch,keras")
    parser.add_argument("--max-other-cores", type=float, default=0.15)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args)))
        return {}

    impls = args.impls.split(",")
    peers = [p for p in args.peers.split(",") if p]
    me = [sys.executable, "-m", "bench.train_step"]
    for flag in ("steps", "warmup", "dtype", "batch", "pause", "peers"):
        me += [f"--{flag}", str(getattr(args, flag))]
    env = dict(os.environ)
    if ferjax_platform.tuning_enabled():
        env.setdefault("GLIBC_TUNABLES", ferjax_platform.MALLOC_TUNABLE)
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "conv_impl_auto": resolve_conv_impl("auto"),
        "env": {k: env.get(k) for k in ("XLA_FLAGS", "GLIBC_TUNABLES", ferjax_platform.SWITCH)},
        "steps_per_process": args.steps,
        "repeats": args.repeats,
        "models": {},
    }
    runners = {"peak": [*me, "--child", "peak"]}
    for name in args.models.split(","):
        for k in impls + peers:
            runners[f"{name}:{k}"] = [*me, "--child", f"{name}:{k}"]
    run = quiet.interleave(runners, args.repeats, max_other_cores=args.max_other_cores, env=env)
    results["quiet"] = quiet.quiet_summary(run)
    peak = {k: max(s[k] for s in run["runners"]["peak"]["samples"]) for k in ("xla", "numpy")}
    peak["peak"] = max(peak.values())
    results["peak_gflops"] = peak
    print(f"practical peak: XLA {peak['xla']:.0f}, numpy {peak['numpy']:.0f} GFLOP/s")
    for name in args.models.split(","):
        recs = {k: run["runners"][f"{name}:{k}"] for k in impls + peers}
        # XLA's cost analysis counts a scan/map body once (the winograd and gemm impls loop over
        # batch chunks): FLOPs only from an impl whose convolutions are XLA's own.
        plain = [k for k in ("xla", "fast") if k in impls]
        flops = recs[plain[0]]["median"].get("flops", 0.0) if plain else 0.0
        batch = int(recs[impls[0]]["median"]["batch"])
        row = {"batch": batch, "flops_per_step": flops, "runs": {}}
        for k, rec in recs.items():
            med = rec["median"]["median_step_s"]
            row["runs"][k] = {
                "step_s": [s["median_step_s"] for s in rec["samples"]],
                "median_step_s": med,
                "min_step_s": rec["min"]["median_step_s"],
                "max_step_s": rec["max"]["median_step_s"],
                "images_per_s": batch / med,
                "mfu": flops / med / (peak["peak"] * 1e9) if flops else None,
                "quiet": rec["quiet"],
                "samples": rec["samples"],
            }
            if "compile_s" in rec["median"]:
                row["runs"][k]["compile_s"] = rec["median"]["compile_s"]
                row["runs"][k]["median_dispatch_s"] = rec["median"]["median_dispatch_s"]
        results["models"][name] = row
        print_row(name, row, impls, peers)
    print(f"\nquiet: {json.dumps(results['quiet'])}")
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
        ours_key = "auto" if "auto" in ips else max((c for c in impls), key=ips.get)
        lo = {c: min(runs[c]["step_s"]) for c in runs}
        hi = {c: max(runs[c]["step_s"]) for c in runs}
        peer_cells = [
            f"{ours / ips[p]:.2f}x ({lo[p] / hi[ours_key]:.2f}-{hi[p] / lo[ours_key]:.2f})"
            if p in ips
            else "-"
            for p in peers
        ]
        mfu = runs.get("auto", {}).get("mfu")
        mfu_cell = f"{100 * mfu:.0f}%" if mfu else "-"
        line = f"| {name} | {row['batch']} | " + " | ".join(cells) + " | "
        lines.append(line + "".join(c + " | " for c in peer_cells) + mfu_cell + " |")
    return "\n".join(lines)


def print_row(name: str, row: dict, impls: list[str], peers: list[str]) -> None:
    runs = row["runs"]
    flops = row["flops_per_step"]
    # Counted only with an impl whose convolutions are XLA's own in the run (xla, fast).
    counted = f", {flops / 1e9:.0f} GFLOP/step" if flops else ""
    print(f"\n{name} (batch {row['batch']}{counted})")
    for k, r in runs.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        step = r["median_step_s"]
        line = f"  {k:8s} {r['images_per_s']:8.1f} images/s  median step {step:.3f} s  MFU {mfu}"
        if "median_dispatch_s" in r:
            line += f"  (call returns after {1e3 * r['median_dispatch_s']:.1f} ms)"
        steps = [t for sample in r.get("samples", []) for t in sample.get("step_s", [])]
        if steps:  # every timed step of every process: shows steps that alternate or drift
            line += f"  steps {min(steps):.3f}-{max(steps):.3f} s"
        print(line)
    for p in peers:
        ratios = ", ".join(
            f"{i} {runs[i]['images_per_s'] / runs[p]['images_per_s']:.2f}x"
            for i in impls
            if i in runs
        )
        print(f"  vs {p}: {ratios}")


if __name__ == "__main__":
    ferjax_platform.reexec_with_malloc_tuning("bench.train_step")
    main()

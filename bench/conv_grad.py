"""Per-layer cost of a 3x3 SAME conv (forward, input gradient, weight gradient through XLA and
through ferjax.models.ops) and of 2x2 max-pool gradients.

python -m bench.conv_grad [--reps 5] [--repeats 3]   -> table + bench/results/conv_grad-<time>.json

Each layer (and the pool) is measured in fresh processes, `--repeats` of them, interleaved with
the other layers' and each started after a quiet-machine wait (bench/quiet.py); a process
reports the median of `--reps` calls per function, the table the median over processes.
bench/conv_layers.py is the fuller account (all layers of the three models, PyTorch included).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from bench import quiet, results_io  # noqa: E402
from ferjax.models.ops import max_pool_2x2  # noqa: E402
from ferjax.models.ops.conv import weight_grad  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
# (batch, spatial, Cin, Cout): the layers of the demo/default CNN and ResNet-18 at 48x48.
LAYERS = [(128, 48, 1, 32), (128, 48, 32, 32), (128, 24, 32, 64), (128, 24, 64, 64)]
LAYERS += [(128, 12, 64, 128), (64, 24, 128, 128), (128, 6, 256, 256)]


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)


def layer_fns(b, h, cin, cout):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, h, h, cin), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, cin, cout), np.float32) * 0.1)
    dy = jnp.asarray(rng.standard_normal((b, h, h, cout), np.float32))
    fns = {
        "fwd": jax.jit(lambda x, w, dy: _conv(x, w)),
        "dx": jax.jit(lambda x, w, dy: jax.vjp(lambda x_: _conv(x_, w), x)[1](dy)[0]),
        "dW_xla": jax.jit(lambda x, w, dy: jax.vjp(lambda w_: _conv(x, w_), w)[1](dy)[0]),
        "dW_fast": jax.jit(lambda x, w, dy: weight_grad(x, dy, (3, 3), (1, 1), ((1, 1), (1, 1)))),
    }
    return fns, (x, w, dy)


def pool_fns():
    x = jnp.maximum(jax.random.normal(jax.random.PRNGKey(0), (128, 48, 48, 32)), 0.0)
    grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) ** 2)))  # noqa: E731
    fns = {
        "pool_xla": grad(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))),
        "pool_fast": grad(max_pool_2x2),
        "avg_pool": grad(lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))),
    }
    return fns, (x,)


def measure(fns: dict, args, reps: int) -> dict[str, float]:
    for f in fns.values():
        jax.block_until_ready(f(*args))
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def run_child(which: str, reps: int) -> dict[str, float]:
    """One measurement in this process: a layer index into LAYERS or "pool"."""
    fns, fargs = pool_fns() if which == "pool" else layer_fns(*LAYERS[int(which)])
    return measure(fns, fargs, reps)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed calls per process")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per layer")
    parser.add_argument("--max-other-cores", type=float, default=0.15)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.reps)))
        return {}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results = {"time": now, "jax": jax.__version__, "median_ms": {}}
    me = [sys.executable, "-m", "bench.conv_grad", "--reps", str(args.reps), "--child"]
    runners = {str(shape): [*me, str(i)] for i, shape in enumerate(LAYERS)}
    runners["pool 128x48x48x32 grad"] = [*me, "pool"]
    env = dict(
        os.environ, GLIBC_TUNABLES=os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    )
    run = quiet.interleave(runners, args.repeats, max_other_cores=args.max_other_cores, env=env)
    results["quiet"] = quiet.quiet_summary(run)
    results["samples"] = {k: r["samples"] for k, r in run["runners"].items()}
    print(
        f"{'layer (B,H,Cin,Cout)':24s} {'fwd':>8s} {'dx':>8s} {'dW xla':>8s} {'dW fast':>8s}  gain"
    )
    for shape in LAYERS:
        ms = run["runners"][str(shape)]["median"]
        results["median_ms"][str(shape)] = ms
        gain = ms["dW_xla"] / ms["dW_fast"]
        cols = " ".join(f"{ms[k]:8.1f}" for k in ("fwd", "dx", "dW_xla", "dW_fast"))
        print(f"{str(shape):24s} {cols}  {gain:.1f}x")
    ms = run["runners"]["pool 128x48x48x32 grad"]["median"]
    results["median_ms"]["pool 128x48x48x32 grad"] = ms
    print("max-pool grad 128x48x48x32: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
    print(f"quiet: {json.dumps(results['quiet'])}")
    results_io.save(results, args.out, "conv_grad", now)
    return results


if __name__ == "__main__":
    main()

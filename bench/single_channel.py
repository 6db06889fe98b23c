"""A single-channel convolution's forward: XLA's convolution against one GEMM of its patches
(`ferjax.models.ops.im2col`), by kernel, stride and image size.

python -m bench.single_channel [--repeats 3] [--iters 15]

Each repeat is a fresh process (huge-page malloc, as the trainer runs) started after a wait for
a quiet machine (bench.quiet). It times both forwards of every case (the median of --iters
calls after one warm-up) and says whether their outputs are bitwise equal. Prints XLA's time /
the GEMM's per case (median and band over the repeats) with whether the trainer takes the GEMM
for it (`im2col.single_channel_applies`: at most MAX_TAPS kernel taps); writes
bench/results/single_channel-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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

# (batch, image size, output channels, kernel, stride)
CASES = [
    (128, 48, 16, 3, 1),  # the demo CNN's first layer
    (128, 48, 32, 3, 1),  # the narrow CNN's
    (128, 48, 64, 3, 1),  # cnn / ResNet-18's stem at 48 px
    (24, 112, 64, 3, 1),
    (32, 224, 32, 3, 1),
    (128, 48, 32, 3, 2),
    (128, 48, 32, 5, 1),
    (24, 112, 32, 7, 1),
    (64, 96, 64, 7, 2),  # an ImageNet stem on grayscale input
    (16, 224, 64, 7, 2),
]


def measure(iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    import ferjax  # noqa: F401  (the CPU tuning flags)
    from ferjax.models.ops import im2col

    dn = im2col.DIMENSION_NUMBERS
    rng = np.random.default_rng(0)
    out = {}
    for b, size, cout, k, s in CASES:
        x = jnp.asarray(rng.standard_normal((b, size, size, 1)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, 1, cout)), jnp.float32)
        pads = tuple(tuple(p) for p in im2col._pads((size, size), (k, k), (s, s), "SAME"))
        strides = (s, s)

        def xla_conv(a, c, strides=strides, pads=pads):
            return lax.conv_general_dilated(a, c, strides, pads, dimension_numbers=dn)

        def gemm_conv(a, c, strides=strides, pads=pads):
            return im2col._single_channel_forward(a, c, strides, pads)

        xla, gemm = jax.jit(xla_conv), jax.jit(gemm_conv)
        times = {}
        for name, fn in (("xla", xla), ("gemm", gemm)):
            fn(x, w).block_until_ready()
            samples = []
            for _ in range(iters):
                t = time.perf_counter()
                fn(x, w).block_until_ready()
                samples.append(time.perf_counter() - t)
            times[name] = statistics.median(samples)
        key = f"{b}x{size}x{size} -> {cout}, {k}x{k}/{s}"
        out[key] = {
            **times,
            "bitwise_equal": bool(np.array_equal(xla(x, w), gemm(x, w))),
            "gemm_taken": im2col.single_channel_applies(x, w, dn),
        }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(measure(args.iters)))
        return {}
    rec = machine.record()
    print(machine.line(rec))
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    runs = []
    for _ in range(args.repeats):
        quiet = wait_until_quiet()
        cmd = [sys.executable, "-m", "bench.single_channel", "--run", "--iters", str(args.iters)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
        runs.append({"cases": parse_result_line(proc.stdout), "quiet": quiet})
    worst = max(r["quiet"]["other_cores"] for r in runs)
    load = max(r["quiet"]["loadavg"][0] for r in runs)
    print(f"XLA's forward / the GEMM's (median and band over {len(runs)} processes):")
    for case in runs[0]["cases"]:
        rows = [r["cases"][case] for r in runs]
        ratios = [r["xla"] / r["gemm"] for r in rows]
        print(
            f"  {case:28s} {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            f"  xla {1e3 * statistics.median(r['xla'] for r in rows):6.2f} ms"
            f"  gemm {1e3 * statistics.median(r['gemm'] for r in rows):6.2f} ms"
            f"  bitwise {all(r['bitwise_equal'] for r in rows)}"
            f"  trainer takes the GEMM: {rows[0]['gemm_taken']}"
        )
    print(f"(other processes <= {worst:.2f} cores, load <= {load:.2f})")
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": rec,
        "iters": args.iters,
        "runs": runs,
    }
    results_io.save(results, args.out, "single_channel")
    return results


if __name__ == "__main__":
    main()

"""The trainer's step on a GPU: images/s, MFU, step-time spread and input stalls.

    python -m bench.gpu_step [--models resnet18,cnn] [--batch 512] [--dtype bfloat16]
                             [--steps 300] [--peak_tflops 0]

Runs the very program `python -m ferjax.main` runs (ferjax.training.program) on procedural
faces held on
the device, fed by the trainer's own tf.data index pipeline, and reports per model:
- images/s over `--steps` steps in the trainer's way (dispatch ahead, sync at the end);
- step time: median, p90 and max of steps timed one by one (each synced);
- MFU: XLA's FLOP count of the compiled step / step time / the device's peak (bf16 dense
  from a table of known GPUs, or --peak_tflops, or a measured large matmul when unknown);
- input stall: the extra time of the pipelined run over the same steps with every batch
  already on the device, i.e. the time the device waited for the host (and the host's own time
  per batch, which must stay below the step time).
Fails loudly (exit 1) when JAX has no GPU: it never falls back to the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# Dense bf16 tensor-core peak, FLOP/s, by the name JAX reports (the datasheets' dense figures).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 125e12,
    "L40S": 362e12,
    "RTX 4090": 165e12,
    "V100": 125e12,
    "T4": 65e12,
}
MODELS = {"resnet18": "default.py", "cnn": "default.py"}


def gpu_or_die():
    backend = jax.default_backend()
    if backend != "gpu":
        sys.exit(
            f"error: JAX runs on {backend!r}, not a GPU: install the CUDA build (pip install "
            '-c constraints.txt -e ".[cuda]") on a machine with an NVIDIA GPU; this check never '
            "falls back to the CPU"
        )
    return jax.devices()[0]


def peak_flops(device, given_tflops: float, dtype) -> tuple[float, str]:
    if given_tflops > 0:
        return given_tflops * 1e12, "--peak_tflops"
    name = device.device_kind
    for key, flops in PEAK_BF16.items():
        if key.lower() in name.lower():
            return flops, f"datasheet ({key}, dense bf16)"
    n = 8192
    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(10):
        out = mm(a)
    out.block_until_ready()
    return 2 * n**3 * 10 / (time.perf_counter() - start), f"measured {n}^3 matmul"


def measure(name: str, batch: int, dtype: str, steps: int, peak: float) -> dict:
    import runpy

    from bench.program import ferjax_program
    from ferjax.data.pipeline import index_batches
    from ferjax.data.sampling import Sampler
    from ferjax.data.sources.synthetic import render_faces
    from ferjax.runtime import devices

    config = runpy.run_path(str(ROOT / "configs" / MODELS[name]))["get_config"]()
    config.model.name = name
    config.train.batch_size = batch
    config.train.dtype = dtype
    config.augment.ops = "flip|shift(pad=4)"
    rng = np.random.default_rng(0)
    n = 8 * batch
    labels = rng.integers(0, 7, n).astype(np.int32)
    faces = render_faces(labels, rng)[..., None]
    program, _, staged = ferjax_program(config, (48, 48, 1), 7, examples=n, num_batches=8)
    data = devices.replicate(
        {"images": faces, "targets": np.eye(7, dtype=np.float32)[labels]}, program.mesh
    )
    state = program.state
    t = time.perf_counter()
    compiled = program.train_step.lower(state, data, staged[0]).compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float((cost or {}).get("flops", 0.0))
    for b in staged[:3]:  # warm-up
        state, m = program.train_step(state, data, b)
    jax.block_until_ready(m)

    sampler = Sampler(labels, 7, "none", 0, "auto")

    def records():
        epoch = 0
        while True:
            yield from index_batches(sampler.epoch_records(epoch), batch)
            epoch += 1

    # 1. As the trainer runs: host pipeline feeding dispatched steps.
    source = records()
    host_s = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        h = time.perf_counter()
        local = next(source)
        g = devices.global_batch(local, program.mesh)
        host_s += time.perf_counter() - h
        state, m = program.train_step(state, data, g)
    jax.block_until_ready(m)
    pipelined = time.perf_counter() - start
    # 2. The same number of steps with every batch already on the device.
    start = time.perf_counter()
    for k in range(steps):
        state, m = program.train_step(state, data, staged[k % len(staged)])
    jax.block_until_ready(m)
    device_only = time.perf_counter() - start
    # 3. Step time one step at a time (spread).
    times = []
    for k in range(min(steps, 100)):
        s = time.perf_counter()
        state, m = program.train_step(state, data, staged[k % len(staged)])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - s)
    step_s = pipelined / steps
    return {
        "model": name,
        "batch": batch,
        "dtype": dtype,
        "steps": steps,
        "compile_s": round(compile_s, 2),
        "images_per_second": batch / step_s,
        "step_ms_pipelined": 1e3 * step_s,
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_p90": 1e3 * float(np.percentile(times, 90)),
        "step_ms_max": 1e3 * max(times),
        "mfu": flops / step_s / peak if flops else None,
        "flops_per_step": flops,
        "input_stall_ms_per_step": 1e3 * max(0.0, pipelined - device_only) / steps,
        "host_input_ms_per_step": 1e3 * host_s / steps,
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,cnn")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--peak_tflops", type=float, default=0.0)
    args = p.parse_args(argv)
    device = gpu_or_die()
    peak, source = peak_flops(device, args.peak_tflops, jnp.bfloat16)
    print(f"device: {device.device_kind} ({jax.device_count()} visible); peak {peak / 1e12:.0f} "
          f"TFLOP/s ({source})", flush=True)  # fmt: skip
    results = []
    for name in args.models.split(","):
        r = measure(name, args.batch, args.dtype, args.steps, peak)
        results.append(r)
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "?"
        stall = r["input_stall_ms_per_step"]
        verdict = "stalls" if stall > 0.05 * r["step_ms_pipelined"] else "no stall"
        print(
            f"{name} {args.dtype} batch {args.batch}: {r['images_per_second']:,.0f} img/s, MFU "
            f"{mfu}, step {r['step_ms_median']:.2f} ms median / {r['step_ms_p90']:.2f} p90 / "
            f"{r['step_ms_max']:.2f} max (compiled in {r['compile_s']:.0f} s); input: "
            f"{r['host_input_ms_per_step']:.2f} ms host time per batch, device waited "
            f"{stall:.2f} ms per step ({verdict})",
            flush=True,
        )
    print("RESULT " + json.dumps(results))
    return results


if __name__ == "__main__":
    main()

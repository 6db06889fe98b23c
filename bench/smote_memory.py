"""SMOTE preparation memory and time (ferjax index sampling vs imblearn's fit_resample), and the
cost of materialising SMOTE examples on the device relative to a ResNet-18 train step.

python bench/smote_memory.py [--steps 3] [--train-batch 64]

Data: FER2013-shaped procedural faces (28,709 x 48 x 48 uint8, FER2013's training class
counts), generated once and loaded by every measurement. Each measurement runs in a fresh
subprocess; memory is (a) the peak RSS (ru_maxrss) minus the RSS just before preparation
(data loaded, libraries imported), which includes native allocations such as scikit-learn's
kNN buffers, and (b) the tracemalloc peak (numpy and Python allocations only).
Results: printed, and written to bench/results/smote_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FER2013_COUNTS = [3995, 436, 4097, 7215, 4830, 3171, 4965]
MiB = 2**20


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def generate(path: Path, seed: int = 0) -> None:
    from ferjax.data.sources.synthetic import render_faces

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(7), FER2013_COUNTS)).astype(np.int32)
    images = np.concatenate([render_faces(labels[s : s + 512], rng) for s in range(0, 28709, 512)])
    np.save(path / "images.npy", images)
    np.save(path / "labels.npy", labels)


def prepare(method: str, path: Path) -> dict:
    """One preparation in this (fresh) process: imblearn, ferjax-pixels or ferjax-pca."""
    from imblearn.over_sampling import SMOTE
    from sklearn.neighbors import NearestNeighbors

    from ferjax.data.sampling import Sampler

    images, labels = np.load(path / "images.npy"), np.load(path / "labels.npy")
    images = images.reshape(*images.shape[:3], -1)  # [N, H, W, C]
    n = len(labels)
    w = np.ones((256, 256), np.float32)
    np.linalg.qr(w @ w)  # BLAS/LAPACK thread buffers: a one-off process cost, not preparation
    NearestNeighbors(n_neighbors=2).fit(w[:8]).kneighbors(w[:8])  # kNN code paths and threads
    base = _rss_now()
    tracemalloc.start()
    t = time.perf_counter()
    if method == "imblearn":
        x = images.reshape(n, -1).astype(np.float32)
        x_res, y_res = SMOTE(random_state=0).fit_resample(x, labels)
        rows = len(y_res)
    else:
        features = method.split("-", 1)[1]
        sampler = Sampler(labels, 7, "smote", 0, "auto", images=images, features=features)
        rows = len(sampler.epoch_records(0)["i"])
    seconds = time.perf_counter() - t
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "method": method,
        "seconds": seconds,
        "rows_per_epoch": rows,
        "peak_rss_delta_mib": (_rss_peak() - base) / MiB,
        "tracemalloc_peak_mib": traced / MiB,
    }


def materialisation(path: Path, train_batch: int, steps: int) -> dict:
    """Jitted gather + interpolate (batch 128 and the train batch) vs a ResNet-18 train step."""
    import runpy

    import jax
    import jax.numpy as jnp

    from bench.program import ferjax_program
    from ferjax.runtime import devices

    config = runpy.run_path(str(ROOT / "configs" / "resnet.py"))["get_config"]()
    config.train.batch_size = train_batch
    images, labels = np.load(path / "images.npy"), np.load(path / "labels.npy")
    images = images.reshape(*images.shape[:3], -1)  # [N, H, W, C]
    mesh = devices.make_mesh()
    data = devices.replicate(
        {"images": images, "targets": np.eye(7, dtype=np.float32)[labels]}, mesh
    )
    rng = np.random.default_rng(0)

    def records(b):
        return {
            "i": rng.integers(0, len(labels), b).astype(np.int32),
            "j": rng.integers(0, len(labels), b).astype(np.int32),
            "lam": rng.random(b, dtype=np.float32),
            "weight": np.ones(b, np.float32),
        }

    @jax.jit
    def materialise(images, batch):
        xi = images[batch["i"]].astype(jnp.float32)
        xj = images[batch["j"]].astype(jnp.float32)
        return xi + batch["lam"][:, None, None, None] * (xj - xi)

    def time_materialise(b, reps=200):
        batches = [devices.global_batch(records(b), mesh) for _ in range(8)]
        materialise(data["images"], batches[0]).block_until_ready()
        t = time.perf_counter()
        for r in range(reps):
            out = materialise(data["images"], batches[r % 8])
        out.block_until_ready()
        return (time.perf_counter() - t) / reps

    program, _, _ = ferjax_program(config, num_batches=0)
    state, step = program.state, program.train_step
    batches = [devices.global_batch(records(train_batch), mesh) for _ in range(steps + 1)]
    t = time.perf_counter()
    state, m = step(state, data, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for b in batches[1:]:
        state, m = step(state, data, b)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t) / steps
    mat_train = time_materialise(train_batch)
    mat_128 = time_materialise(128)
    return {
        "device": str(jax.devices()[0]),
        "model": config.model.name,
        "train_batch": train_batch,
        "timed_steps": steps,
        "first_step_with_compile_s": compile_s,
        "train_step_s": step_s,
        "materialise_train_batch_s": mat_train,
        "materialise_batch128_s": mat_128,
        "overhead_percent": 100.0 * mat_train / step_s,
    }


def _child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed ResNet-18 train steps")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--skip-step", action="store_true", help="memory/time only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child[0], Path(args.child[1])
        if kind == "materialise":
            result = materialisation(path, int(args.child[2]), int(args.child[3]))
        else:
            result = prepare(kind, path)
        print(json.dumps(result))
        return

    results: dict = {"data": {"shape": [28709, 48, 48], "class_counts": FER2013_COUNTS}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        generate(path)
        for method in ("imblearn", "ferjax-pixels", "ferjax-pca"):
            r = _child([method, str(path)])
            results[method] = r
            print(
                f"{method:14s} {r['seconds']:7.2f} s  peak RSS +{r['peak_rss_delta_mib']:7.1f} MiB"
                f"  tracemalloc peak {r['tracemalloc_peak_mib']:7.1f} MiB  "
                f"{r['rows_per_epoch']} rows",
                flush=True,
            )
        if not args.skip_step:
            mat = _child(["materialise", str(path), str(args.train_batch), str(args.steps)])
            results["materialisation"] = mat
    imb = results["imblearn"]
    ratios = {}
    for method in ("ferjax-pixels", "ferjax-pca"):
        r = results[method]
        ratios[method] = {
            "rss_ratio": imb["peak_rss_delta_mib"] / max(r["peak_rss_delta_mib"], 1e-3),
            "tracemalloc_ratio": imb["tracemalloc_peak_mib"] / max(r["tracemalloc_peak_mib"], 1e-3),
            "time_ratio": r["seconds"] / imb["seconds"],
        }
        print(
            f"imblearn / {method}: memory {ratios[method]['rss_ratio']:.1f}x (RSS), "
            f"{ratios[method]['tracemalloc_ratio']:.1f}x (tracemalloc); "
            f"time {method} / imblearn = {ratios[method]['time_ratio']:.2f}"
        )
    results["ratios"] = ratios
    if "materialisation" in results:
        m = results["materialisation"]
        print(
            f"materialisation on {m['device']}: {m['materialise_batch128_s'] * 1e3:.3f} ms "
            f"(batch 128), {m['materialise_train_batch_s'] * 1e3:.3f} ms (batch "
            f"{m['train_batch']}) vs ResNet-18 train step {m['train_step_s'] * 1e3:.0f} ms "
            f"(batch {m['train_batch']}): {m['overhead_percent']:.3f}% overhead"
        )
    out = ROOT / "bench" / "results" / "smote_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()

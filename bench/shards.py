"""Sharded stores (ferjax.data.store) on an AffectNet-like JPEG source: conversion speed,
streaming speed of `gather` for random batches, peak host RSS while streaming a store several
times larger than a memory budget, and a PyTorch Dataset + DataLoader peer that decodes the
same JPEGs every epoch.

python -m bench.shards [--images 8000] [--sizes 112,224] [--workers 1,2] [--keep]

Source: procedural colour faces rendered at 100-260 px, saved as JPEG (quality 90) with a face
box covering 70-90% of the image (AffectNet ships such crops plus a face box). Conversion and
the peer both decode with the readers' own `ferjax.data.sources.decode.decode_face` (crop the box,
resize bilinearly with Pillow), so the conversion figure is what `data.placement=disk` costs.
Streaming: one pass over a random permutation of the store in batches of 256, in a fresh
subprocess (VmHWM reset just before the pass), with the page cache warm (a previous pass) and
cold (posix_fadvise DONTNEED on the shard files only). Before every timing the script waits
until other processes use under 0.3 cores, and records the load average next to the figure.
Results: printed, and written to bench/results/shards-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 2**20
BATCH = 256
# Input rates an H100 step consumes (order of magnitude, bf16, from public training logs).
H100_STEPS = {
    224: ("ResNet-50 at 224 px, bf16", 2500, 3000),
    112: ("ResNet-18 at 112 px, bf16", 10000, None),
}


# ----------------------------------------------------------------------------- machine state


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def _own_jiffies() -> int:
    t = os.times()
    return round(
        (t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")
    )


def wait_quiet(limit_cores: float = 0.3, max_wait: float = 300.0) -> dict:
    """Waits until other processes use under `limit_cores` over one second; returns the state."""
    start = time.time()
    while True:
        b0, o0, t0 = _busy_jiffies(), _own_jiffies(), time.time()
        time.sleep(1.0)
        others = ((_busy_jiffies() - b0) - (_own_jiffies() - o0)) / os.sysconf("SC_CLK_TCK")
        others /= time.time() - t0
        if others < limit_cores or time.time() - start > max_wait:
            return {
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "others_cores": round(max(others, 0.0), 2),
                "waited_s": round(time.time() - start, 1),
            }


def _load(state: dict) -> str:
    return f"load {state['load_average'][0]:.2f} (others {state['others_cores']:.2f} cores)"


# ----------------------------------------------------------------------------- source


def make_source(folder: Path, count: int, seed: int = 0) -> dict:
    """Colour procedural faces as JPEGs of 100-260 px with a face box; returns split records."""
    from PIL import Image

    from ferjax.data.sources.synthetic import render_faces
    from ferjax.data.store.manifest import FaceRecord

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 7, count)
    sides = rng.integers(100, 261, count)
    records = []
    for k in range(count):
        s = int(sides[k])
        gray = render_faces(labels[k : k + 1], rng, size=s)[0].astype(np.float32)
        tint = rng.uniform([0.8, 0.6, 0.5], [1.1, 0.9, 0.8]).astype(np.float32)
        rgb = gray[..., None] * tint + rng.normal(0, 4, (s, s, 3)).astype(np.float32)
        path = folder / f"{k:06d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        side = int(s * rng.uniform(0.7, 0.9))
        x0, y0 = (int(v) for v in rng.integers(0, s - side + 1, 2))
        records.append(FaceRecord(str(path), (x0, y0, side, side), int(labels[k]), k + 1))
    return {"train": records}


# ----------------------------------------------------------------------------- measurements


def measure_conversion(records, store: Path, size: int, workers: int) -> dict:
    from ferjax.data.sources.decode import decode_face
    from ferjax.data.store import writer

    if store.exists():
        shutil.rmtree(store)
    state = wait_quiet()
    t = time.perf_counter()
    m = writer.convert(
        records,
        decode_face,
        store,
        image_shape=(size, size, 3),
        source_fingerprint="bench",
        settings={"image_size": size, "channels": 3, "crop": "box"},
        shard_size=512,
        workers=workers,
    )
    seconds = time.perf_counter() - t
    n = m.num_records
    return {
        "size": size,
        "workers": workers,
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 1),
        "images_per_s_in_pool": m.conversion["images_per_second"],
        "store_mib": round(sum(p.stat().st_size for p in store.iterdir()) / MiB, 1),
        **state,
    }


STREAM_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from ferjax.data.store.reader import ShardedImages, prefetch_batches

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

store = ShardedImages({store!r}, "train", threads={threads})
if {cold}:
    for p in store.directory.glob("*.array_record"):
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
rng = np.random.default_rng({seed})
order = np.concatenate([rng.permutation(len(store)) for _ in range({passes})])
batches = [order[s : s + {batch}] for s in range(0, len(order) - {batch} + 1, {batch})]
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
cpu0, t0 = os.times(), time.perf_counter()
if {pairs}:
    rng = np.random.default_rng(1)
    def gather(b):
        j = np.where(rng.random(len(b)) < 0.5, b, rng.integers(0, len(store), len(b)))
        return store.gather_pairs(b, j)
else:
    gather = store.gather
stream = map(gather, batches) if {depth} == 0 else prefetch_batches(batches, gather, {depth})
images = 0
for x in stream:
    images += len(x[0]) if {pairs} else len(x)
seconds = time.perf_counter() - t0
cpu = sum(os.times()[:2]) - sum(cpu0[:2])
print(json.dumps({{"images": images, "seconds": seconds, "cpu_s": cpu,
                  "rss_base": base, "rss_peak": status("VmHWM"),
                  "record_bytes": int(np.prod(store.shape))}}))
"""


def measure_stream(
    store: Path, threads: int, depth: int, cold: bool, pairs=False, passes=3, seed=0
) -> dict:
    script = STREAM_CHILD.format(
        passes=passes,
        root=str(ROOT),
        store=str(store),
        threads=threads,
        cold=cold,
        seed=seed,
        batch=BATCH,
        depth=depth,
        pairs=pairs,
    )
    if not cold:  # warm the page cache with one untimed pass
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    state = wait_quiet()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    r = json.loads(done.stdout)
    return {
        "threads": threads,
        "prefetch_depth": depth,
        "cache": "cold" if cold else "warm",
        "pairs": pairs,
        "images": r["images"],
        "images_per_s": round(r["images"] / r["seconds"], 1),
        "mib_per_s": round(r["images"] * r["record_bytes"] / r["seconds"] / MiB, 1),
        "cpu_cores_used": round(r["cpu_s"] / r["seconds"], 2),
        "peak_rss_growth_mib": round((r["rss_peak"] - r["rss_base"]) / MiB, 1),
        **state,
    }


TORCH_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from ferjax.data.sources.decode import decode_face

class JpegFaces(Dataset):
    # ImageFolder's work per item (Pillow open, convert RGB) plus the face crop and resize.
    def __init__(self, items, size):
        self.items, self.size = items, size
    def __len__(self):
        return len(self.items)
    def __getitem__(self, k):
        path, box, label = self.items[k]
        return torch.from_numpy(decode_face(path, box, self.size, 3)), label

torch.manual_seed(0)
items = json.load(open({items!r}))
loader = DataLoader(JpegFaces(items, {size}), batch_size={batch}, shuffle=True, num_workers=2,
                    persistent_workers=True, drop_last=True)
epochs = []
for epoch in range(2):
    t0, images = time.perf_counter(), 0
    for x, y in loader:
        assert x.shape[1:] == ({size}, {size}, 3) and x.dtype == torch.uint8
        images += len(x)
    epochs.append((images, time.perf_counter() - t0))
print(json.dumps(epochs))
"""


def measure_torch(records, size: int, work: Path) -> dict:
    items = work / "torch_items.json"
    items.write_text(json.dumps([[r.path, list(r.box), r.label] for r in records["train"]]))
    script = TORCH_CHILD.format(root=str(ROOT), items=str(items), size=size, batch=BATCH)
    state = wait_quiet()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    (n1, s1), (n2, s2) = json.loads(done.stdout)
    return {
        "size": size,
        "num_workers": 2,
        "batch_size": BATCH,
        "images_per_s_first_epoch": round(n1 / s1, 1),
        "images_per_s_second_epoch": round(n2 / s2, 1),
        **state,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8000)
    p.add_argument("--sizes", default="112,224")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--budget-mib", type=int, default=256, help="host memory budget to beat")
    p.add_argument("--work", default="/tmp/ferjax-bench-shards")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args()
    from bench.results_io import save

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    results = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
        "machine": {"cores": cores, "ram_gib": round(os.sysconf("SC_PHYS_PAGES") * 4096 / 2**30)},
        "images": args.images,
        "batch": BATCH,
        "budget_mib": args.budget_mib,
        "conversion": [],
        "stream": [],
        "torch": [],
    }
    t = time.perf_counter()
    records = make_source(work / "jpeg", args.images)
    jpeg_mib = sum(p.stat().st_size for p in (work / "jpeg").iterdir()) / MiB
    print(f"source: {args.images} JPEGs, {jpeg_mib:.0f} MiB, in {time.perf_counter() - t:.0f} s")
    for size in [int(s) for s in args.sizes.split(",")]:
        store = work / f"store{size}"
        for workers in [int(w) for w in args.workers.split(",")]:
            r = measure_conversion(records, store, size, workers)
            results["conversion"].append(r)
            print(
                f"convert {size}px, {workers} worker(s): {r['images_per_s']:,.0f} images/s "
                f"({r['store_mib']:.0f} MiB store) | {_load(r)}"
            )
        store_mib = results["conversion"][-1]["store_mib"]
        for threads, depth, cold, pairs in [
            (1, 0, False, False),
            (4, 0, False, False),
            (4, 2, False, False),
            (4, 4, False, False),
            (4, 2, False, True),
            (4, 0, True, False),
            (4, 4, True, False),
        ]:
            r = measure_stream(store, threads, depth, cold, pairs, passes=1 if cold else 3)
            r.update(size=size, store_mib=store_mib)
            r["within_budget"] = r["peak_rss_growth_mib"] < args.budget_mib
            results["stream"].append(r)
            what = "pairs (i, j)" if pairs else "gather"
            print(
                f"stream {size}px {what}, threads {threads}, prefetch {depth}, {r['cache']} cache: "
                f"{r['images_per_s']:,.0f} images/s ({r['mib_per_s']:,.0f} MiB/s), "
                f"{r['cpu_cores_used']:.2f} cores, peak RSS +{r['peak_rss_growth_mib']:.0f} MiB "
                f"(budget {args.budget_mib} MiB, store {store_mib:.0f} MiB = "
                f"{store_mib / args.budget_mib:.1f}x) | {_load(r)}"
            )
        r = measure_torch(records, size, work)
        results["torch"].append(r)
        print(
            f"torch DataLoader {size}px (2 workers, batch {BATCH}, shuffle): "
            f"{r['images_per_s_first_epoch']:,.0f} images/s first epoch, "
            f"{r['images_per_s_second_epoch']:,.0f} second | {_load(r)}"
        )
        if not args.keep:
            shutil.rmtree(store)
    results["extrapolation"] = extrapolate(results, cores)
    for line in results["extrapolation"]["lines"]:
        print(line)
    save(results, args.out, "shards")
    if not args.keep:
        shutil.rmtree(work)


def extrapolate(results: dict, cores: int) -> dict:
    """What feeding an H100 would take, from rates per busy core measured here (an
    extrapolation to a multi-core host, not a measurement)."""
    lines, out = [], {}
    for size, (model, low, high) in H100_STEPS.items():
        stream = [r for r in results["stream"] if r["size"] == size and not r["pairs"]]
        conv = [r for r in results["conversion"] if r["size"] == size]
        peer = [r for r in results["torch"] if r["size"] == size]
        if not (stream and conv and peer):
            continue
        need = high or low
        warm = max((r for r in stream if r["cache"] == "warm"), key=lambda r: r["images_per_s"])
        cold = max((r for r in stream if r["cache"] == "cold"), key=lambda r: r["images_per_s"])
        per_core = warm["images_per_s"] / max(warm["cpu_cores_used"], 1e-9)
        torch_core = peer[0]["images_per_s_second_epoch"] / peer[0]["num_workers"]
        conv_core = max(r["images_per_s"] / r["workers"] for r in conv)
        record = size * size * 3
        out[size] = {
            "h100_images_per_s": [low, high],
            "stream_warm_images_per_busy_core": round(per_core, 1),
            "stream_cores_needed": round(need / per_core, 2),
            "stream_cold_mib_per_s_here": cold["mib_per_s"],
            "disk_mib_per_s_needed": round(need * record / MiB, 1),
            "torch_images_per_core": round(torch_core, 1),
            "torch_cores_needed": round(need / torch_core, 1),
            "conversion_images_per_worker": round(conv_core, 1),
            "affectnet_conversion_minutes_16_cores": round(287000 / (conv_core * 16) / 60, 1),
        }
        o = out[size]
        rate = f"{low:,}-{high:,}" if high else f"{low:,}+"
        lines += [
            f"{size}px: {model} consumes ~{rate} img/s on one H100 (extrapolations below use "
            f"{need:,})",
            f"  stream, warm page cache: {per_core:,.0f} img/s per busy core here -> "
            f"~{o['stream_cores_needed']} cores to keep up",
            f"  stream, store larger than RAM: {o['disk_mib_per_s_needed']:,.0f} MiB/s of random "
            f"{record // 1024} KiB reads needed; this VM's disk gave "
            f"{cold['mib_per_s']:,.0f} MiB/s",
            f"  PyTorch JPEG DataLoader: {torch_core:,.0f} img/s per worker -> "
            f"~{o['torch_cores_needed']} cores to keep up",
            f"  conversion: {conv_core:,.0f} img/s per worker -> AffectNet (287k) in "
            f"~{o['affectnet_conversion_minutes_16_cores']} min on 16 cores if its JPEGs were "
            f"this small and the disk wrote {conv_core * 16 * record / MiB:,.0f} MiB/s",
        ]
    return {"per_size": out, "lines": lines}


if __name__ == "__main__":
    main()

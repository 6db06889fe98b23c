"""Grain against ferjax's own streaming on the same shard store: images/s, peak host memory and
whether a mid-epoch resume gives the same next batch.

    python -m bench.grain_stream [--images 4000] [--size 112] [--passes 2] [--workers 0,2]

The store is the one `data.placement=disk` reads (ArrayRecord shards of decoded faces, one record
per face, built from JPEGs by `bench.shards.make_source` and the store's own writer). ferjax:
`ShardedImages.gather` of random batches of 256 by 4 threads, 3 batches ahead
(`prefetch_batches`), i.e. what the training loop does per step. Grain (grain.python, the
`bench` extra): `ArrayRecordDataSource` over the same shard files, `IndexSampler` (shuffled),
a decode transform (the raw bytes as uint8[H, W, C]) and `Batch(256)`, in a `DataLoader` with
`--workers` processes (0 = in the main process with read threads). Each configuration runs in
a fresh process with the page cache warm (one untimed pass first); peak RSS is the process's
VmHWM plus its largest child's. Before each timing the script waits until other processes use
under 0.3 cores and records the load. Writes bench/results/grain_stream-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402


def now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


from bench.shards import make_source, measure_conversion, wait_quiet  # noqa: E402

BATCH = 256

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from ferjax.data.store.reader import ShardedImages, prefetch_batches

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

store = ShardedImages({store!r}, "train", threads=4)
shape = tuple(store.shape)
rng = np.random.default_rng(0)
order = np.concatenate([rng.permutation(len(store)) for _ in range({passes})])
batches = [order[s : s + {batch}] for s in range(0, len(order) - {batch} + 1, {batch})]

def ferjax_stream():
    return prefetch_batches(batches, store.gather, 3)

def grain_loader():
    import grain.python as gp
    from absl import flags

    from bench.grain_stream import decode_transform

    flags.FLAGS.mark_as_parsed()
    Decode = decode_transform(shape)
    source = gp.ArrayRecordDataSource([str(f) for f in store._files])
    sampler = gp.IndexSampler(num_records=len(source), shard_options=gp.NoSharding(),
                              shuffle=True, num_epochs={passes}, seed=0)
    return gp.DataLoader(data_source=source, sampler=sampler,
                         operations=[Decode, gp.Batch({batch}, drop_remainder=True)],
                         worker_count={workers}, read_options=gp.ReadOptions(num_threads=4))

resumed_equal = None
if {kind!r} == "grain":
    loader = grain_loader()
    it = iter(loader)
    next(it)
    state = it.get_state()
    expected = next(it)
    again = iter(loader)
    again.set_state(state)
    resumed_equal = bool(np.array_equal(next(again), expected))
    del it, again
stream = ferjax_stream() if {kind!r} == "ferjax" else iter(grain_loader())
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
t0 = time.perf_counter()
images = 0
for x in stream:
    assert x.dtype == np.uint8 and x.shape[1:] == shape
    images += len(x)
seconds = time.perf_counter() - t0
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({{"images": images, "seconds": seconds, "rss_growth": status("VmHWM") - base,
                  "child_peak_rss": child, "resume_equal": resumed_equal}}))
"""


def decode_transform(shape):
    """A Grain map transform: a record's raw bytes as uint8[H, W, C] (importable by workers)."""
    import grain.python as gp
    import numpy as np

    class RecordDecode(gp.MapTransform):
        def map(self, record):
            return np.frombuffer(record, np.uint8).reshape(shape)

    return RecordDecode()


def run_child(store: Path, kind: str, workers: int, passes: int) -> dict:
    script = CHILD.format(
        root=str(ROOT), store=str(store), kind=kind, workers=workers, passes=passes, batch=BATCH
    )
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if warm.returncode:
        raise RuntimeError(warm.stderr[-3000:])
    state = wait_quiet()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "reader": kind if kind == "ferjax" else f"grain workers={workers}",
        "images_per_s": round(r["images"] / r["seconds"], 1),
        "peak_rss_growth_mib": round(r["rss_growth"] / 2**20, 1),
        "largest_child_rss_mib": round(r["child_peak_rss"] / 2**20, 1),
        "mid_epoch_resume_equal": r["resume_equal"],
        **state,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--workers", default="0,2")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="grain_stream_"))
    try:
        records = make_source(work / "jpeg", args.images)
        conversion = measure_conversion(records, work / "store", args.size, 2)
        rows = [run_child(work / "store", "ferjax", 0, args.passes)]
        for w in (int(x) for x in args.workers.split(",")):
            rows.append(run_child(work / "store", "grain", w, args.passes))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(
            f"{r['reader']:>18}: {r['images_per_s']:>9,.0f} img/s, peak RSS +"
            f"{r['peak_rss_growth_mib']} MiB (largest child {r['largest_child_rss_mib']} MiB), "
            f"resume equal: {r['mid_epoch_resume_equal']} (load {r['load_average'][0]:.2f})"
        )
    result = {"time": now(), "args": vars(args), "conversion": conversion, "runs": rows}
    results_io.save(result, args.out, "grain_stream")
    return result


if __name__ == "__main__":
    main()

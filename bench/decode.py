"""Index and decode throughput of the RAF-DB and AffectNet readers, on generated releases.

python bench/decode.py [--rafdb 2000] [--affectnet 400] [--data DIR] [--out bench/results]

Data: write_rafdb (100x100 aligned JPEGs, as released) and write_affectnet (JPEG photos of
240..480 px with a face box inside), generated once into --data (reused when present). For
each reader: the index step (parse, validate, stat every image), then decode_records at 100
and 224 px output, in colour: in this process, and on every core with a process pool and with
a thread pool. Each figure is the best of --repeats runs and includes starting the pool (the
forkserver is started by a warm-up call first). The load average is read before each
measurement: on a shared machine other jobs change these figures. Results: printed, and
written to <out>/decode-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_io import save  # noqa: E402
from ferjax.data.sources.affectnet import index_affectnet  # noqa: E402
from ferjax.data.sources.decode import decode_records, default_workers  # noqa: E402
from ferjax.data.sources.rafdb import index_rafdb  # noqa: E402
from ferjax.data.sources.rows import RowErrors  # noqa: E402
from tests.fake_releases import write_affectnet, write_rafdb  # noqa: E402


def generate(data: Path, num_rafdb: int, num_affectnet: int) -> None:
    rafdb, affectnet = data / f"rafdb-{num_rafdb}", data / f"affectnet-{num_affectnet}"
    if not rafdb.exists():
        t = time.perf_counter()
        write_rafdb(str(rafdb), num_rafdb * 4 // 5, num_rafdb // 5, seed=0)
        print(f"wrote {num_rafdb} RAF-DB images in {time.perf_counter() - t:.1f} s")
    if not affectnet.exists():
        t = time.perf_counter()
        write_affectnet(
            str(affectnet), num_affectnet * 4 // 5, num_affectnet // 5, 0, size_range=(240, 480)
        )
        print(f"wrote {num_affectnet} AffectNet photos in {time.perf_counter() - t:.1f} s")


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rafdb", type=int, default=2000)
    parser.add_argument("--affectnet", type=int, default=400)
    parser.add_argument("--data", default="/tmp/ferjax-bench-decode")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = Path(args.data)
    generate(data, args.rafdb, args.affectnet)
    indexers = {
        "rafdb": lambda: index_rafdb(str(data / f"rafdb-{args.rafdb}")),
        "affectnet": lambda: index_affectnet(str(data / f"affectnet-{args.affectnet}"), 8),
    }
    cores = default_workers()
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": cores,
        "runs": [],
    }
    warm = indexers["rafdb"]()
    decode_records(warm.splits["test"][:64], 32, 3, warm.errors, workers=2, chunk=16)
    for name, indexer in indexers.items():
        load = os.getloadavg()[0]
        seconds = best_of(args.repeats, indexer)
        index = indexer()
        records = [r for s in ("train", "val", "test") for r in index.splits[s]]
        print(f"{name}: index {len(records)} records in {seconds:.3f} s (load {load:.2f})")
        results["runs"].append(
            {"reader": name, "step": "index", "records": len(records), "seconds": seconds,
             "load_average_1min": load}
        )  # fmt: skip
        for size in (100, 224):
            for workers, pool in ((1, "process"), (cores, "process"), (cores, "thread")):
                load = os.getloadavg()[0]
                errors = RowErrors(name, "raise")
                decode = functools.partial(
                    decode_records, records, size, 3, errors, workers, min_parallel=0, pool=pool
                )
                seconds = best_of(args.repeats, decode)
                rate = len(records) / seconds
                how = "in process" if workers == 1 else f"{workers} {pool} workers"
                print(
                    f"{name}: decode {len(records)} at {size} px, {how}: "
                    f"{rate:,.0f} images/s (load {load:.2f})"
                )
                results["runs"].append(
                    {"reader": name, "step": "decode", "size": size, "workers": workers,
                     "pool": pool, "records": len(records), "seconds": seconds,
                     "images_per_s": rate, "load_average_1min": load}
                )  # fmt: skip
    save(results, args.out, "decode")


if __name__ == "__main__":
    main()

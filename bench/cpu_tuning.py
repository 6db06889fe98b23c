"""What each CPU setting gains: the train step under each combination, one fresh process each.

python -m bench.cpu_tuning [--model cnn] [--steps 5]

The settings are process-wide (XLA flags and glibc tunables are read at start-up), so each
combination runs in its own process: FERJAX_CPU_TUNING (XLA's CPU convolutions on Eigen instead
of YNNPACK), GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (huge pages for XLA's temporaries) and
model.conv_impl. Processes run one after another, twice in alternating order, and each row
reports the better of its two medians. Writes bench/results/cpu_tuning-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402

# (label, FERJAX_CPU_TUNING, huge pages, conv_impl)
COMBOS = [
    ("jaxlib defaults, conv_impl=xla", "0", False, "xla"),
    ("jaxlib defaults, conv_impl=gemm (the previous ferjax default)", "0", False, "gemm"),
    ("Eigen convolutions, conv_impl=xla", "1", False, "xla"),
    ("Eigen convolutions, conv_impl=fast", "1", False, "fast"),
    ("Eigen convolutions + huge pages, conv_impl=xla", "1", True, "xla"),
    ("Eigen convolutions + huge pages, conv_impl=fast (ferjax default)", "1", True, "fast"),
]

CHILD = """
import json, statistics, sys
sys.path.insert(0, {root!r})
from bench.train_step import FerjaxStep
from ferjax.runtime import devices
r = FerjaxStep({model!r}, {impl!r}, devices.make_mesh())
r.compile()
for _ in range(2):
    r.step()
times = [r.step() for _ in range({steps})]
print("RESULT " + json.dumps({{"median_step_s": statistics.median(times), "batch": r.batch}}))
"""


def run_combo(model: str, tuning: str, huge: bool, impl: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
    env["FERJAX_CPU_TUNING"] = tuning
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if huge:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    code = CHILD.format(root=str(ROOT), model=model, impl=impl, steps=steps)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1].split("RESULT ", 1)[1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", help="demo_cnn | cnn | resnet18")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    medians: dict[str, list[float]] = {c[0]: [] for c in COMBOS}
    batch = 0
    for order in (COMBOS, COMBOS[::-1]):
        for label, tuning, huge, impl in order:
            r = run_combo(args.model, tuning, huge, impl, args.steps)
            medians[label].append(r["median_step_s"])
            batch = r["batch"]
    base = min(medians[COMBOS[1][0]])
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": args.model,
        "batch": batch,
        "rows": [],
    }
    print(f"\n{args.model}, batch {batch}: best of two median step times")
    print("| setting | step s | images/s | vs previous default |\n|---|---|---|---|")
    for label, *_ in COMBOS:
        best = min(medians[label])
        row = {"setting": label, "step_s": best, "runs": medians[label], "speedup": base / best}
        results["rows"].append(row)
        print(f"| {label} | {best:.2f} | {batch / best:.1f} | {base / best:.2f}x |")
    results_io.save(results, args.out, "cpu_tuning")
    return results


if __name__ == "__main__":
    main()

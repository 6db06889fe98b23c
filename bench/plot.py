"""Bar chart of ferjax's speed ratios from the newest benchmark results.

python -m bench.plot [--results bench/results] [--out bench/results/ratios.png]

Reads the newest train_step-*.json (ferjax conv_impl=auto vs each peer, per model) and
end_to_end-*.json (wall time of each framework / ferjax's) and draws one bar per ratio, with the
1.0x line (parity) and issue #18's targets (train step 1.2x PyTorch for cnn and resnet18,
end to end 2x Keras and 1.2x PyTorch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def newest(results: Path, prefix: str) -> dict | None:
    files = sorted(results.glob(f"{prefix}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def ratios(results: Path) -> list[tuple[str, float]]:
    """(label, ferjax speed / peer speed) pairs; > 1 means ferjax is faster."""
    bars = []
    step = newest(results, "train_step")
    if step:
        for model, row in step["models"].items():
            runs = row["runs"]
            ours = runs.get("auto") or max(
                (r for k, r in runs.items() if k not in ("torch", "keras")),
                key=lambda r: r["images_per_s"],
            )
            for peer in ("torch", "keras"):
                if peer in runs:
                    r = ours["images_per_s"] / runs[peer]["images_per_s"]
                    bars.append((f"train step\n{model} vs {peer}", r))
    e2e = newest(results, "end_to_end")
    if e2e and "ferjax" in e2e.get("wall_s", {}):
        # Median wall time of each framework's runs (bench.end_to_end alternates them).
        wall = {fw: w["median"] for fw, w in e2e["wall_s"].items()}
        for fw, seconds in wall.items():
            if fw != "ferjax":
                bars.append((f"epoch end to end\n{e2e['model']} vs {fw}", seconds / wall["ferjax"]))
    return bars


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ratios.png"))
    args = parser.parse_args(argv)
    bars = ratios(Path(args.results))
    if not bars:
        sys.exit(f"error: no train_step-*.json or end_to_end-*.json in {args.results}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = zip(*bars, strict=True)
    fig, ax = plt.subplots(figsize=(1.6 * len(bars) + 2, 4.2))
    colors = ["#2a9d8f" if v >= 1.0 else "#e76f51" for v in values]
    ax.bar(range(len(bars)), values, color=colors)
    ax.axhline(1.0, color="black", lw=1, ls="--", label="parity (1.0x)")
    # Issue #18's targets: train step 1.2x PyTorch, end to end 2x Keras and 1.2x PyTorch.
    targets = {("step", "torch"): 1.2, ("epoch", "keras"): 2.0, ("epoch", "torch"): 1.2}
    for i, lab in enumerate(labels):
        kind = "epoch" if lab.startswith("epoch") else "step"
        target = targets.get((kind, lab.rsplit(" ", 1)[-1]))
        if target and not lab.startswith("train step\ndemo_cnn"):
            ax.hlines(target, i - 0.4, i + 0.4, color="#264653", lw=2, label="target")
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}x", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), labels, fontsize=8)
    ax.set_ylabel("ferjax speed / peer speed")
    ax.set_title("ferjax vs PyTorch and Keras, quiet 2-core CPU, float32 (medians)")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    ax.set_ylim(0, max(values) * 1.2)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    for label, value in bars:
        print(f"  {label.replace(chr(10), ' '):40s} {value:.2f}x")
    return out


if __name__ == "__main__":
    main()

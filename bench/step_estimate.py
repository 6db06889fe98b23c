"""Train-step estimate from the per-layer account: what ferjax's step would take with the best
convolution implementation per layer, against PyTorch's step.

python -m bench.step_estimate [--conv-layers FILE] [--train-step FILE]   (default: the newest)

estimate = ferjax step (conv_impl=auto) - its convolutions (XLA's, per bench.conv_layers)
           + the best ferjax implementation of each convolution.
The rest of the step (BatchNorm, ReLU, pooling, dropout, loss, optimizer, augmentation) is taken
as measured; "rest" compares it with PyTorch's step minus PyTorch's convolutions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def newest(prefix: str) -> Path:
    files = sorted(RESULTS.glob(f"{prefix}-*.json"))
    if not files:
        sys.exit(f"no bench/results/{prefix}-*.json: run python -m bench.{prefix} first")
    return files[-1]


def estimate(conv: dict, step: dict, models: list[str]) -> dict:
    """Per model: measured steps, convolution sums and the best-per-layer estimate (seconds)."""
    out = {}
    for model in models:
        table = conv["tables"][model]
        runs = step["models"][model]["runs"]
        ours = runs["auto"]["median_step_s"]
        torch_step = runs["torch"]["median_step_s"]
        conv_xla = table["total_ms"]["xla"] / 1e3
        conv_torch = table["total_ms"]["torch"] / 1e3
        best = table["best_per_layer_ms"] / 1e3
        est = ours - conv_xla + best
        out[model] = {
            "step_auto_s": ours,
            "step_torch_s": torch_step,
            "measured_vs_torch": torch_step / ours,
            "conv_xla_s": conv_xla,
            "conv_torch_s": conv_torch,
            "conv_best_s": best,
            "rest_ferjax_s": ours - conv_xla,
            "rest_torch_s": torch_step - conv_torch,
            "estimate_s": est,
            "estimate_vs_torch": torch_step / est,
        }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conv-layers", default="")
    parser.add_argument("--train-step", default="")
    parser.add_argument("--models", default="cnn,resnet18")
    args = parser.parse_args(argv)
    conv_path = Path(args.conv_layers) if args.conv_layers else newest("conv_layers")
    step_path = Path(args.train_step) if args.train_step else newest("train_step")
    conv, step = json.loads(conv_path.read_text()), json.loads(step_path.read_text())
    result = estimate(conv, step, args.models.split(","))
    print(f"from {conv_path.name} and {step_path.name}\n")
    print(
        "| model | ferjax step (auto) | torch step | convs XLA / best / torch | rest ferjax / "
        "torch | estimated step | estimate vs torch |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, r in result.items():
        print(
            f"| {model} | {r['step_auto_s']:.2f} s ({r['measured_vs_torch']:.2f}x) | "
            f"{r['step_torch_s']:.2f} s | {r['conv_xla_s']:.2f} / {r['conv_best_s']:.2f} / "
            f"{r['conv_torch_s']:.2f} s | {r['rest_ferjax_s']:.2f} / {r['rest_torch_s']:.2f} s | "
            f"{r['estimate_s']:.2f} s | {r['estimate_vs_torch']:.2f}x |"
        )
    return result


if __name__ == "__main__":
    main()

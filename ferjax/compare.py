"""Side-by-side comparison of finished runs: did SMOTE, augmentation or a bigger model help?

    python -m ferjax.compare DIR1 DIR2 ... [--report=report.json] [--out=comparison.png]

Prints overall metrics (accuracy, balanced accuracy, macro-F1, loss, ECE) and per-class recall
and F1 of each run's report, one column per run, and writes a bar chart of the same.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ferjax import cli  # noqa: F401 - consistent environment for every CLI
from ferjax.errors import DataFormatError, DataNotFoundError

OVERALL = ("accuracy", "balanced_accuracy", "macro_f1", "loss", "ece")


def read_report(path: str) -> dict:
    """A workdir (its report.json) or a report file."""
    if not os.path.exists(path):
        raise DataNotFoundError(f"{path}: no such workdir or report file")
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
        if not os.path.isfile(path):
            raise DataNotFoundError(f"{path}: missing (has the run finished?)")
    try:
        with open(path) as f:
            report = json.load(f)
        report["class_names"], report["per_class"]  # noqa: B018 - schema check
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataFormatError(f"{path}: not a ferjax report ({type(e).__name__}: {e})") from None
    return report


def run_names(paths: list[str]) -> list[str]:
    """Short, distinct column names: the workdir's folder name (parent/name if they clash)."""
    names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    if len(set(names)) < len(names):
        names = [os.path.normpath(p) for p in paths]
    return names


def table(reports: list[dict], names: list[str]) -> str:
    """The comparison as aligned text; the best value of each row is marked with *."""
    classes = []
    for r in reports:
        classes += [c for c in r["class_names"] if c not in classes]
    rows: list[tuple[str, list[float | None], bool]] = []
    for key in OVERALL:
        rows.append((key, [r.get(key) for r in reports], key not in ("loss", "ece")))
    for what in ("recall", "f1"):
        for c in classes:
            values = [r["per_class"][c][what] if c in r["per_class"] else None for r in reports]
            rows.append((f"{what} {c}", values, True))
    width = max(10, *(len(n) for n in names))
    lines = [f"{'':<18}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for label, values, higher in rows:
        known = [v for v in values if v is not None]
        best = (max(known) if higher else min(known)) if len(set(known)) > 1 else None
        cells = []
        for v in values:
            text = "-" if v is None else f"{v:.4f}" + ("*" if v == best else " ")
            cells.append(f"{text:>{width + 2}}")
        lines.append(f"{label:<18}" + "".join(cells))
    return "\n".join(lines)


def comparison_figure(reports: list[dict], names: list[str]):
    """Grouped bars: overall metrics, per-class recall, per-class F1 (one colour per run)."""
    import matplotlib.pyplot as plt

    from ferjax import plots  # noqa: F401 - selects the non-interactive backend

    classes = []
    for r in reports:
        classes += [c for c in r["class_names"] if c not in classes]
    panels = [
        ("overall", ["accuracy", "balanced_accuracy", "macro_f1"], lambda r, k: r.get(k)),
        ("per-class recall", classes, lambda r, c: r["per_class"].get(c, {}).get("recall")),
        ("per-class F1", classes, lambda r, c: r["per_class"].get(c, {}).get("f1")),
    ]
    fig, axes = plt.subplots(3, 1, figsize=figure_size(len(classes)))
    bar = 0.8 / len(reports)
    for ax, (title, keys, get) in zip(axes, panels):
        x = np.arange(len(keys))
        for i, (r, name) in enumerate(zip(reports, names)):
            values = [get(r, k) for k in keys]
            values = [np.nan if v is None else v for v in values]
            ax.bar(x - 0.4 + bar * (i + 0.5), values, width=bar, label=name)
        ax.set_xticks(x, keys)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def figure_size(num_classes: int) -> tuple[float, float]:
    return (max(8.0, 1.5 + 1.1 * num_classes), 9.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferjax.compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="DIR", help="workdirs (or report .json files)")
    p.add_argument("--out", default="comparison.png", help="the comparison plot (PNG)")
    args = p.parse_args(argv)
    from ferjax import plots

    reports = [read_report(path) for path in args.runs]
    names = run_names(args.runs)
    splits = sorted({r.get("split", "?") for r in reports})
    print(
        f"split: {', '.join(splits)}" + ("  (warning: different splits)" if len(splits) > 1 else "")
    )
    print(table(reports, names))
    plots._save(comparison_figure(reports, names), args.out)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)

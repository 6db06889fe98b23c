"""Side-by-side comparison of finished runs: did SMOTE, augmentation or a bigger model help?

Prints overall metrics (accuracy, balanced accuracy, macro-F1, loss, ECE) and per-class recall
and F1 of each run's report, one column per run (the best of each row marked *), and writes a
bar chart of the same to --out (default: comparison.png in the first run's workdir).
"""

from __future__ import annotations

import json
import os

from ferjax.cli.flags import Parser, run
from ferjax.evaluation import plots
from ferjax.runtime.errors import DataFormatError, DataNotFoundError
from ferjax.runtime.workdir import REPORT

OVERALL = ("accuracy", "balanced_accuracy", "macro_f1", "loss", "ece")


def read_report(path: str) -> dict:
    """A workdir (its report.json) or a report file."""
    if not os.path.exists(path):
        raise DataNotFoundError(f"{path}: no such workdir or report file")
    if os.path.isdir(path):
        path = os.path.join(path, REPORT)
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


def default_output(first: str) -> str:
    """comparison.png in the first run's workdir (or next to its report file)."""
    folder = first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first))
    return os.path.join(folder, "comparison.png")


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax compare", __doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="DIR", help="workdirs (or report .json files)")
    p.add_argument("--out", default=None, help="the bar chart (PNG); default DIR1/comparison.png")
    args = p.parse(argv)
    reports = [read_report(path) for path in args.runs]
    names = run_names(args.runs)
    splits = sorted({r.get("split", "?") for r in reports})
    warning = "  (warning: different splits)" if len(splits) > 1 else ""
    print(f"split: {', '.join(splits)}{warning}")
    print(table(reports, names))
    out = args.out or default_output(args.runs[0])
    plots.save(plots.comparison_figure(reports, names), out)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    run(main)

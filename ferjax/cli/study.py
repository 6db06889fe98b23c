"""Compare class-imbalance remedies on your data over several seeds.

Runs the config once per remedy and seed (a remedy is a named set of config overrides, defined
once in REMEDIES: a sampler, a loss or post-hoc logit adjustment; `a+b` combines two, e.g.
smote+logit_adjusted). Each is an ordinary ferjax run
in WORKDIR/<remedy>/seed<k> (re-running skips finished ones); writes study.md, study.json and
study.png (per-class recall by remedy) in WORKDIR, and a recommendation line.

Every remedy starts from the plain baseline `none` (no resampling, cross-entropy, no logit
adjustment), which always runs, and changes only its own keys, so the config's own sampling or
loss choices do not leak into a remedy. Other --config.KEY=VALUE overrides apply to every run.

The recommendation: the remedy (other than none) with the best mean --metric over seeds (the
lowest for ece), its margin over none (the improvement: remedy mean - none mean, or none -
remedy for ece), and whether the margin exceeds the seed-to-seed spread, defined as the larger
of the two runs' standard deviations over seeds (sample std, ddof=1, of the metric's per-seed
values of that remedy and of none). With a single seed of either, the spread is unknown.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ferjax.cli.ablation import (
    LAUNCHERS,
    METRICS,
    check_keys,
    markdown_table,
    run_variants,
    summarise,
)
from ferjax.cli.flags import Parser, run
from ferjax.evaluation import plots
from ferjax.runtime.errors import ConfigError, FerjaxError
from ferjax.runtime.registry import did_you_mean

BASE = "none"
# Remedy name -> its own config overrides; every remedy other than none is applied on top of
# none's (see plan_remedies).
REMEDIES: dict[str, dict] = {
    BASE: {"sampling.method": "none", "loss.name": "cross_entropy", "eval.logit_adjust_tau": "0"},
    "class_weight": {"sampling.method": "class_weight"},
    "random": {"sampling.method": "random"},
    "smote": {"sampling.method": "smote"},
    "adasyn": {"sampling.method": "adasyn"},
    "focal": {"loss.name": "focal"},
    "class_balanced": {"loss.name": "class_balanced"},
    "logit_adjusted": {"loss.name": "logit_adjusted"},
    "balanced_softmax": {"loss.name": "balanced_softmax"},
    "ldam": {"loss.name": "ldam"},  # with its deferred re-weighting default (loss.drw_epoch)
    "posthoc": {"eval.logit_adjust_tau": "auto"},
}
# Metrics --metric can rank by; the ones where lower is better.
RANK_METRICS = (*METRICS, "ece")
LOWER_IS_BETTER = ("ece",)
NAME = "study"


def remedy_overrides(name: str) -> dict:
    """A remedy's own overrides; `a+b` combines remedies (e.g. smote+logit_adjusted: SMOTE's
    records trained with the logit-adjusted loss), as long as they set different keys."""
    overrides: dict = {}
    for part in name.split("+"):
        if part not in REMEDIES:
            raise ConfigError(
                f"--remedies: unknown remedy {part!r}{did_you_mean(part, REMEDIES)}; known: "
                f"{', '.join(REMEDIES)}, or several joined by + (e.g. smote+logit_adjusted)"
            )
        clash = set(overrides) & set(REMEDIES[part])
        if clash:
            raise ConfigError(
                f"--remedies: {name!r} sets {', '.join(sorted(clash))} twice; combine remedies "
                "that change different keys (a sampler, a loss, posthoc)"
            )
        overrides.update(REMEDIES[part])
    return overrides


def plan_remedies(config, remedies: list[str]) -> dict[str, dict]:
    """{remedy: full overrides}, none first (always). Unknown remedies or keys fail in one
    line."""
    own = {r: remedy_overrides(r) for r in [BASE, *remedies]}
    variants = {}
    for r in own:
        check_keys(config, own[r], f"remedy {r}")
        variants[r] = {**REMEDIES[BASE], **own[r]}
    return variants


def recommend(summary: dict, metric: str) -> str:
    """The recommendation line (see the module docstring)."""
    rows = summary["rows"]
    if metric not in rows[BASE]["mean"]:
        return f"best by {metric}: unknown (the reports have no {metric})"
    others = {r: row for r, row in rows.items() if r != BASE and metric in row["mean"]}
    if not others:
        return f"best by {metric}: no remedy other than {BASE} has results"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best = max(others, key=lambda r: sign * others[r]["mean"][metric])
    row, base = others[best], rows[BASE]
    margin = sign * (row["mean"][metric] - base["mean"][metric])
    line = (
        f"best by {metric}: {best} {row['mean'][metric]:.3f} vs {BASE} "
        f"{base['mean'][metric]:.3f} ({margin:+.3f}); "
    )
    if min(row["seeds"], base["seeds"]) < 2:
        return line + "the seed-to-seed spread is unknown (1 seed)"
    spread = max(row["std"][metric], base["std"][metric])
    if margin <= 0:
        return line + f"no remedy beats {BASE} (seed-to-seed spread {spread:.3f})"
    verdict = "exceeds" if margin > spread else "does not exceed"
    return line + f"margin {verdict} the seed-to-seed spread ({spread:.3f})"


def chart(summary: dict, path: str) -> None:
    """Per-class recall by remedy: one group per class, one bar per remedy (mean over seeds,
    error bar = std over seeds), as PNG."""
    rows, classes = summary["rows"], summary["class_names"]
    width_in = min(14.0, 2 + 0.18 * len(rows) * max(len(classes), 1))
    fig, ax = plots.plt.subplots(figsize=(width_in, 4.5))
    colours = plots.plt.get_cmap("tab20")
    width = 0.8 / max(len(rows), 1)
    xs = np.arange(len(classes))
    for k, (remedy, row) in enumerate(rows.items()):
        ax.bar(
            xs + k * width,
            [row["mean"][f"recall_{c}"] for c in classes],
            width,
            yerr=[row["std"][f"recall_{c}"] for c in classes],
            capsize=2,
            label=remedy,
            color=colours(k % 20),
        )
    ax.set_xticks(xs + 0.4 - width / 2, classes, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test recall (mean ± std over seeds)")
    ax.set_title("per-class recall by imbalance remedy")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    plots.save(fig, path)


def study(
    config,
    config_path,
    user_overrides,
    workdir,
    remedies,
    seeds,
    parallel,
    launcher,
    metric="balanced_accuracy",
):
    """Plans, runs (or prints / writes as a SLURM array) and summarises the study; the summary
    (with "recommendation" and "metric") once every run has finished, else None."""
    if metric not in RANK_METRICS:
        raise ConfigError(
            f"--metric: unknown metric {metric!r}{did_you_mean(metric, RANK_METRICS)}; "
            f"known: {', '.join(RANK_METRICS)}"
        )
    variants = plan_remedies(config, remedies)
    ready = run_variants(
        config,
        config_path,
        user_overrides,
        workdir,
        variants,
        seeds,
        parallel,
        launcher,
        name=NAME,
    )
    if not ready:
        return None
    summary = summarise(workdir, list(variants), seeds, base=BASE, optional=("ece",))
    if not summary["rows"]:
        raise FerjaxError(f"no report.json of the {BASE} runs under {workdir}")
    line = recommend(summary, metric)
    summary["metric"], summary["recommendation"] = metric, line
    has_ece = all("ece" in row["mean"] for row in summary["rows"].values())
    cols = list(METRICS) + (["ece"] if has_ece else [])
    cols += [f"recall_{c}" for c in summary["class_names"]]
    table = markdown_table(summary, cols, deltas=False, label="remedy")
    with open(os.path.join(workdir, f"{NAME}.md"), "w") as f:
        f.write(
            f"# Class-imbalance remedies on {config_path}\n\n{line}\n\n"
            "Each cell: mean ± std over seeds (test split).\n\n" + table
        )
    with open(os.path.join(workdir, f"{NAME}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    chart(summary, os.path.join(workdir, f"{NAME}.png"))
    print(table)
    print(line)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax study", __doc__.split("\n\n")[0], config=True)
    p.add_argument("--workdir", required=True, help="where the runs' workdirs and tables go")
    p.add_argument(
        "--remedies",
        default=",".join(REMEDIES),
        help=f"comma-separated, from: {', '.join(REMEDIES)}, or several joined by + "
        f"(smote+logit_adjusted); {BASE} always runs",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per remedy (train.seed 0..N-1)")
    p.add_argument(
        "--metric",
        default="balanced_accuracy",
        help=f"ranks the remedies, one of: {', '.join(RANK_METRICS)} (lower ece is better)",
    )
    p.add_argument("--parallel", type=int, default=1, help="runs at once (one GPU each)")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS)
    args = p.parse(argv)
    if args.seeds < 1:
        raise ConfigError(f"--seeds: got {args.seeds}, expected at least 1")
    remedies = [r.strip() for r in args.remedies.split(",") if r.strip()]
    study(
        args.config,
        args.config_path,
        args.overrides,
        args.workdir,
        remedies,
        args.seeds,
        args.parallel,
        args.launcher,
        metric=args.metric,
    )
    return 0


if __name__ == "__main__":
    run(main)

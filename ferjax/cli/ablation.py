"""One-at-a-time ablation of a recipe (`ferjax ablate`): which lever helps which
class?

Trains the recipe and, for each lever, the recipe with that lever switched to its baseline
value (a lever is a named set of config overrides, defined once in LEVERS). Every variant is an
ordinary ferjax run in its own sub-workdir (DIR/<variant>/seed<k>), so re-running skips the
finished ones and resumes the interrupted ones. Writes ablation.md, ablation.json and
ablation.png (per-class recall deltas per lever) in the workdir.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from ferjax.config.overrides import set_override
from ferjax.config.validate import validate
from ferjax.evaluation import plots
from ferjax.runtime.errors import ConfigError, FerjaxError
from ferjax.runtime.workdir import REPORT

# Lever name -> the config overrides that switch it to its baseline ("what most people do").
LEVERS: dict[str, dict] = {
    "cleaning": {
        "data.clean.blank": False,
        "data.clean.duplicates": False,
        "data.clean.cross_split": False,
    },
    "sampling": {"sampling.method": "none"},
    "augment": {"augment.ops": ""},
    "tta": {"eval.tta": "none"},
    "model": {
        "model.name": "cnn",
        "model.cnn_widths": "32,64,128",
        "model.cnn_convs_per_stage": 1,
        "model.dropout": 0.0,
        "model.conv_dropout": 0.0,
        "optim.weight_decay": 0.0,
    },
    "pretrained": {"model.init_from": ""},
    "label_smoothing": {"train.label_smoothing": 0.0},
}
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
LAUNCHERS = ("local", "print", "slurm")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _cli_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_variants(config, levers: list[str]) -> dict[str, dict]:
    """{variant: overrides}; 'recipe' has none. Unknown levers or keys fail in one line."""
    variants = {"recipe": {}}
    for lever in levers:
        if lever not in LEVERS:
            raise ConfigError(f"--levers: unknown lever {lever!r}; known: {', '.join(LEVERS)}")
        for key in LEVERS[lever]:
            try:
                _get(config, key)
            except KeyError:
                raise ConfigError(
                    f"lever {lever}: unknown config key {key!r} (not in the recipe's config)"
                ) from None
        changes = {k: v for k, v in LEVERS[lever].items() if _get(config, k) != v}
        if changes:
            variants[f"no_{lever}"] = changes
        else:
            print(f"lever {lever}: the recipe already uses its baseline; not ablated")
    return variants


def variant_command(config_path, user_overrides, overrides, seed, workdir) -> list[str]:
    """The ferjax.main command of one variant. user_overrides: [(key, value text)] from the
    ablation's own command line."""
    cmd = [sys.executable, "-m", "ferjax.main", f"--config={config_path}", f"--workdir={workdir}"]
    cmd += [f"--config.{k}={v}" for k, v in user_overrides]
    cmd += [f"--config.{k}={_cli_value(v)}" for k, v in overrides.items()]
    cmd += [f"--config.train.seed={seed}"]
    return cmd


def run_local(jobs: list[tuple[str, list[str]]], parallel: int) -> None:
    """Runs the commands, `parallel` at a time; on GPUs each gets its own device."""
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    running: list[tuple[str, subprocess.Popen, object]] = []
    pending = list(jobs)
    failed = []
    while pending or running:
        while pending and len(running) < parallel:
            workdir, cmd = pending.pop(0)
            env = dict(os.environ)
            if gpus and parallel > 1:
                env["CUDA_VISIBLE_DEVICES"] = gpus[len(running) % len(gpus)]
            os.makedirs(os.path.dirname(workdir), exist_ok=True)
            log = open(f"{workdir}.log", "a")  # noqa: SIM115 - beside the run's workdir
            print(f"start {workdir}", flush=True)
            running.append((workdir, subprocess.Popen(cmd, stdout=log, stderr=log, env=env), log))
        for item in list(running):
            workdir, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
                print(f"{status} {workdir}", flush=True)
                if proc.returncode:
                    failed.append(workdir)
        time.sleep(0.2)
    if failed:
        raise FerjaxError(f"{len(failed)} variant(s) failed, see the log {failed[0]}.log")


def slurm_array(jobs: list[tuple[str, list[str]]], workdir: str) -> str:
    """A SLURM job-array script, one task per variant/seed (same sbatch options as
    launch/slurm.sh)."""
    lines = [
        "#!/usr/bin/env bash",
        "#SBATCH --job-name=ferjax-ablate",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        "#SBATCH --ntasks=1",
        "#SBATCH --gpus=1",
        f"#SBATCH --output={workdir}/slurm-%A_%a.out",
        "#SBATCH --requeue",
        "#SBATCH --signal=TERM@120",
        "commands=(",
    ]
    lines += [f"  {shlex.quote(shlex.join(cmd))}" for _, cmd in jobs]
    lines += [")", 'eval "${commands[$SLURM_ARRAY_TASK_ID]}"']
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(workdir: str, variants: list[str], seeds: int) -> dict:
    """Reads every report.json; mean, std and delta vs the recipe for each metric and for
    each class's recall."""
    rows = {}
    for v in variants:
        reports = []
        for s in range(seeds):
            path = os.path.join(workdir, v, f"seed{s}", REPORT)
            if os.path.exists(path):
                with open(path) as f:
                    reports.append(json.load(f))
        if not reports:
            continue
        classes = reports[0]["class_names"]
        values = {m: [r[m] for r in reports] for m in METRICS}
        for c in classes:
            values[f"recall_{c}"] = [r["per_class"][c]["recall"] for r in reports]
        rows[v] = {"seeds": len(reports), "values": values, "class_names": classes}
    if "recipe" not in rows:
        return {"rows": {}}
    base = rows["recipe"]["values"]
    for row in rows.values():
        row["mean"], row["std"], row["delta"], row["delta_std"] = {}, {}, {}, {}
        for m, vals in row["values"].items():
            mean, std = _mean_std(vals)
            bmean, bstd = _mean_std(base[m])
            row["mean"][m], row["std"][m] = mean, std
            row["delta"][m] = mean - bmean
            row["delta_std"][m] = float(np.sqrt(std**2 / len(vals) + bstd**2 / len(base[m])))
    return {"rows": rows, "class_names": rows["recipe"]["class_names"]}


def markdown_table(summary: dict) -> str:
    rows = summary["rows"]
    cols = list(METRICS) + [f"recall_{c}" for c in summary["class_names"]]
    out = [
        "| variant | seeds | " + " | ".join(cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for v, row in rows.items():
        cells = []
        for m in cols:
            cell = f"{row['mean'][m]:.3f}"
            if row["std"][m]:
                cell += f" ± {row['std'][m]:.3f}"
            if v != "recipe":
                cell += f" ({row['delta'][m]:+.3f}"
                cell += f" ± {row['delta_std'][m]:.3f})" if row["delta_std"][m] else ")"
            cells.append(cell)
        out.append(f"| {v} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def chart(summary: dict, path: str) -> None:
    """Per-class recall deltas per lever (with standard errors), as PNG."""
    rows = {v: r for v, r in summary["rows"].items() if v != "recipe"}
    cols = ["balanced_accuracy"] + [f"recall_{c}" for c in summary["class_names"]]
    fig, ax = plots.plt.subplots(figsize=(2 + 1.6 * max(len(rows), 1), 4))
    width = 0.8 / len(cols)
    for k, m in enumerate(cols):
        xs = np.arange(len(rows)) + k * width
        ax.bar(
            xs,
            [r["delta"][m] for r in rows.values()],
            width,
            yerr=[r["delta_std"][m] for r in rows.values()],
            label=m.replace("recall_", ""),
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, list(rows), rotation=20)
    ax.set_ylabel("change vs full recipe (switching the lever off)")
    ax.set_title("negative = the lever helps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)


def ablate(config, config_path, user_overrides, workdir, levers, seeds, parallel, launcher):
    """Plans, runs (or prints / writes as a SLURM array) and summarises the ablation."""
    variants = plan_variants(config, levers)
    for overrides in variants.values():
        variant = config.copy_and_resolve_references()
        variant.unlock()
        for k, v in overrides.items():
            set_override(variant, k, _cli_value(v))
        validate(variant)
    jobs = []
    for name, overrides in variants.items():
        for seed in range(seeds):
            wd = os.path.join(workdir, name, f"seed{seed}")
            if os.path.exists(os.path.join(wd, "report.json")):
                print(f"skip {wd} (finished)")
                continue
            jobs.append((wd, variant_command(config_path, user_overrides, overrides, seed, wd)))
    os.makedirs(workdir, exist_ok=True)
    if launcher == "print":
        for _, cmd in jobs:
            print(shlex.join(cmd))
        return None
    if launcher == "slurm":
        script = os.path.join(workdir, "ablation.sbatch")
        with open(script, "w") as f:
            f.write(slurm_array(jobs, workdir))
        print(f"wrote {script}; submit with: sbatch {script}; then re-run this command")
        return None
    run_local(jobs, parallel)
    summary = summarise(workdir, list(variants), seeds)
    table = markdown_table(summary)
    with open(os.path.join(workdir, "ablation.md"), "w") as f:
        f.write(
            f"# Ablation of {config_path}\n\nEach cell: mean ± std over seeds "
            "(delta vs the full recipe ± its standard error).\n\n" + table
        )
    with open(os.path.join(workdir, "ablation.json"), "w") as f:
        json.dump(summary, f, indent=2)
    chart(summary, os.path.join(workdir, "ablation.png"))
    print(table)
    return summary

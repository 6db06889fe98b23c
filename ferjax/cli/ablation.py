"""One-at-a-time ablation of a recipe (`ferjax ablate`): which lever helps which
class?

Trains the recipe and, for each lever, the recipe with that lever switched to its baseline
value (a lever is a named set of config overrides, defined once in LEVERS). Every variant is an
ordinary ferjax run in its own sub-workdir (DIR/<variant>/seed<k>), so re-running skips the
finished ones and resumes the interrupted ones. Writes ablation.md, ablation.json and
ablation.png (per-class recall deltas per lever) in the workdir.

The machinery is shared with `ferjax study` (ferjax/cli/study.py): `check_keys` and
`run_variants` (validate, then run locally / print / write a SLURM array, any named set of
variants over seeds), `summarise` (mean/std/delta vs a named base variant) and
`markdown_table`.
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


def check_keys(config, overrides: dict, what: str) -> None:
    """Fails in one line when an override names a key the config does not have. what: e.g.
    "lever cleaning" (starts the message)."""
    for key in overrides:
        try:
            _get(config, key)
        except KeyError:
            raise ConfigError(
                f"{what}: unknown config key {key!r} (not in the recipe's config)"
            ) from None


def plan_variants(config, levers: list[str]) -> dict[str, dict]:
    """{variant: overrides}; 'recipe' has none. Unknown levers or keys fail in one line."""
    variants = {"recipe": {}}
    for lever in levers:
        if lever not in LEVERS:
            raise ConfigError(f"--levers: unknown lever {lever!r}; known: {', '.join(LEVERS)}")
        check_keys(config, LEVERS[lever], f"lever {lever}")
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


def slurm_array(jobs: list[tuple[str, list[str]]], workdir: str, job_name="ferjax-ablate") -> str:
    """A SLURM job-array script, one task per variant/seed (same sbatch options as
    launch/slurm.sh)."""
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={job_name}",
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


def summarise(
    workdir: str,
    variants: list[str],
    seeds: int,
    base: str = "recipe",
    optional: tuple[str, ...] = (),
) -> dict:
    """Reads every WORKDIR/<variant>/seed<k>/report.json; mean, std (over seeds, ddof=1; 0 for
    one seed) and delta vs the `base` variant (± its standard error) for each of METRICS, each
    of `optional` that every report of both the variant and the base has (e.g. "ece"), and each
    class's recall ("recall_<class>"). Variants without any report are left out; no report of
    the base gives {"rows": {}}."""
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
        metrics = list(METRICS) + [m for m in optional if all(m in r for r in reports)]
        values = {m: [r[m] for r in reports] for m in metrics}
        for c in classes:
            values[f"recall_{c}"] = [r["per_class"][c]["recall"] for r in reports]
        rows[v] = {"seeds": len(reports), "values": values, "class_names": classes}
    if base not in rows:
        return {"rows": {}}
    bvalues = rows[base]["values"]
    for row in rows.values():
        row["values"] = {m: vals for m, vals in row["values"].items() if m in bvalues}
        row["mean"], row["std"], row["delta"], row["delta_std"] = {}, {}, {}, {}
        for m, vals in row["values"].items():
            mean, std = _mean_std(vals)
            bmean, bstd = _mean_std(bvalues[m])
            row["mean"][m], row["std"][m] = mean, std
            row["delta"][m] = mean - bmean
            row["delta_std"][m] = float(np.sqrt(std**2 / len(vals) + bstd**2 / len(bvalues[m])))
    return {"rows": rows, "class_names": rows[base]["class_names"], "base": base}


def markdown_table(
    summary: dict, cols: list[str] | None = None, deltas: bool = True, label: str = "variant"
) -> str:
    """One row per variant: mean (± std over seeds when it is not 0), and with `deltas` the
    change vs the base (± its standard error). cols: default METRICS and each class's recall;
    a metric a row lacks shows as n/a."""
    rows = summary["rows"]
    base = summary.get("base", "recipe")
    if cols is None:
        cols = list(METRICS) + [f"recall_{c}" for c in summary["class_names"]]
    out = [
        f"| {label} | seeds | " + " | ".join(cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for v, row in rows.items():
        cells = []
        for m in cols:
            if m not in row["mean"]:
                cells.append("n/a")
                continue
            cell = f"{row['mean'][m]:.3f}"
            if row["std"][m]:
                cell += f" ± {row['std'][m]:.3f}"
            if deltas and v != base:
                cell += f" ({row['delta'][m]:+.3f}"
                cell += f" ± {row['delta_std'][m]:.3f})" if row["delta_std"][m] else ")"
            cells.append(cell)
        out.append(f"| {v} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def chart(summary: dict, path: str) -> None:
    """Per-class recall deltas per lever (with standard errors), as PNG."""
    rows = {v: r for v, r in summary["rows"].items() if v != summary.get("base", "recipe")}
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


def run_variants(
    config,
    config_path,
    user_overrides,
    workdir,
    variants: dict[str, dict],
    seeds,
    parallel,
    launcher,
    name: str = "ablation",
) -> bool:
    """Validates every variant (the config with its overrides), then runs the unfinished
    variant/seed runs (WORKDIR/<variant>/seed<k>) `parallel` at a time (launcher local), prints
    their commands (print) or writes them as WORKDIR/<name>.sbatch (slurm). True when the
    results are ready to summarise (local, all runs finished)."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: got {launcher!r}, expected one of {', '.join(LAUNCHERS)}")
    if parallel < 1:
        raise ConfigError(f"--parallel: got {parallel}, expected at least 1")
    for overrides in variants.values():
        variant = config.copy_and_resolve_references()
        variant.unlock()
        for k, v in overrides.items():
            set_override(variant, k, _cli_value(v))
        validate(variant)
    jobs = []
    for variant, overrides in variants.items():
        for seed in range(seeds):
            wd = os.path.join(workdir, variant, f"seed{seed}")
            if os.path.exists(os.path.join(wd, "report.json")):
                print(f"skip {wd} (finished)")
                continue
            jobs.append((wd, variant_command(config_path, user_overrides, overrides, seed, wd)))
    os.makedirs(workdir, exist_ok=True)
    if launcher == "print":
        for _, cmd in jobs:
            print(shlex.join(cmd))
        return False
    if launcher == "slurm":
        script = os.path.join(workdir, f"{name}.sbatch")
        with open(script, "w") as f:
            f.write(slurm_array(jobs, workdir, job_name=f"ferjax-{name}"))
        print(f"wrote {script}; submit with: sbatch {script}; then re-run this command")
        return False
    run_local(jobs, parallel)
    return True


def ablate(config, config_path, user_overrides, workdir, levers, seeds, parallel, launcher):
    """Plans, runs (or prints / writes as a SLURM array) and summarises the ablation."""
    variants = plan_variants(config, levers)
    ready = run_variants(
        config, config_path, user_overrides, workdir, variants, seeds, parallel, launcher
    )
    if not ready:
        return None
    summary = summarise(workdir, list(variants), seeds, base="recipe")
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

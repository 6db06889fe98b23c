"""`ferjax study` on fake finished runs (report.json files written by the test, nothing trains):
table, recommendation, chart, launchers, bad remedies."""

import json
import shlex
import statistics

import numpy as np
import pytest
from conftest import TINY, call_tool, tiny_config

from ferjax.cli import ablation, study
from ferjax.runtime.errors import ConfigError

CLASSES = ["happy", "sad", "neutral"]
# Remedies whose validation depends only on the samplers (not on the loss or the post-hoc
# logit adjustment settings).
SAMPLERS = ["smote", "random"]


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every run must already be finished: nothing may start a training process."""

    def run_local(jobs, parallel):
        assert jobs == [], f"a test would train: {jobs[0][0]}"

    monkeypatch.setattr(ablation, "run_local", run_local)


def fake_report(rng, ba=None, ece=True) -> dict:
    recall = rng.uniform(0.2, 0.9, len(CLASSES))
    report = {
        "split": "test",
        "class_names": CLASSES,
        "accuracy": float(rng.uniform(0.4, 0.8)),
        "balanced_accuracy": float(recall.mean() if ba is None else ba),
        "macro_f1": float(rng.uniform(0.3, 0.7)),
        "per_class": {
            c: {"precision": 0.5, "recall": float(r), "f1": 0.5, "support": 20}
            for c, r in zip(CLASSES, recall, strict=True)
        },
    }
    if ece:
        report["ece"] = float(rng.uniform(0.01, 0.2))
    return report


def write_runs(workdir, bas: dict[str, list[float]], ece=True, seed=0) -> dict:
    """{remedy: [report per seed]}, written as WORKDIR/<remedy>/seed<k>/report.json."""
    rng = np.random.default_rng(seed)
    runs = {}
    for remedy, values in bas.items():
        runs[remedy] = []
        for k, ba in enumerate(values):
            report = fake_report(rng, ba, ece)
            d = workdir / remedy / f"seed{k}"
            d.mkdir(parents=True)
            (d / "report.json").write_text(json.dumps(report))
            runs[remedy].append(report)
    return runs


def argv(workdir, *extra):
    return [f"--config={TINY}", f"--workdir={workdir}", *extra]


def table_rows(text: str) -> dict[str, dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def cell(values: list[float]) -> str:
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return f"{mean:.3f} ± {std:.3f}"


def test_table_recommendation_and_chart(tmp_path, capsys):
    bas = {
        "none": [0.50, 0.51, 0.52],
        "smote": [0.60, 0.61, 0.62],
        "random": [0.55, 0.56, 0.56],
    }
    runs = write_runs(tmp_path, bas)
    assert call_tool(study.main, argv(tmp_path, "--remedies=smote,random")) == 0
    out = capsys.readouterr().out
    assert out.count("(finished)") == 9
    line = (
        "best by balanced_accuracy: smote 0.610 vs none 0.510 (+0.100); margin exceeds the "
        "seed-to-seed spread (0.010)"
    )
    assert line in out
    md = (tmp_path / "study.md").read_text()
    assert md.splitlines()[2] == line
    rows = table_rows(md)
    assert list(rows) == ["none", "smote", "random"]
    for remedy, reports in runs.items():
        row = rows[remedy]
        assert row["seeds"] == "3"
        for m in ("accuracy", "balanced_accuracy", "macro_f1", "ece"):
            assert row[m] == cell([r[m] for r in reports]), (remedy, m)
        for c in CLASSES:
            assert row[f"recall_{c}"] == cell([r["per_class"][c]["recall"] for r in reports])
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["recommendation"] == line and summary["base"] == "none"
    assert summary["rows"]["smote"]["mean"]["balanced_accuracy"] == pytest.approx(0.61)
    assert (tmp_path / "study.png").stat().st_size > 5000


def test_spread_larger_than_margin_and_no_ece(tmp_path, capsys):
    write_runs(tmp_path, {"none": [0.50, 0.51, 0.52], "smote": [0.40, 0.60, 0.83]}, ece=False)
    summary = study.study(tiny_config(), TINY, [], str(tmp_path), ["smote"], 3, 1, "local")
    std = statistics.stdev([0.40, 0.60, 0.83])
    assert summary["recommendation"] == (
        "best by balanced_accuracy: smote 0.610 vs none 0.510 (+0.100); margin does not exceed "
        f"the seed-to-seed spread ({std:.3f})"
    )
    md = (tmp_path / "study.md").read_text()
    assert "| remedy | seeds | accuracy | balanced_accuracy | macro_f1 | recall_happy |" in md
    assert (tmp_path / "study.png").exists()


def test_one_seed_and_lower_is_better(tmp_path, capsys):
    runs = write_runs(tmp_path, {"none": [0.5], "smote": [0.6], "random": [0.7]})
    summary = study.study(
        tiny_config(), TINY, [], str(tmp_path), SAMPLERS, 1, 1, "local", metric="ece"
    )
    ece = {r: reports[0]["ece"] for r, reports in runs.items()}
    best = min(SAMPLERS, key=ece.get)
    assert summary["recommendation"] == (
        f"best by ece: {best} {ece[best]:.3f} vs none {ece['none']:.3f} "
        f"({ece['none'] - ece[best]:+.3f}); the seed-to-seed spread is unknown (1 seed)"
    )


def test_print_and_slurm_launchers(tmp_path, capsys):
    assert (
        call_tool(study.main, argv(tmp_path, "--remedies=smote", "--seeds=2", "--launcher=print"))
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all("-m ferjax.main" in ln for ln in lines)
    by_workdir = {}
    for ln in lines:
        args = shlex.split(ln)
        workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
        by_workdir[workdir] = args
    assert sorted(by_workdir) == [
        str(tmp_path / r / f"seed{k}") for r in ("none", "smote") for k in range(2)
    ]
    smote = by_workdir[str(tmp_path / "smote" / "seed1")]
    for flag in (
        "--config.sampling.method=smote",
        "--config.loss.name=cross_entropy",
        "--config.eval.logit_adjust_tau=0",
        "--config.train.seed=1",
    ):
        assert flag in smote
    none = by_workdir[str(tmp_path / "none" / "seed0")]
    assert "--config.sampling.method=none" in none and "--config.train.seed=0" in none
    assert not (tmp_path / "study.md").exists()
    study.study(tiny_config(), TINY, [], str(tmp_path), ["smote"], 2, 1, "slurm")
    script = (tmp_path / "study.sbatch").read_text()
    assert "#SBATCH --array=0-3" in script and script.count("ferjax.main") == 4
    assert "#SBATCH --job-name=ferjax-study" in script


def test_every_remedy_starts_from_none():
    variants = study.plan_remedies(tiny_config(), list(study.REMEDIES))
    assert list(variants) == list(study.REMEDIES)
    base = study.REMEDIES["none"]
    for remedy, overrides in variants.items():
        assert set(overrides) == set(base)
        changed = {k for k in overrides if overrides[k] != base[k]}
        assert changed == (set() if remedy == "none" else set(study.REMEDIES[remedy]))
    assert variants["ldam"]["loss.name"] == "ldam"
    assert variants["ldam"]["sampling.method"] == "none"
    assert variants["posthoc"] == {**base, "eval.logit_adjust_tau": "auto"}


def test_remedies_combine_with_plus():
    """smote+logit_adjusted: both remedies' keys on top of none's; a key set twice, or an
    unknown part, is one line."""
    variants = study.plan_remedies(tiny_config(), ["smote+logit_adjusted", "smote"])
    assert list(variants) == ["none", "smote+logit_adjusted", "smote"]
    combined = variants["smote+logit_adjusted"]
    assert combined["sampling.method"] == "smote" and combined["loss.name"] == "logit_adjusted"
    assert combined["eval.logit_adjust_tau"] == "0"
    with pytest.raises(ConfigError, match=r"'smote\+random' sets sampling.method twice"):
        study.plan_remedies(tiny_config(), ["smote+random"])
    with pytest.raises(ConfigError, match="unknown remedy 'focl'; did you mean 'focal'"):
        study.plan_remedies(tiny_config(), ["smote+focl"])


def test_unknown_remedy_is_one_line(tmp_path, capsys):
    assert call_tool(study.main, argv(tmp_path, "--remedies=smote,smoet")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: --remedies: unknown remedy 'smoet'; did you mean 'smote'?")
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError, match="unknown remedy 'focl'; did you mean 'focal'"):
        study.plan_remedies(tiny_config(), ["focl"])


def test_help(capsys):
    assert call_tool(study.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--remedies" in out and "--metric" in out and "class_weight" in out

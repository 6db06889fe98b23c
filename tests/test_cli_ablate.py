"""A tiny ablation end to end: table, chart, deltas, resumability, bad levers."""

import json
import os

import pytest
from conftest import TINY, tiny_config

from ferjax.cli import ablation as ablate
from ferjax.runtime.errors import ConfigError

USER = [
    ("train.num_epochs", "1"),
    ("train.label_smoothing", "0.1"),
    ("data.classes", "happy,sad,neutral"),
]


def _run(workdir):
    config = tiny_config(
        train__num_epochs=1, train__label_smoothing=0.1, data__classes="happy,sad,neutral"
    )
    return ablate.ablate(
        config,
        TINY,
        USER,
        str(workdir),
        ["augment", "tta"],
        seeds=1,
        parallel=1,
        launcher="local",
    )


@pytest.mark.slow
def test_tiny_ablation(tmp_path, capsys):
    summary = _run(tmp_path)
    out = capsys.readouterr().out
    assert "lever tta: the recipe already uses its baseline; not ablated" in out
    rows = summary["rows"]
    assert list(rows) == ["recipe", "no_augment"]
    assert summary["class_names"] == ["happy", "sad", "neutral"]
    for variant, row in rows.items():
        with open(tmp_path / variant / "seed0" / "report.json") as f:
            report = json.load(f)
        with open(tmp_path / "recipe" / "seed0" / "report.json") as f:
            recipe = json.load(f)
        assert row["mean"]["accuracy"] == report["accuracy"]
        assert row["delta"]["balanced_accuracy"] == pytest.approx(
            report["balanced_accuracy"] - recipe["balanced_accuracy"]
        )
        assert row["delta"]["recall_sad"] == pytest.approx(
            report["per_class"]["sad"]["recall"] - recipe["per_class"]["sad"]["recall"]
        )
    config = json.loads((tmp_path / "no_augment" / "seed0" / "config.json").read_text())
    assert config["augment"]["ops"] == "" and config["train"]["label_smoothing"] == 0.1
    table = (tmp_path / "ablation.md").read_text()
    assert "| variant | seeds | accuracy | balanced_accuracy | macro_f1 | recall_happy | " in table
    assert table.count("\n| no_") == 1
    assert (tmp_path / "ablation.png").stat().st_size > 5000
    # Re-running skips the finished variants and gives the same summary.
    again = _run(tmp_path)
    assert capsys.readouterr().out.count("(finished)") == 2
    assert again["rows"]["no_augment"]["delta"] == rows["no_augment"]["delta"]


def test_unknown_lever_key_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(ablate.LEVERS, "bogus", {"train.nonexistent": 1})
    with pytest.raises(ConfigError) as e:
        ablate.ablate(tiny_config(), TINY, [], str(tmp_path), ["bogus"], 1, 1, "local")
    assert (
        str(e.value) == "lever bogus: unknown config key 'train.nonexistent' (not in the "
        "recipe's config)"
    )
    assert not os.path.exists(tmp_path / "recipe")
    with pytest.raises(ConfigError, match="^--levers: unknown lever 'nope'"):
        ablate.ablate(tiny_config(), TINY, [], str(tmp_path), ["nope"], 1, 1, "local")


def test_print_and_slurm_launchers(tmp_path, capsys):
    ablate.ablate(tiny_config(), TINY, [], str(tmp_path), ["augment"], 2, 1, "print")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all("-m ferjax.main" in line for line in lines)
    assert any(
        "--config.augment.ops=" in line and "--config.train.seed=1" in line for line in lines
    )
    ablate.ablate(tiny_config(), TINY, [], str(tmp_path), ["augment"], 2, 1, "slurm")
    script = (tmp_path / "ablation.sbatch").read_text()
    assert "#SBATCH --array=0-3" in script and script.count("ferjax.main") == 4

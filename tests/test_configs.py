"""Every shipped config is a promise: each file in configs/ runs an epoch on generated data in
its source's format (shrunk: fewer faces, narrower models, one epoch), keeping its recipe."""

from __future__ import annotations

import json
import runpy

import pytest
from conftest import ROOT, train

from ferjax.data.sources.fer2013 import write_fer2013_csv
from ferjax.data.sources.synthetic import make_synthetic
from tests.fake_releases import write_affectnet, write_rafdb

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
# Recipe keys that the shrinking never touches: they must reach the run as shipped.
RECIPE = ("data.name", "sampling.method", "loss.name", "optim.name", "augment.ops", "eval.tta")


def generated(name: str, root) -> str:
    """A small file or folder in the release format of data.name (its path; '' for synthetic)."""
    if name == "synthetic":
        return ""
    if name == "fer2013":
        path = root / "fer2013.csv"
        write_fer2013_csv(str(path), make_synthetic(400, 80, 80, seed=3))
        return str(path)
    if name == "rafdb":
        write_rafdb(str(root / "rafdb"), num_train=240, num_test=60, seed=0)
        return str(root / "rafdb")
    if name == "affectnet":
        write_affectnet(str(root / "affectnet"), num_train=240, num_val=60, seed=0)
        return str(root / "affectnet")
    raise AssertionError(f"configs/ names data.name={name}: add a generator for its format here")


def shrink(config, path: str):
    """The config at test size: data and model smaller, one epoch; the recipe untouched."""
    config.data.path = path
    config.data.synthetic.num_train, config.data.synthetic.num_val = 400, 80
    config.data.synthetic.num_test = 80
    config.data.on_error = "skip"  # the generated AffectNet set has boxes outside photos
    config.data.image_size = min(
        config.data.image_size, 64 if config.model.name == "resnet50" else 112
    )
    config.model.cnn_widths, config.model.cnn_hidden, config.model.width = "8,16", 16, 8
    config.model.conv_impl = "xla"
    config.train.dtype = "float32"  # bfloat16 is emulated (slow) on a CPU
    config.train.num_epochs, config.train.batch_size, config.train.eval_batch_size = 1, 16, 32
    config.train.log_every_steps, config.train.verbosity = 5, 0
    config.train.checkpoint_every_minutes = 0.0
    return config


def get(config, dotted):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_runs_an_epoch(name, tmp_path):
    config = runpy.run_path(str(ROOT / "configs" / f"{name}.py"))["get_config"]()
    shipped = {k: get(config, k) for k in RECIPE}
    config = shrink(config, generated(config.data.name, tmp_path))
    report = train(config, tmp_path / "run")
    assert report["split"] == "test" and 0.0 <= report["accuracy"] <= 1.0
    assert report["checkpoint_step"] > 0
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: get(written, k) for k in RECIPE} == shipped
    classes = [c.strip() for c in config.data.classes.split(",") if c.strip()]
    if classes:
        assert report["class_names"] == classes


def test_every_config_is_covered():
    """The premise: the parametrisation found the shipped configs (a glob that matched nothing
    would pass vacuously)."""
    assert {"default", "demo", "cnn", "resnet", "happy_sad_neutral", "quick"} <= set(CONFIGS)
    assert {"rafdb_resnet18", "affectnet_resnet50"} <= set(CONFIGS)

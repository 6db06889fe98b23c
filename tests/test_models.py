"""ferjax.models: the CNN's head across input sizes."""

from __future__ import annotations

import json
import math
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, set_keys, train, train_losses

from ferjax.models.cnn import FerCNN, adaptive_avg_pool


def test_adaptive_pool_is_a_mean_and_the_identity_at_48():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 12, 3)), jnp.float32)
    np.testing.assert_allclose(
        adaptive_avg_pool(x, 3), x.reshape(2, 3, 4, 3, 4, 3).mean(axis=(2, 4)), rtol=1e-6
    )
    assert adaptive_avg_pool(jnp.ones((1, 14, 14, 2)), 6).shape == (1, 6, 6, 2)
    np.testing.assert_allclose(adaptive_avg_pool(jnp.ones((1, 14, 14, 2)), 6), 1.0, rtol=1e-5)
    model = FerCNN(num_classes=7, stage_widths=(8, 16, 32), convs_per_stage=1, hidden=16)
    shapes = {}
    for side in (48, 112, 224):
        v = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3)))
        shapes[side] = jax.tree.map(lambda a: a.shape, v["params"])
    # The same parameters at every size: 48 px flattens its 6x6 map, larger inputs pool to it.
    assert shapes[48] == shapes[112] == shapes[224]
    assert shapes[48]["head_dense"]["kernel"] == (6 * 6 * 32, 16)


def _faces_at_112(head: str, epochs: int):
    config = runpy.run_path(str(ROOT / "configs" / "demo.py"))["get_config"]()
    return set_keys(
        config,
        data__image_size=112,
        data__channels=3,
        data__classes="happy,sad,neutral",
        data__synthetic__num_train=1500,
        data__synthetic__num_val=300,
        data__synthetic__num_test=600,
        train__num_epochs=epochs,
        train__batch_size=64,
        train__verbosity=0,
        model__cnn_head=head,
        # The recipe this test was written for, pinned (the demo's may change): a 32/64/128 CNN
        # with dropout and a one-epoch warm-up.
        model__cnn_widths="32,64,128",
        model__conv_dropout=0.1,
        model__dropout=0.3,
        optim__warmup_epochs=1.0,
        sampling__method="none",
    )


@pytest.mark.slow
def test_cnn_learns_colour_faces_at_112_px(tmp_path):
    """The demo's recipe (AdamW 2e-3) on colour procedural faces at 112 px, 3 classes: with the
    pooled head the first epoch's loss stays near ln 3 and the model learns (balanced accuracy
    well above the 1/3 of chance); a flatten head (25,088 inputs) overshoots in the same first
    epoch, the premise that makes this test able to fail.

    Balanced accuracy measured (hand probe, AMD Zen 4 host): seed 0 0.467 (auto) / 0.462 (xla);
    seeds 1-3 0.385-0.471. The host's rounding moves seed 0 by ~0.005, the seed by up to 0.08,
    so the bound sits 0.06 below seed 0's runs (it was 0.42, 0.04 below)."""
    report = train(_faces_at_112("auto", 4), tmp_path / "pooled")
    first = train_losses(tmp_path / "pooled")
    assert first[min(first)] < math.log(3) + 0.35, first
    assert report["balanced_accuracy"] > 0.40, report["balanced_accuracy"]
    train(_faces_at_112("flatten", 1), tmp_path / "flat")
    flat = train_losses(tmp_path / "flat")
    assert flat[min(flat)] > first[min(first)] + 0.3, (flat, first)
    info = json.loads((tmp_path / "pooled" / "config.json").read_text())
    assert info["model"]["cnn_head"] == "auto"

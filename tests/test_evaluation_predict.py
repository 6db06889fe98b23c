"""ferjax.evaluation: memory-bounded prediction, post-hoc logit adjustment."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

from ferjax.evaluation import predict as P
from ferjax.runtime import devices
from ferjax.training.program import build


def test_fitting_batch_scales_down_to_the_budget():
    """A program needing 100 bytes per image under a 2,000-byte budget ends at <= 20 images;
    one that fits keeps its batch and compiles once."""
    calls = []

    class Compiled:
        def __init__(self, batch):
            self.batch = batch

        def memory_analysis(self):
            return type("M", (), {"temp_size_in_bytes": 100 * self.batch})()

    def compile_at(batch):
        calls.append(batch)
        return Compiled(batch)

    batch, compiled = P.fitting_batch(compile_at, 512, 4, 2000)
    assert batch <= 20 and batch % 4 == 0 and compiled.batch == batch and len(calls) <= 3
    calls.clear()
    assert P.fitting_batch(compile_at, 16, 4, 2000)[0] == 16 and calls == [16]


def test_ten_crop_prediction_is_chunked_to_the_budget_and_unchanged():
    """Ten-crop TTA over 300 faces with a 4 MiB budget: the program's temporaries for the
    chosen chunk fit the budget (the premise: the configured batch does not), and the
    probabilities equal those of an unbounded run."""
    config = tiny_config(eval__tta="ten_crop", train__eval_batch_size=256)
    p = build(config, num_classes=7, image_shape=(48, 48, 1), steps_per_epoch=1, norm=(0.0, 1.0))
    rng = np.random.default_rng(0)
    images = devices.replicate(rng.integers(0, 256, (300, 48, 48, 1), np.uint8), p.mesh)
    variables = p.state.eval_variables()
    cache = {}
    whole = P.predict_split(
        p.predict, variables, images, 300, 256, p.mesh, memory_budget_mb=1e5, cache=cache
    )
    big = cache[((300, 48, 48, 1), 256, 100000)][1]
    assert big.memory_analysis().temp_size_in_bytes > 4 * 2**20  # the premise
    chunked = P.predict_split(
        p.predict, variables, images, 300, 256, p.mesh, memory_budget_mb=4, cache=cache
    )
    batch, compiled = cache[((300, 48, 48, 1), 256, 4)]
    assert batch < 256 and compiled.memory_analysis().temp_size_in_bytes <= 4 * 2**20
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    assert chunked.shape == (300, 7)


def test_logit_adjustment_and_tau_choice():
    """adjust_logits is softmax(log p - tau log prior); tau 0 leaves the argmax; choose_tau
    finds the tau that undoes a prior bias on the validation labels."""
    prior = np.array([0.9, 0.1])
    probs = np.array([[0.6, 0.4], [0.95, 0.05], [0.7, 0.3], [0.2, 0.8]], np.float32)
    labels = np.array([1, 0, 1, 1])
    z = np.log(probs) - 1.0 * np.log(prior)
    expected = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(P.adjust_logits(probs, prior, 1.0), expected, rtol=1e-6)
    assert (P.adjust_logits(probs, prior, 0.0).argmax(1) == probs.argmax(1)).all()
    tau = P.choose_tau(labels, probs, prior, "balanced_accuracy")
    adjusted = P.adjust_logits(probs, prior, tau).argmax(1)
    assert tau > 0 and (adjusted == labels).all()
    assert P.choose_tau(labels, probs, prior, "loss") in P.TAU_GRID


@pytest.mark.parametrize("value", ["auto", "0", "1.5"])
def test_tau_setting(value):
    config = tiny_config(eval__logit_adjust_tau=value)
    assert P.adjust_tau_setting(config) == {"auto": "auto", "0": "", "1.5": "1.5"}[value]

"""Export of every model ferjax trains to SavedModel and TFLite, each run on procedural faces
and compared with JAX (ferjax.deploy.serving.export fails above 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config, untrained_run

from ferjax.deploy.inference import load_run
from ferjax.deploy.serving import check_images, export, tflite_probs

pytestmark = pytest.mark.slow

MODELS = {
    "cnn": {},
    "resnet18": {"model__width": 16},
    "resnet34": {"model__width": 8},
    "vgg16": {},
    "resnet50": {},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_savedmodel_and_tflite_match_jax(name, tmp_path):
    config = tiny_config(model__name=name, eval__tta="flip", **MODELS[name])
    workdir = untrained_run(tmp_path / "run", config)
    trained = load_run(workdir, conv_impl="xla")
    assert export(trained, "savedmodel", str(tmp_path / "sm")) <= 1e-5
    assert export(trained, "tflite", str(tmp_path / "m.tflite"), batch=4) <= 1e-5
    # Static shapes: the TFLite model takes exactly [4, 48, 48, 1] uint8.
    images = check_images(trained, 6)
    got = tflite_probs(str(tmp_path / "m.tflite"), images)
    np.testing.assert_allclose(got, trained.classify(images), atol=1e-5, rtol=0)

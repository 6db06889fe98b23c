"""int8 versions of a run's TFLite and ONNX exports, and what the quantisation costs.

Both keep the float models' contract: uint8[B, H, W, C] face crops in, float32 probabilities out
(labels.txt order). Calibration: a few hundred of the run's own training faces (a fixed random
choice, `calibration_faces`).

- TFLite: full-integer post-training quantisation (TFLITE_BUILTINS_INT8 only; int8 weights and
  activations). The uint8 input is cast and quantised by the model's first ops and the softmax
  output dequantised to float32 by its last; everything between runs in int8. Per-image
  standardisation is written as (x - mean) * rsqrt(max(var, 1)) in the int8 graphs, equal to
  training's (x - mean) / max(std, 1) up to float rounding: TFLite's int8 DIV refuses a
  quantised divisor whose raw value is 0 ("div.cc data[i] != 0"), which a per-image standard
  deviation reaches on ordinary faces (the demo run failed on its first test face). A fixed
  (mean, std) normalisation stays as trained.
- ONNX: ONNX Runtime's static QDQ quantisation (ferjax.deploy.onnx_export) of the float graph
  with the same division-free standardisation (calibrating the graph with training's division
  gave NaN ranges and "scale issue" on the demo run): convolutions, matrix products, pooling
  and activations in int8, the input cast and the normalisation in float32.

`export_int8` writes the int8 file, and beside it <file>.json: file sizes, and accuracy,
balanced accuracy and per-class recall of the float and the int8 model on the run's test split,
each run by its own runtime (TFLite interpreter / ONNX Runtime).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.deploy import serving
from ferjax.deploy.onnx_export import export_onnx, onnx_probs, quantize_onnx
from ferjax.evaluation.metrics import classification_report
from ferjax.runtime.tensorflow import import_tensorflow

DEFAULT_MAX_DROP = 0.02  # accuracy the int8 model may lose against the float one, no warning
CALIBRATION_FACES = 300
FLOAT_NAMES = {"tflite": "model.tflite", "onnx": "model.onnx"}


def calibration_faces(images, count: int = CALIBRATION_FACES, seed: int = 0) -> np.ndarray:
    """`count` faces of `images` (the run's training split), a fixed random choice."""
    n = len(images)
    if n == 0:
        raise serving.ExportError("int8: the run's training split is empty (no calibration faces)")
    idx = np.sort(np.random.default_rng(seed).permutation(n)[: min(count, n)])
    return np.asarray(images[idx], np.uint8)


def _standardize(x):
    """Per-image standardisation without a division: (x - m) * rsqrt(max(var, 1))."""
    axes = (-3, -2, -1)
    d = x - jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    return d * jax.lax.rsqrt(jnp.maximum(var, 1.0))


class _Standardized:
    """A model whose apply standardises its input first (see quantizable)."""

    def __init__(self, model):
        self.model = model

    def apply(self, variables, x, train: bool = False):
        return self.model.apply(variables, _standardize(x), train=train)


def quantizable(run):
    """The run with per-image standardisation moved into the model as a division-free
    expression (the classify function's own normalisation becomes the identity); other runs
    unchanged."""
    if run.info.normalization[0] is not None:
        return run
    info = dataclasses.replace(run.info, normalization=(0.0, 1.0))
    return dataclasses.replace(run, model=_Standardized(run.model), info=info)


def export_tflite_int8(run, out_path: str, calibration: np.ndarray, tta=None, batch: int = 1):
    """Full-integer TFLite (fixed batch `batch`) calibrated on `calibration`, + labels.txt."""
    tf = import_tensorflow()
    chunks = [calibration[s : s + batch] for s in range(0, len(calibration) - batch + 1, batch)]
    if not chunks:  # fewer faces than one batch: repeat them
        chunks = [np.resize(calibration, (batch, *calibration.shape[1:]))]
    with tempfile.TemporaryDirectory() as tmp:
        serving.export_savedmodel(quantizable(run), tmp, tta, batch)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([c] for c in chunks)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise serving.ExportError(f"TFLite int8 conversion failed: {first[:300]}") from None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(flatbuffer)
    serving.write_labels(run, os.path.dirname(os.path.abspath(out_path)))
    return out_path


def model_metrics(labels: np.ndarray, probs: np.ndarray, class_names) -> dict:
    """accuracy, balanced_accuracy and recall per class of `probs` against `labels`."""
    r = classification_report(np.asarray(labels), np.asarray(probs), list(class_names), "test")
    return {
        "accuracy": r["accuracy"],
        "balanced_accuracy": r["balanced_accuracy"],
        "recall": {name: m["recall"] for name, m in r["per_class"].items()},
    }


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _probs(fmt: str, path: str, images: np.ndarray) -> np.ndarray:
    if fmt == "tflite":
        return serving.tflite_probs(path, images)
    return onnx_probs(path, images)


def export_int8(
    run,
    fmt: str,
    out: str,
    calibration: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    tta: str | None = None,
    batch: int = 1,
    max_drop: float = DEFAULT_MAX_DROP,
    check_images: np.ndarray | None = None,
) -> dict:
    """Writes the int8 model of `fmt` (tflite | onnx) to `out` and its report to out + ".json":
    the float export (built in a temporary folder and checked against JAX on `check_images`)
    and the int8 one, both on the test split. report["over_max_drop"] says whether accuracy fell
    by more than `max_drop`."""
    if fmt not in FLOAT_NAMES:
        raise serving.ExportError(f"--quantize int8: for tflite or onnx, not {fmt}")
    test_images = np.asarray(test_images, np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, FLOAT_NAMES[fmt])
        diff = serving.export(run, fmt, float_path, tta, batch, check_images)
        float_probs = _probs(fmt, float_path, test_images)
        float_bytes = _size(float_path)
        if fmt == "tflite":
            export_tflite_int8(run, out, calibration, tta, batch)
        else:
            division_free = os.path.join(tmp, "division_free.onnx")
            export_onnx(quantizable(run), division_free, tta)
            quantize_onnx(division_free, out, calibration)
    int8_probs = _probs(fmt, out, test_images)
    names = run.class_names
    before = model_metrics(test_labels, float_probs, names)
    after = model_metrics(test_labels, int8_probs, names)
    drop = before["accuracy"] - after["accuracy"]
    report = {
        "format": fmt,
        "file": os.path.basename(out),
        "quantization": "int8",
        "bytes": {"float32": float_bytes, "int8": _size(out)},
        "calibration_faces": int(len(calibration)),
        "test_examples": int(len(test_images)),
        "float32": before,
        "int8": after,
        "accuracy_drop": drop,
        "balanced_accuracy_drop": before["balanced_accuracy"] - after["balanced_accuracy"],
        "max_drop": max_drop,
        "over_max_drop": bool(drop > max_drop),
        "max_difference_float32_vs_jax": diff,
        "max_difference_int8_vs_float32": float(np.max(np.abs(int8_probs - float_probs)))
        if len(test_images)
        else 0.0,
    }
    with open(out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    return report

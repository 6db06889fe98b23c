"""A trained run as a TensorFlow SavedModel, a TFLite file or an ONNX model, for serving without
JAX (ONNX: ferjax.deploy.onnx_export; int8 versions: ferjax.deploy.quantize).

The model is rebuilt with XLA's plain layers (model.conv_impl=xla: every implementation has the
same parameters, and the CPU training layers use ops TFLite does not have) and goes through
jax2tf (StableHLO inside the TF graph). The signature `serving_default` takes `images`:
uint8[B, H, W, C] faces (preprocessed as `ferjax predict` does) and returns `probabilities`:
float32[B, K] in the order of labels.txt, written next to the model. Height, width and channels
are static; the SavedModel takes any batch size, the TFLite model a fixed one (default 1: one
face per call, the usual on-device use), the ONNX model any batch size. After exporting, the
exported model is run on the run's own faces (or procedural ones) and compared with JAX.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import jax
import numpy as np
from PIL import Image

from ferjax.data.dataset import to_channels
from ferjax.data.sources.synthetic import render_faces
from ferjax.deploy.common import ExportError, write_labels
from ferjax.deploy.onnx_export import export_onnx, onnx_probs
from ferjax.runtime.tensorflow import import_tensorflow

TOLERANCE = 1e-5
# The largest |export - JAX| on the check faces each format may show (ONNX Runtime's kernels
# round differently from XLA's).
TOLERANCES = {"savedmodel": TOLERANCE, "tflite": TOLERANCE, "onnx": 1e-4}
FORMATS = tuple(TOLERANCES)
__all__ = ["ExportError", "FORMATS", "TOLERANCES", "export", "write_labels"]


def export_savedmodel(run, out_dir: str, tta: str | None = None, batch: int | None = None) -> str:
    """Writes a SavedModel (variables as tf.Variables) and labels.txt to out_dir. batch: a
    fixed batch size, or None for any."""
    tf = import_tensorflow()
    from jax.experimental import jax2tf  # imports TensorFlow: only export needs it

    variables = jax.tree.map(lambda a: tf.Variable(np.asarray(a), trainable=False), run.variables)
    shapes = None if batch else [None, "(b, _, _, _)"]
    converted = jax2tf.convert(run.classify_fn(tta), polymorphic_shapes=shapes, with_gradient=False)
    spec = tf.TensorSpec([batch, *run.input_shape], tf.uint8, name="images")

    @tf.function(autograph=False, input_signature=[spec])
    def serve(images):
        return {"probabilities": converted(variables, images)}

    module = tf.Module()
    module.variables_ = tf.nest.flatten(variables)
    module.serve = serve
    tf.saved_model.save(module, out_dir, signatures={"serving_default": serve})
    write_labels(run, out_dir)
    return out_dir


def export_tflite(run, out_path: str, tta: str | None = None, batch: int = 1) -> str:
    """SavedModel with a static batch (in a temporary folder) -> TFLite flatbuffer at out_path
    (+ labels.txt)."""
    tf = import_tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        export_savedmodel(run, tmp, tta, batch)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"TFLite conversion failed: {first[:300]}") from None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(flatbuffer)
    write_labels(run, os.path.dirname(os.path.abspath(out_path)))
    return out_path


def check_images(run, count: int = 16, seed: int = 0) -> np.ndarray:
    """Procedural faces (uint8[count, H, W, C], in colour for a colour model) to compare the
    export with JAX on."""
    h, w = run.info.image_shape
    faces = render_faces(np.arange(count) % 7, np.random.default_rng(seed), h, run.info.channels)
    if faces.shape[1:3] != (h, w):  # a non-square input: resized
        faces = np.stack([np.asarray(Image.fromarray(f).resize((w, h))) for f in faces])
    return to_channels(faces, run.info.channels)


def savedmodel_probs(path: str, images: np.ndarray) -> np.ndarray:
    tf = import_tensorflow()
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return serve(images=tf.constant(images))["probabilities"].numpy()


def tflite_probs(path: str, images: np.ndarray) -> np.ndarray:
    """Runs a TFLite model over `images` in its fixed batch size (the last batch padded)."""
    tf = import_tensorflow()
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still works in 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch = int(inp["shape"][0])
    probs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        padded = np.zeros((batch, *images.shape[1:]), np.uint8)
        padded[: len(chunk)] = chunk
        interpreter.set_tensor(inp["index"], padded)
        interpreter.invoke()
        probs.append(interpreter.get_tensor(out["index"])[: len(chunk)].copy())
    return np.concatenate(probs)


def export(run, fmt: str, out: str, tta: str | None = None, batch: int = 1, images=None) -> float:
    """Exports `run` as `fmt` to `out`, runs the export on `images` (uint8[N, H, W, C]; default
    16 procedural faces) and returns the largest difference from JAX's probabilities; raises
    ExportError above the format's tolerance (TOLERANCES)."""
    if fmt not in TOLERANCES:
        raise ExportError(f"--format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    images = check_images(run) if images is None else np.asarray(images, np.uint8)
    expected = run.classify(images, tta)
    if fmt == "savedmodel":
        export_savedmodel(run, out, tta)
        got = savedmodel_probs(out, images)
    elif fmt == "tflite":
        export_tflite(run, out, tta, batch)
        got = tflite_probs(out, images)
    else:
        export_onnx(run, out, tta)
        got = onnx_probs(out, images)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCES[fmt]:
        raise ExportError(f"{out}: outputs differ from JAX's by {diff:.2e} (> {TOLERANCES[fmt]:g})")
    return diff

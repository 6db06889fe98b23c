"""Exports a trained run for serving without JAX: a TensorFlow SavedModel or a TFLite file.

    python -m ferjax.export --workdir=DIR --format=savedmodel|tflite [--out=PATH]

The model goes through jax2tf (StableHLO inside the TF graph, batch size polymorphic). The
serving signature `serving_default` takes `images`: uint8[B, H, W] grayscale faces (48x48 for
FER data, preprocessed as `ferjax.predict` does) and returns `probabilities`: float32[B, K] in
the order of labels.txt, written next to the model. After exporting, the exported model is run
on procedural faces and its outputs are compared with JAX's (the maximum difference is printed).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from ferjax import cli  # noqa: F401 - quiets TensorFlow before it is imported
from ferjax.errors import FerjaxError

TOLERANCE = 1e-5


class ExportError(FerjaxError):
    """The model could not be exported or the export does not reproduce JAX's outputs."""


def serving_fn(run, tta: str | None = None):
    """f(variables, images uint8[B, H, W]) -> float32[B, K]: the evaluation function of
    training applied to all of `images`."""
    import jax.numpy as jnp

    from ferjax.train import make_predict

    tta = run.config.eval.tta if tta is None else tta
    predict = make_predict(
        run.model, run.norm, tta, run.config.data.median_filter, run.config.eval.tta_crop
    )
    return lambda variables, images: predict(
        variables, images, jnp.arange(images.shape[0], dtype=jnp.int32)
    )


def export_savedmodel(run, out_dir: str, tta: str | None = None) -> str:
    """Writes a SavedModel (variables as tf.Variables) and labels.txt to out_dir."""
    import jax
    import tensorflow as tf
    from jax.experimental import jax2tf

    h, w = run.image_shape
    variables = jax.tree.map(lambda a: tf.Variable(np.asarray(a), trainable=False), run.variables)
    converted = jax2tf.convert(
        serving_fn(run, tta), polymorphic_shapes=[None, "(b, _, _)"], with_gradient=False
    )

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None, h, w], tf.uint8, name="images")]
    )
    def serve(images):
        return {"probabilities": converted(variables, images)}

    module = tf.Module()
    module.variables_ = tf.nest.flatten(variables)
    module.serve = serve
    tf.saved_model.save(module, out_dir, signatures={"serving_default": serve})
    _write_labels(run, out_dir)
    return out_dir


def export_tflite(run, out_path: str, tta: str | None = None) -> str:
    """SavedModel (in a temporary folder) -> TFLite flatbuffer at out_path (+ labels.txt)."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        export_savedmodel(run, tmp, tta)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"TFLite conversion failed: {first[:300]}") from None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(flatbuffer)
    _write_labels(run, os.path.dirname(os.path.abspath(out_path)))
    return out_path


def _write_labels(run, folder: str) -> None:
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(run.class_names) + "\n")


def check_images(run, count: int = 16, seed: int = 0) -> np.ndarray:
    """Procedural faces (uint8[count, H, W]) to compare the export with JAX on."""
    from PIL import Image

    from ferjax.data.synthetic import render_faces

    rng = np.random.default_rng(seed)
    faces = render_faces(np.arange(count) % 7, rng)
    if faces.shape[1:] != tuple(run.image_shape):
        h, w = run.image_shape
        faces = np.stack([np.asarray(Image.fromarray(f).resize((w, h))) for f in faces])
    return faces


def savedmodel_probs(path: str, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return serve(images=tf.constant(images))["probabilities"].numpy()


def tflite_probs(path: str, images: np.ndarray) -> np.ndarray:
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still works in 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferjax.export", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--format", required=True, choices=("savedmodel", "tflite"))
    p.add_argument("--out", default=None, help="default: DIR/export/savedmodel or model.tflite")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--tta", default=None, choices=("none", "flip"), help="default: the run's")
    args = p.parse_args(argv)

    from ferjax.inference import load_run

    run = load_run(args.workdir, args.checkpoint)
    default = "savedmodel" if args.format == "savedmodel" else "model.tflite"
    out = args.out or os.path.join(args.workdir, "export", default)
    images = check_images(run)
    expected = run.classify(images, args.tta)
    if args.format == "savedmodel":
        export_savedmodel(run, out, args.tta)
        got = savedmodel_probs(out, images)
    else:
        export_tflite(run, out, args.tta)
        got = tflite_probs(out, images)
    diff = float(np.max(np.abs(got - expected)))
    print(
        f"exported {run.checkpoint} checkpoint (step {run.step}) as {args.format} -> {out}; "
        f"max |export - jax| on {len(images)} faces = {diff:.2e}"
    )
    if not diff <= TOLERANCE:
        raise ExportError(f"{out}: outputs differ from JAX's by {diff:.2e} (> {TOLERANCE:g})")
    return 0


if __name__ == "__main__":
    cli.run_main(main)

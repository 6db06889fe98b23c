"""Exports a trained run for serving without JAX: a TensorFlow SavedModel, a TFLite file or an
ONNX model, optionally quantised to int8 (TFLite, ONNX).

Writes WORKDIR/export/savedmodel, model.tflite, model.onnx, model_int8.tflite or model_int8.onnx
(or --out), labels.txt beside it (the output order) and a model card (MODEL_CARD.md in the
SavedModel folder, <file>.MODEL_CARD.md beside a file), then runs the export on 64 of the run's
test faces (16 procedural faces when the run's data cannot be loaded) and compares it with JAX:
it fails above 1e-5 (SavedModel, TFLite) or 1e-4 (ONNX). --quantize=int8 calibrates on 300 of
the run's training faces, evaluates the float and the int8 model on the test split and writes
<file>.json beside the int8 file; a drop in accuracy above --max_drop is a warning.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ferjax.cli.flags import Parser, run
from ferjax.config.validate import validate
from ferjax.data.load import load_data
from ferjax.deploy import quantize
from ferjax.deploy.card import write_card
from ferjax.deploy.inference import CHECKPOINTS, load_run
from ferjax.deploy.serving import FORMATS, TOLERANCES, ExportError, export
from ferjax.evaluation.tta import TTA_MODES
from ferjax.runtime.errors import ConfigError, FerjaxError
from ferjax.runtime.tensorflow import hide_gpus_from_tensorflow

CHECK_FACES = 64
DEFAULT_NAMES = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}


def run_data(trained, required: bool):
    """The run's splits, re-loaded from its config (as `ferjax evaluate` does), or None when
    they cannot be and `required` is False (a note on stderr)."""
    try:
        hide_gpus_from_tensorflow()
        validate(trained.config)
        data = load_data(trained.config)
        if tuple(data.class_names) != trained.class_names:
            raise ExportError(
                f"the run's data has classes {','.join(data.class_names)}, the model "
                f"{','.join(trained.class_names)}"
            )
        shape = data.splits["test"].images.shape[1:]
        if shape != trained.input_shape:
            raise ExportError(
                f"the run's data has faces of {shape}, the model takes {trained.input_shape}"
            )
    except FerjaxError as e:
        if required:
            raise ExportError(f"--quantize int8 needs the run's data: {e}") from None
        print(
            f"note: the run's data cannot be loaded ({e}); checking on procedural faces",
            file=sys.stderr,
        )
        return None
    return data


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax export", __doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument(
        "--out",
        default=None,
        help="default: WORKDIR/export/"
        + ", ".join(DEFAULT_NAMES.values())
        + " (model_int8.* with --quantize int8)",
    )
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    p.add_argument("--tta", default=None, choices=TTA_MODES.names(), help="default: the run's")
    p.add_argument("--batch_size", type=int, default=1, help="tflite: the fixed batch size")
    p.add_argument(
        "--quantize",
        default="none",
        choices=("none", "int8"),
        help="int8: post-training quantisation (tflite, onnx)",
    )
    p.add_argument(
        "--max_drop",
        type=float,
        default=quantize.DEFAULT_MAX_DROP,
        help="int8: warn when test accuracy drops by more than this (default "
        f"{quantize.DEFAULT_MAX_DROP})",
    )
    p.add_argument(
        "--calibration_faces",
        type=int,
        default=quantize.CALIBRATION_FACES,
        help="int8: training faces to calibrate on",
    )
    args = p.parse(argv)
    int8 = args.quantize == "int8"
    if int8 and args.format == "savedmodel":
        raise ConfigError("--quantize int8: for --format tflite or onnx, not savedmodel")
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size: got {args.batch_size}, expected 1 or more")
    if args.calibration_faces < 1:
        raise ConfigError(f"--calibration_faces: got {args.calibration_faces}, expected >= 1")
    if not 0.0 <= args.max_drop <= 1.0:
        raise ConfigError(f"--max_drop: got {args.max_drop}, expected 0..1")
    trained = load_run(args.workdir, args.checkpoint, conv_impl="xla")
    name = DEFAULT_NAMES[args.format]
    if int8:
        name = name.replace("model.", "model_int8.")
    out = args.out or os.path.join(trained.workdir.export_dir, name)
    data = run_data(trained, required=int8)
    check, faces = None, "16 procedural faces"
    if data is not None:
        test = data.splits["test"]
        check = np.asarray(test.images[: min(CHECK_FACES, len(test))], np.uint8)
        faces = f"{len(check)} of the run's test faces"
    batch = args.batch_size if args.format == "tflite" else "any"
    if int8:
        cal = quantize.calibration_faces(data.splits["train"].images, args.calibration_faces)
        q = quantize.export_int8(
            trained,
            args.format,
            out,
            cal,
            np.asarray(test.images),
            np.asarray(test.labels),
            args.tta,
            args.batch_size,
            args.max_drop,
            check,
        )
        diff = q["max_difference_float32_vs_jax"]
    else:
        q = None
        diff = export(trained, args.format, out, args.tta, args.batch_size, check)
    card = write_card(
        trained,
        out,
        {
            "format": args.format,
            "file": os.path.basename(os.path.normpath(out)),
            "batch": batch,
            "check_faces": faces,
            "max_difference": diff,
            "tolerance": TOLERANCES[args.format],
            "int8": q,
        },
    )
    print(
        f"exported {trained.checkpoint} checkpoint (step {trained.step}) as {args.format}"
        f"{' int8' if int8 else ''} -> {out}; max |{'float32 ' if int8 else ''}export - jax| "
        f"on {faces} = {diff:.2e}"
    )
    if q:
        f, i = q["float32"], q["int8"]
        print(
            f"int8: {q['bytes']['int8']:,} bytes (float32 {q['bytes']['float32']:,}); test "
            f"accuracy {i['accuracy']:.4f} (float32 {f['accuracy']:.4f}), balanced "
            f"{i['balanced_accuracy']:.4f} (float32 {f['balanced_accuracy']:.4f}) -> {out}.json"
        )
        if q["over_max_drop"]:
            print(
                f"warning: int8 accuracy drops by {q['accuracy_drop']:.4f} "
                f"(more than --max_drop {args.max_drop:g})",
                file=sys.stderr,
            )
    print(f"model card -> {card}")
    return 0


if __name__ == "__main__":
    run(main)

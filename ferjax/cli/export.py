"""Exports a trained run for serving without JAX: a TensorFlow SavedModel or a TFLite file.

Writes WORKDIR/export/savedmodel or WORKDIR/export/model.tflite (or --out) and labels.txt next
to it, then runs the export on procedural faces and compares it with JAX (fails above 1e-5).
"""

from __future__ import annotations

import os

from ferjax.cli.flags import Parser, run
from ferjax.deploy.inference import CHECKPOINTS, load_run
from ferjax.deploy.serving import FORMATS, export
from ferjax.evaluation.tta import TTA_MODES


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax export", __doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", default=None, help="default: WORKDIR/export/savedmodel or model.tflite")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    p.add_argument("--tta", default=None, choices=TTA_MODES.names(), help="default: the run's")
    p.add_argument("--batch_size", type=int, default=1, help="tflite: the fixed batch size")
    args = p.parse(argv)
    trained = load_run(args.workdir, args.checkpoint, conv_impl="xla")
    default = "savedmodel" if args.format == "savedmodel" else "model.tflite"
    out = args.out or os.path.join(trained.workdir.export_dir, default)
    diff = export(trained, args.format, out, args.tta, args.batch_size)
    print(
        f"exported {trained.checkpoint} checkpoint (step {trained.step}) as {args.format} -> "
        f"{out}; max |export - jax| on 16 faces = {diff:.2e}"
    )
    return 0


if __name__ == "__main__":
    run(main)

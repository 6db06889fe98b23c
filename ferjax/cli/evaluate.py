"""Evaluates a trained run's checkpoint on a split of its data, or of another data file.

With the defaults it reproduces the run's report.json. Writes WORKDIR/report_<split>.json (the
report.json schema) and the split's figures (confusion_matrix_<split>.png, per_class_<split>.png,
reliability_<split>.png, mistakes_<split>.png); with --data_path the files are named after that
data (report_<split>_<name>.json, ...), so the run's own reports are never overwritten.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from ferjax.cli.flags import Parser, run
from ferjax.config.validate import validate
from ferjax.data.dataset import SPLITS
from ferjax.data.load import load_data
from ferjax.data.sources.formats import FORMATS
from ferjax.deploy.inference import CHECKPOINTS, load_run
from ferjax.evaluation import plots
from ferjax.evaluation.predict import adjust_logits, make_predict, predict_split, report_with_loss
from ferjax.evaluation.tta import TTA_MODES
from ferjax.runtime import devices
from ferjax.runtime.errors import ConfigError, DataFormatError
from ferjax.runtime.tensorflow import hide_gpus_from_tensorflow


def evaluate(
    workdir: str,
    split: str = "test",
    tta: str | None = None,
    checkpoint: str = "best",
    data_path: str | None = None,
    figures: bool = True,
    data_name: str | None = None,
) -> tuple[dict, str]:
    """(report, path written): `split` of the run's data, or of `data_path` read as
    `data_name` (default the run's data.name), under the checkpoint."""
    if split not in SPLITS:
        raise ConfigError(f"--split: got {split!r}, expected test, val or train")
    hide_gpus_from_tensorflow()
    trained = load_run(workdir, checkpoint)
    config = trained.config
    tta = config.eval.tta if tta is None else tta
    TTA_MODES.get(tta)
    if data_name:
        config.data.name = data_name
    if data_path:
        config.data.path = data_path
    validate(config)
    data = load_data(config)
    if tuple(data.class_names) != trained.class_names:
        raise DataFormatError(
            f"{data.source or config.data.name}: classes {','.join(data.class_names)} differ "
            f"from the model's {','.join(trained.class_names)}"
        )
    s = data.splits[split]
    if s.images.shape[1:] != trained.input_shape:
        raise DataFormatError(
            f"{data.source}: images of {s.images.shape[1:]}, the model takes {trained.input_shape}"
        )
    mesh = devices.make_mesh()
    predict = jax.jit(
        make_predict(
            trained.model,
            trained.info.normalization,
            tta,
            config.data.median_filter,
            config.eval.tta_crop,
        ),
        out_shardings=devices.replicated(mesh),
    )
    variables = devices.replicate(trained.variables, mesh)
    images = devices.replicate(s.images, mesh)
    probs = predict_split(predict, variables, images, len(s), config.train.eval_batch_size, mesh)
    adjustment = trained.adjustment
    if adjustment.get("tau"):  # the run's post-hoc logit adjustment, as its report used it
        prior = np.asarray([adjustment["prior"][n] for n in trained.class_names])
        probs = adjust_logits(probs, prior, float(adjustment["tau"]))
    report = report_with_loss(s.labels, probs, data.class_names, split)
    report.update(
        tta=tta,
        logit_adjustment=adjustment,
        ema=trained.ema,
        checkpoint_step=trained.step,
        checkpoint=trained.checkpoint,
        data=data.source or config.data.name,
    )
    tag = data_path or ""
    path = trained.workdir.report(split, tag)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        if figures:
            plots.report_figures(trained.workdir, report, s, probs, split, tag)
    return report, path


def summary(report: dict) -> str:
    """A few lines: overall metrics, then precision/recall/F1/support per class."""
    lines = [
        f"{report['split']} ({report['examples']} examples, {report['checkpoint']} checkpoint "
        f"step {report['checkpoint_step']}, tta {report['tta']}): accuracy "
        f"{report['accuracy']:.4f} balanced {report['balanced_accuracy']:.4f} macro-F1 "
        f"{report['macro_f1']:.4f} loss {report['loss']:.4f} ECE {report['ece']:.4f}",
        f"  {'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for name, m in report["per_class"].items():
        lines.append(
            f"  {name:<10} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} "
            f"{m['support']:8d}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax evaluate", __doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--tta", default=None, choices=TTA_MODES.names(), help="default: the run's")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    p.add_argument("--data_path", default=None, help="another data file or folder")
    p.add_argument(
        "--data_name",
        default=None,
        choices=FORMATS.names(),
        help="the format of --data_path (default: the run's data.name)",
    )
    p.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    args = p.parse(argv)
    report, path = evaluate(
        args.workdir,
        args.split,
        args.tta,
        args.checkpoint,
        args.data_path,
        not args.no_figures,
        args.data_name,
    )
    print(summary(report))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    run(main)

"""Evaluates a trained run's checkpoint on a split, or on another data file.

    python -m ferjax.evaluate --workdir=DIR [--split=test|val|train] [--tta=none|flip|ten_crop]
        [--checkpoint=best|latest] [--data_path=FILE [--data_name=fer2013|ferplus|folder|tfds]]

Writes DIR/report_<split>.json (the report.json schema) and the split's figures
(confusion_matrix_<split>.png, per_class_<split>.png, reliability_<split>.png,
mistakes_<split>.png), and prints a summary. With the defaults it reproduces report.json.
"""

from __future__ import annotations

import argparse
import json
import os

from ferjax import cli  # noqa: F401 - quiets TensorFlow before it is imported
from ferjax.errors import ConfigError, DataFormatError


def evaluate(
    workdir: str,
    split: str = "test",
    tta: str | None = None,
    checkpoint: str = "best",
    data_path: str | None = None,
    figures: bool = True,
    data_name: str | None = None,
) -> dict:
    """The report of `split` (of the run's data, or of `data_path` read as `data_name`,
    default the run's data.name) under the checkpoint; written to workdir/report_<split>.json."""
    import jax

    from ferjax import parallel, plots
    from ferjax.config import validate
    from ferjax.data.load import load_data
    from ferjax.data.pipeline import hide_gpus_from_tensorflow
    from ferjax.inference import load_run
    from ferjax.train import _report_with_loss, make_predict, predict_split

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: got {split!r}, expected test, val or train")
    if tta not in (None, "none", "flip", "ten_crop"):
        raise ConfigError(f"--tta: got {tta!r}, expected none, flip or ten_crop")
    hide_gpus_from_tensorflow()
    run = load_run(workdir, checkpoint)
    config = run.config
    tta = config.eval.tta if tta is None else tta
    if data_name:
        config.data.name = data_name
    if data_path:
        config.data.path = data_path
    validate(config)
    data = load_data(config)
    if tuple(data.class_names) != run.class_names:
        raise DataFormatError(
            f"{data.source or config.data.name}: classes {','.join(data.class_names)} differ "
            f"from the model's {','.join(run.class_names)}"
        )
    s = data.splits[split]
    if s.images.shape[1:] != run.image_shape:
        raise DataFormatError(
            f"{data.source}: images of {s.images.shape[1:]}, the model takes {run.image_shape}"
        )
    mesh = parallel.make_mesh()
    predict = jax.jit(
        make_predict(run.model, run.norm, tta, config.data.median_filter, config.eval.tta_crop),
        out_shardings=parallel.replicated(mesh),
    )
    variables = parallel.replicate(run.variables, mesh)
    images = parallel.replicate(s.images, mesh)
    probs = predict_split(predict, variables, images, len(s), config.train.eval_batch_size, mesh)
    report = _report_with_loss(s.labels, probs, data.class_names, split)
    report["tta"] = tta
    report["checkpoint_step"] = run.step
    report["checkpoint"] = run.checkpoint
    report["data"] = data.source or config.data.name
    if jax.process_index() == 0:
        with open(os.path.join(workdir, f"report_{split}.json"), "w") as f:
            json.dump(report, f, indent=2)
        if figures:
            plots.report_figures(
                workdir, report, s.labels, probs, s.images, s.rows, suffix=f"_{split}"
            )
    return report


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
    p = argparse.ArgumentParser(
        prog="python -m ferjax.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument(
        "--tta", default=None, choices=("none", "flip", "ten_crop"), help="default: the run's"
    )
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--data_path", default=None, help="another data file or folder")
    p.add_argument("--data_name", default=None, help="its format (default: the run's data.name)")
    p.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    args = p.parse_args(argv)
    report = evaluate(
        args.workdir,
        args.split,
        args.tta,
        args.checkpoint,
        args.data_path,
        not args.no_figures,
        args.data_name,
    )
    print(summary(report))
    print(f"-> {os.path.join(args.workdir, f'report_{args.split}.json')}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)

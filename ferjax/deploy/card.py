"""The model card every export writes beside its model (MODEL_CARD.md in a SavedModel folder,
<file>.MODEL_CARD.md beside a TFLite or ONNX file): what the model expects and returns, what it
was trained on, how well it did, what the export changed, and what it must not be used for.

Everything in it is read from the run's workdir (config.json, model_info.json,
data_report.json, sampling_report.json, report.json, logit_adjustment.json) and from the export
itself (`export` below); a file a run does not have is named as missing, never guessed.
"""

from __future__ import annotations

import datetime
import json
import os

from ferjax.runtime.workdir import DATA_REPORT, REPORT, SAMPLING_REPORT

CARD = "MODEL_CARD.md"

LIMITATIONS = (
    "Intended use: research and prototyping of facial expression recognition on face crops "
    "prepared as `ferjax predict` prepares them. The classes are posed or perceived "
    "*expressions*, not emotions a person feels. The demographics of the training faces (age, "
    "sex, skin tone, culture) are unknown unless the dataset documents them, and accuracy is "
    "known only for this run's test split: expect it to differ, possibly a lot and unevenly "
    "across groups, on other people, cameras, lighting, head poses and occlusions, and between "
    "posed (acted) and in-the-wild faces. Do not use this model to make or support decisions "
    "about people (hiring, education, policing, health, insurance, access to services), to "
    "infer emotions, intentions or traits, or to monitor anyone without their informed "
    "consent."
)


def card_path(out: str) -> str:
    """Where the card of an export at `out` goes."""
    return os.path.join(out, CARD) if os.path.isdir(out) else f"{out}.{CARD}"


def _read(run, name: str) -> dict | None:
    path = run.workdir.file(name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _norm_text(run) -> str:
    mean, std = run.info.normalization
    if mean is None:
        return "per-image standardisation: (x - mean(x)) / max(std(x), 1) over all pixels"
    return f"(x - {mean}) / {std} (the training set's statistics)"


def _contract(run) -> list[str]:
    h, w, c = run.input_shape
    cfg = run.config
    kind = "grayscale" if c == 1 else "colour (RGB)"
    lines = [
        f"- Input `images`: uint8 [B, {h}, {w}, {c}] ({kind} face crops, 0..255), "
        "cropped and resized as `ferjax predict` does.",
        f"- Output `probabilities`: float32 [B, {len(run.class_names)}], rows sum to 1, "
        "in the class order above (labels.txt).",
        f"- Inside the graph: cast to float32, "
        f"{'3x3 median filter, ' if cfg.data.median_filter else ''}"
        f"test-time views `{cfg.eval.tta}`, normalisation {_norm_text(run)}, softmax.",
    ]
    if cfg.data.equalize:
        lines.append(
            "- **Not** inside the graph: histogram equalisation. The run trained on equalised "
            "faces; equalise each crop before calling the model."
        )
    tau = float(run.adjustment.get("tau") or 0.0)
    if tau:
        lines.append(
            f"- Post-hoc logit adjustment inside the graph: log p - {tau:g} log prior "
            "(the run's training prior), then softmax."
        )
    return lines


def _data(run) -> list[str]:
    data = _read(run, DATA_REPORT)
    sampling = _read(run, SAMPLING_REPORT)
    names = list(run.class_names)
    if data is None:
        return [f"`{DATA_REPORT}` is missing: the run's data is not described."]
    lines = [
        f"Source: `{data.get('source') or run.config.data.name}` (data.name "
        f"`{run.config.data.name}`). Examples per class after cleaning, class selection and "
        "subset cap:",
        "",
        "| split | " + " | ".join(names) + " | total |",
        "|---" * (len(names) + 2) + "|",
    ]
    for split, s in data.get("splits", {}).items():
        counts = [str(s.get("per_class", {}).get(n, 0)) for n in names]
        lines.append(f"| {split} | " + " | ".join(counts) + f" | {s.get('examples', '')} |")
    removed = {k: v.get("total", 0) for k, v in (data.get("cleaning") or {}).items()}
    skipped = sum(int(v) for v in (data.get("skipped_rows") or {}).values())
    lines += [
        "",
        "Cleaning removed: "
        + (", ".join(f"{k} {v}" for k, v in removed.items()) or "nothing recorded")
        + f"; unreadable rows skipped: {skipped}.",
    ]
    if sampling is not None:
        after = sampling.get("counts_after") or {}
        lines.append(
            f"Sampling `{sampling.get('method')}`: training records per epoch "
            f"{sampling.get('records_per_epoch')} ("
            + ", ".join(f"{n} {after.get(n, '?')}" for n in names)
            + ")."
        )
    return lines


def _metrics(run) -> list[str]:
    report = _read(run, REPORT)
    if report is None:
        return [f"`{REPORT}` is missing (the run has not finished): no test metrics."]
    lines = [
        f"Test split, {report['examples']} faces, checkpoint step {report.get('checkpoint_step')}"
        f" (TTA `{report.get('tta')}`): accuracy {report['accuracy']:.4f}, balanced accuracy "
        f"{report['balanced_accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"ECE {report['ece']:.4f} (calibration: expected gap between confidence and accuracy).",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, m in report["per_class"].items():
        lines.append(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} "
            f"| {m['support']} |"
        )
    return lines


def _export(export: dict) -> list[str]:
    lines = [
        f"- Format `{export['format']}`, file `{export['file']}`, batch "
        f"{export.get('batch', 'any')}.",
        f"- Max |{'float32 ' if export.get('int8') else ''}export - JAX| over the class "
        f"probabilities of {export['check_faces']}: {export['max_difference']:.2e} (the "
        f"export fails above {export['tolerance']:g}).",
    ]
    q = export.get("int8")
    if q:
        lines += [
            f"- int8 (calibrated on {q['calibration_faces']} training faces; judged by "
            "accuracy, not by its difference to JAX): "
            f"{q['bytes']['int8']:,} bytes vs {q['bytes']['float32']:,} float32. On the test "
            f"split ({q['test_examples']} faces) accuracy {q['int8']['accuracy']:.4f} vs "
            f"{q['float32']['accuracy']:.4f} float32 (drop {q['accuracy_drop']:+.4f}), "
            f"balanced accuracy {q['int8']['balanced_accuracy']:.4f} vs "
            f"{q['float32']['balanced_accuracy']:.4f}.",
            "",
            "| class | recall float32 | recall int8 |",
            "|---|---|---|",
        ]
        for name, r in q["float32"]["recall"].items():
            lines.append(f"| {name} | {r:.4f} | {q['int8']['recall'][name]:.4f} |")
    return lines


def write_card(run, out: str, export: dict) -> str:
    """Writes the card of the export at `out`; `export`: format, file, batch, check_faces
    (text), max_difference, tolerance, int8 (the quantisation report or None)."""
    info = run.info
    title = f"{info.model}" + (f" ({info.style})" if info.style else "")
    lines = [
        f"# Model card: ferjax {title}, {export['format']}"
        + (" int8" if export.get("int8") else ""),
        "",
        f"Run `{os.path.abspath(run.workdir.path)}`, {run.checkpoint} checkpoint step "
        f"{run.step}{' (parameter moving average)' if run.ema else ''}; exported "
        f"{datetime.date.today().isoformat()}.",
        "",
        "## Classes (output order)",
        "",
        *[f"{k}. {name}" for k, name in enumerate(run.class_names)],
        "",
        "## Input and output",
        "",
        *_contract(run),
        "",
        "## Training data",
        "",
        *_data(run),
        "",
        "## Test metrics (JAX, from report.json)",
        "",
        *_metrics(run),
        "",
        "## The export",
        "",
        *_export(export),
        "",
        "## Intended use and limitations",
        "",
        LIMITATIONS,
        "",
    ]
    path = card_path(out)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path

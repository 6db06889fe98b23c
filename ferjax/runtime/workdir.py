"""The workdir of a run: every path and file a run writes, and the run description that
evaluation, prediction and export read back.

    config.json            the resolved config (ConfigDict as JSON)
    model_info.json        RunInfo: class names, image shape, channels, normalisation, model,
                           resolved ResNet-50 style - everything needed to rebuild the model
                           without the data or the `model.init_from` file
    data_report.json       what was loaded, skipped and cleaned
    sampling_report.json   per-class counts before/after resampling
    metrics.jsonl          every logged metric, one JSON object per line
    checkpoints/latest/    Orbax: the newest steps (resume)
    checkpoints/best/      Orbax: the best validation metric (final report)
    report.json            the best checkpoint on the test split
    report_<split>[_<data>].json, <figure>[_<split>[_<data>]].png   written by evaluate
    export/                SavedModel / TFLite / ONNX exports (int8 too), labels.txt, model cards
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import ml_collections

from ferjax.runtime.errors import CheckpointError, ConfigError, DataNotFoundError

CONFIG = "config.json"
MODEL_INFO = "model_info.json"
DATA_REPORT = "data_report.json"
SAMPLING_REPORT = "sampling_report.json"
METRICS = "metrics.jsonl"
REPORT = "report.json"
# Post-hoc logit adjustment a finished run uses (tau, prior): written with report.json.
LOGIT_ADJUSTMENT = "logit_adjustment.json"
# The run's wall clock by phase (ferjax.runtime.clock).
TIME_ACCOUNT = "time.json"
CHECKPOINTS = "checkpoints"
LATEST, BEST = "latest", "best"
# Files and folders whose presence marks a folder as a ferjax run's workdir.
MARKERS = (CONFIG, CHECKPOINTS, METRICS, DATA_REPORT, MODEL_INFO, REPORT)


@dataclasses.dataclass
class RunInfo:
    """model_info.json: what a trained model needs besides its weights.

    image_shape (H, W) and channels of the uint8 input; normalization (mean, std), (None, None)
    for per-image standardisation; style: the resolved ResNet-50 variant, stem: the resolved
    ResNet-18/34 stem (None for other models)."""

    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    channels: int
    normalization: tuple  # (mean, std): numbers, per-channel lists, or (None, None)
    model: str
    style: str | None = None
    stem: str | None = None

    def to_json(self) -> dict:
        out = {
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape),
            "channels": self.channels,
            "normalization": {"mean": self.normalization[0], "std": self.normalization[1]},
            "model": self.model,
        }
        if self.style is not None:
            out["style"] = self.style
        if self.stem is not None:
            out["stem"] = self.stem
        return out

    @classmethod
    def from_json(cls, d: dict) -> RunInfo:
        stats = d["normalization"]
        if stats["mean"] is None:
            norm = (None, None)
        elif isinstance(stats["mean"], list):  # per channel
            norm = ([float(v) for v in stats["mean"]], [float(v) for v in stats["std"]])
        else:
            norm = (float(stats["mean"]), float(stats["std"]))
        return cls(
            class_names=tuple(d["class_names"]),
            image_shape=tuple(int(s) for s in d["image_shape"][:2]),
            channels=int(d.get("channels", 1)),
            normalization=norm,
            model=d["model"],
            style=d.get("style"),
            stem=d.get("stem"),
        )


class Workdir:
    """Paths of one run's files (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return os.path.abspath(self.file(CHECKPOINTS))

    def checkpoint_dir(self, which: str) -> str:
        """checkpoints/latest or checkpoints/best (absolute: Orbax needs absolute paths)."""
        return os.path.join(self.checkpoints, which)

    def checkpoint_steps(self, which: str) -> list[int]:
        """The committed steps of checkpoints/<which>, ascending."""
        d = self.checkpoint_dir(which)
        if not os.path.isdir(d):
            return []
        return sorted(int(e) for e in os.listdir(d) if e.isdigit())

    @property
    def final_report(self) -> str:
        """report.json: the training run's best checkpoint on its test split."""
        return self.file(REPORT)

    def report(self, split: str, data: str = "") -> str:
        """report_<split>.json, or report_<split>_<data>.json for another data file (`data` is
        its path; the tag is its base name)."""
        return self.file(f"report{_suffix(split, data)}.json")

    def figure(self, name: str, split: str = "", data: str = "") -> str:
        """<name>.png (training's figures) or <name>_<split>[_<data>].png (evaluate's)."""
        return self.file(f"{name}{_suffix(split, data)}.png")

    @property
    def export_dir(self) -> str:
        return self.file("export")

    # ------------------------------------------------------------------ checks and files

    def check_usable(self) -> None:
        """A workdir must be new, empty, or a ferjax run's (never another project's folder)."""
        if not self.path:
            raise ConfigError("--workdir: empty, expected a directory for checkpoints and reports")
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConfigError(f"--workdir: {self.path} is a file, expected a directory")
        if os.path.isdir(self.path):
            entries = os.listdir(self.path)
            if entries and not any(m in entries for m in MARKERS):
                raise ConfigError(
                    f"--workdir: {self.path} holds files that are not from a ferjax run "
                    f"(e.g. {sorted(entries)[0]!r}); use a new or empty directory"
                )

    def check_is_run(self) -> None:
        if not os.path.isdir(self.path):
            raise DataNotFoundError(f"--workdir: {self.path} is not a directory")

    def write_json(self, name: str, obj) -> None:
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(name), "w") as f:
            json.dump(obj, f, indent=2)

    def read_json(self, name: str, missing: str) -> dict:
        path = self.file(name)
        if not os.path.isfile(path):
            raise DataNotFoundError(f"{path}: missing; {missing}")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read ({e})") from None

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(CONFIG), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    def read_config(self) -> ml_collections.ConfigDict:
        self.check_is_run()
        return ml_collections.ConfigDict(
            self.read_json(CONFIG, "is this the --workdir of a ferjax training run?")
        )

    def write_info(self, info: RunInfo) -> None:
        self.write_json(MODEL_INFO, info.to_json())

    def read_info(self) -> RunInfo:
        return RunInfo.from_json(self.read_json(MODEL_INFO, "the run never started training"))


def _suffix(split: str, data: str) -> str:
    return "".join(f"_{p}" for p in (split, _slug(data)) if p)


def _slug(text: str) -> str:
    """A file-name-safe tag for a data path: its base name without extension."""
    if not text:
        return ""
    base = os.path.splitext(os.path.basename(os.path.normpath(text)))[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "data"


def find_run_info(path: str, levels: int = 4) -> RunInfo | None:
    """The RunInfo of the workdir holding `path` (a workdir, a checkpoint folder or step inside
    one), looking up to `levels` parents; None when there is none."""
    p = os.path.abspath(path)
    for _ in range(levels + 1):
        if os.path.isfile(os.path.join(p, MODEL_INFO)):
            return Workdir(p).read_info()
        p = os.path.dirname(p)
    return None

"""A trained run, loaded from its workdir for evaluation, prediction and export.

The model is rebuilt from the workdir's config.json exactly as training builds it
(`create_model`), the input normalisation comes from model_info.json, and the parameters and
BatchNorm statistics come from an Orbax checkpoint (best by default). Only the variables are
restored: the optimizer state is not needed, so a run can be used whatever its optimizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferjax.errors import CheckpointError, ConfigError, DataNotFoundError


@dataclasses.dataclass
class TrainedRun:
    """What inference needs from a workdir.

    variables: {"params", "batch_stats"} of the checkpoint; norm: (mean, std) of the inputs;
    image_shape: (H, W) of the uint8 grayscale faces the model takes.
    """

    workdir: str
    config: ml_collections.ConfigDict
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    norm: tuple[float, float]
    model: Any
    variables: dict
    checkpoint: str
    step: int

    def predict_fn(self, tta: str | None = None):
        """jitted predict(variables, images uint8[N,H,W], idx int32[B]) -> float32[B, K], the
        same function training evaluates with. tta: none | flip (default: the run's eval.tta)."""
        from ferjax.train import make_predict

        tta = self.config.eval.tta if tta is None else tta
        return jax.jit(
            make_predict(
                self.model,
                self.norm,
                tta,
                self.config.data.median_filter,
                self.config.eval.tta_crop,
            )
        )

    def classify(self, images: np.ndarray, tta: str | None = None, batch_size: int = 64):
        """Class probabilities float32[N, K] of uint8[N, H, W] faces, in fixed-size batches (one
        compilation whatever N)."""
        images = np.asarray(images, np.uint8)
        if images.shape[1:] != tuple(self.image_shape):
            raise ValueError(f"images of shape {images.shape[1:]}, expected {self.image_shape}")
        predict = self.predict_fn(tta)
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            padded = np.zeros((batch_size, *self.image_shape), np.uint8)
            padded[: len(chunk)] = chunk
            idx = jnp.arange(batch_size, dtype=jnp.int32)
            out.append(np.asarray(predict(self.variables, padded, idx))[: len(chunk)])
        if not out:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(out)


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: missing; {what}")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run was trained with (its workdir's config.json)."""
    if not os.path.isdir(workdir):
        raise DataNotFoundError(f"--workdir: {workdir} is not a directory")
    saved = _read_json(
        os.path.join(workdir, "config.json"), "is this the --workdir of a ferjax training run?"
    )
    return ml_collections.ConfigDict(saved)


def _checkpoint_dir(workdir: str, which: str) -> tuple[str, str]:
    """(directory, name) of the checkpoint to use; best falls back to latest when a run has
    no best checkpoint (as training's final evaluation does)."""
    if which not in ("best", "latest"):
        raise ConfigError(f"--checkpoint: got {which!r}, expected best or latest")
    root = os.path.abspath(os.path.join(workdir, "checkpoints"))
    order = ("best", "latest") if which == "best" else ("latest",)
    for name in order:
        d = os.path.join(root, name)
        if os.path.isdir(d) and any(e.isdigit() for e in os.listdir(d)):
            if name != which:
                print(f"note: {workdir} has no best checkpoint; using latest", file=sys.stderr)
            return d, name
    raise CheckpointError(f"{root}/{which}: no checkpoint (has the run finished an epoch?)")


def _restore_variables(directory: str, abstract: dict) -> tuple[dict, int]:
    """Restores params and batch_stats of the newest step in `directory` and checks them
    against the model's shapes."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step()
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
            "state"
        ]
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unusable
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{directory}/{step}: cannot be restored ({first[:200]})") from None
    finally:
        manager.close()
    variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats") or {}}
    want = jax.tree.map(lambda a: tuple(a.shape), abstract)
    got = jax.tree.map(lambda a: tuple(np.shape(a)), variables)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise CheckpointError(
            f"{directory}/{step}: the checkpoint's parameters do not match the model that "
            "config.json describes"
        )
    variables = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), variables, abstract)
    return variables, int(step)


def load_run(workdir: str, checkpoint: str = "best") -> TrainedRun:
    """Loads config.json, model_info.json and a checkpoint (best | latest) of a workdir."""
    from ferjax.models import create_model

    config = load_config(workdir)
    info = _read_json(os.path.join(workdir, "model_info.json"), "the run never started training")
    class_names = tuple(info["class_names"])
    image_shape = tuple(int(s) for s in info["image_shape"])
    stats = info["normalization"]
    # (None, None) = per-image standardisation (data.normalize=per_image).
    norm = (None, None) if stats["mean"] is None else (float(stats["mean"]), float(stats["std"]))
    model = create_model(config, len(class_names))
    key = jax.random.PRNGKey(0)
    dummy = jnp.zeros((1, *image_shape, 1), jnp.float32)
    abstract = jax.eval_shape(
        lambda: model.init({"params": key, "dropout": key}, dummy, train=False)
    )
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    directory, name = _checkpoint_dir(workdir, checkpoint)
    variables, step = _restore_variables(directory, abstract)
    return TrainedRun(workdir, config, class_names, image_shape, norm, model, variables, name, step)

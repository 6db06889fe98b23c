"""A trained run, loaded from its workdir for evaluation, prediction and export.

The model is rebuilt from the workdir's config.json and model_info.json exactly as training built
it (the resolved ResNet-50 style, normalisation, class names and input shape are all in
model_info.json: a run never needs its data or its `model.init_from` file again), and the
parameters and BatchNorm statistics come from an Orbax checkpoint (best by default). Only the
variables are restored: the optimizer state is not needed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ferjax.evaluation.predict import make_classify
from ferjax.models import create_model
from ferjax.runtime.errors import CheckpointError, ConfigError
from ferjax.runtime.workdir import BEST, LATEST, LOGIT_ADJUSTMENT, RunInfo, Workdir

CHECKPOINTS = (BEST, LATEST)


@dataclasses.dataclass
class TrainedRun:
    """What inference needs from a workdir.

    variables: {"params", "batch_stats"} of the checkpoint (the moving average when the run
    kept one: `ema`); info: model_info.json (class names, input shape (H, W) and channels,
    normalisation); config: config.json with model.style resolved and model.init_from cleared;
    adjustment: the post-hoc logit adjustment the run's report used ({"tau", "prior", ...}, tau
    0 when none), applied by classify, evaluate and the exports alike.
    """

    workdir: Workdir
    config: ml_collections.ConfigDict
    info: RunInfo
    model: Any
    variables: dict
    checkpoint: str
    step: int
    ema: bool = False
    adjustment: dict = dataclasses.field(default_factory=lambda: {"tau": 0.0})

    @property
    def log_prior_shift(self) -> np.ndarray | None:
        """tau x log prior, float32[K] (subtracted from the log-probabilities), or None."""
        tau = float(self.adjustment.get("tau") or 0.0)
        if not tau:
            return None
        prior = np.asarray([self.adjustment["prior"][n] for n in self.class_names], np.float64)
        return (tau * np.log(np.maximum(prior, 1e-12))).astype(np.float32)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the uint8 faces the model takes."""
        return (*self.info.image_shape, self.info.channels)

    def classify_fn(self, tta: str | None = None):
        """classify(variables, images uint8[B, H, W, C]) -> float32[B, K], the function
        training evaluates with. tta: a TTA mode (default: the run's eval.tta)."""
        tta = self.config.eval.tta if tta is None else tta
        classify = make_classify(
            self.model,
            self.info.normalization,
            tta,
            self.config.data.median_filter,
            self.config.eval.tta_crop,
        )
        shift = self.log_prior_shift
        if shift is None:
            return classify

        def adjusted(variables, images):
            logp = jnp.log(jnp.maximum(classify(variables, images), 1e-30)) - shift
            return jax.nn.softmax(logp, axis=-1)

        return adjusted

    def classify(self, images: np.ndarray, tta: str | None = None, batch_size: int = 64):
        """Class probabilities float32[N, K] of uint8[N, H, W, C] faces, in fixed-size batches
        (one compilation whatever N)."""
        images = np.asarray(images, np.uint8)
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images of shape {images.shape[1:]}, expected {self.input_shape}")
        classify = jax.jit(self.classify_fn(tta))
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            padded = np.zeros((batch_size, *self.input_shape), np.uint8)
            padded[: len(chunk)] = chunk
            out.append(np.asarray(classify(self.variables, padded))[: len(chunk)])
        if not out:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(out)


def _checkpoint_dir(workdir: Workdir, which: str) -> tuple[str, str]:
    """(directory, name) of the checkpoint to use; best falls back to latest when a run has
    no best checkpoint (as training's final evaluation does)."""
    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint: got {which!r}, expected best or latest")
    order = (BEST, LATEST) if which == BEST else (LATEST,)
    for name in order:
        if workdir.checkpoint_steps(name):
            if name != which:
                print(f"note: {workdir.path} has no best checkpoint; using latest", file=sys.stderr)
            return workdir.checkpoint_dir(name), name
    raise CheckpointError(
        f"{workdir.checkpoint_dir(which)}: no checkpoint (has the run finished an epoch?)"
    )


def _restore_variables(directory: str, abstract: dict) -> tuple[dict, int, bool]:
    """Restores params and batch_stats of the newest step in `directory` (their moving
    average when train.ema_decay kept one: what validation and test used) and checks them
    against the model's shapes."""
    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step()
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unusable
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{directory}/{step}: cannot be restored ({first[:200]})") from None
    finally:
        manager.close()
    state = restored["state"]
    source = state.get("ema") or state  # the parameter average when the run kept one
    variables = {"params": source["params"], "batch_stats": source.get("batch_stats") or {}}
    ema = bool(state.get("ema"))
    want = jax.tree.map(lambda a: tuple(a.shape), abstract)
    got = jax.tree.map(lambda a: tuple(np.shape(a)), variables)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise CheckpointError(
            f"{directory}/{step}: the checkpoint's parameters do not match the model that "
            "config.json and model_info.json describe"
        )
    variables = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), variables, abstract)
    return variables, int(step), ema


def rebuild_model(config: ml_collections.ConfigDict, info: RunInfo, conv_impl: str | None = None):
    """(config, model) of a trained run: config.json with what model_info.json resolved
    (style, stem) and without init_from; conv_impl overrides model.conv_impl (every impl has the
    same parameter tree)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.init_from = ""
    if info.style is not None:
        config.model.style = info.style
    config.model.stem = info.stem or "small"  # runs from before model.stem had the small stem
    if conv_impl is not None:
        config.model.conv_impl = conv_impl
    return config, create_model(config, len(info.class_names))


def load_run(workdir: str, checkpoint: str = BEST, conv_impl: str | None = None) -> TrainedRun:
    """Loads config.json, model_info.json and a checkpoint (best | latest) of a workdir."""
    run = Workdir(workdir)
    saved = run.read_config()
    info = run.read_info()
    config, model = rebuild_model(saved, info, conv_impl)
    key = jax.random.PRNGKey(0)
    dummy = jnp.zeros((1, *info.image_shape, info.channels), jnp.float32)
    abstract = jax.eval_shape(
        lambda: model.init({"params": key, "dropout": key}, dummy, train=False)
    )
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    directory, name = _checkpoint_dir(run, checkpoint)
    variables, step, ema = _restore_variables(directory, abstract)
    adjustment = {"tau": 0.0}
    if os.path.isfile(run.file(LOGIT_ADJUSTMENT)):
        adjustment = run.read_json(LOGIT_ADJUSTMENT, "")
    return TrainedRun(run, config, info, model, variables, name, step, ema, adjustment)

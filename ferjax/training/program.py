"""One builder for the compiled programs of a run: the initial state, the jitted train step with
the training run's shardings, and the jitted predict function.

Training, the benchmarks and the tests all call `build`, so a benchmark times exactly the
program `python -m ferjax.main` runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ferjax.evaluation.predict import make_predict
from ferjax.models import create_model
from ferjax.runtime import devices
from ferjax.training import transfer
from ferjax.training.optim import make_optimizer
from ferjax.training.step import StepSpec, TrainState, train_step


@dataclasses.dataclass
class Program:
    """What `build` returns.

    config: the config with model.style resolved (what the model was built from).
    state: the initial TrainState, replicated over the mesh.
    train_step(state, data, batch) -> (state, metrics): jitted, state donated, state and
    metrics replicated. predict(variables, images, idx) -> float32[B, K]: jitted, replicated.
    schedule(step) -> learning rate.
    """

    config: ml_collections.ConfigDict
    spec: StepSpec
    model: object
    tx: optax.GradientTransformation
    schedule: Callable
    mesh: jax.sharding.Mesh
    norm: tuple[float | None, float | None]
    state: TrainState
    train_step: Callable
    predict: Callable


# model.stem=auto: the ImageNet stem (7x7 stride 2 + max-pool) from this input size on.
IMAGENET_STEM_FROM = 96


def resolve_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with model.style (resnet50: from model.init_from's source) and
    model.stem (resnet18/34: from data.image_size) resolved, so that the model can be rebuilt
    later from what model_info.json records, without the data or the init_from file."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.model.name == "resnet50":
        config.model.style = transfer.resolve_style(config)
    if config.model.stem == "auto":
        big = config.data.image_size >= IMAGENET_STEM_FROM
        config.model.stem = "imagenet" if big else "small"
    return config


def init_state(
    model, tx, seed: int, image_shape: tuple[int, int, int], mesh, ema: bool = False
) -> TrainState:
    """The initial TrainState (parameters from `seed`; with `ema`, the average starts at
    them), placed replicated on the mesh."""

    def init(seed):
        key = jax.random.PRNGKey(seed)
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        variables = model.init({"params": key, "dropout": key}, dummy, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            lr_scale=jnp.ones((), jnp.float32),
            ema={"params": params, "batch_stats": batch_stats} if ema else {},
        )

    replicated = devices.replicated(mesh)
    if 0 <= seed < 2**31:  # the seed as an argument: one compiled init for every seed
        return jax.jit(init, out_shardings=replicated)(np.int32(seed))
    return jax.jit(lambda: init(seed), out_shardings=replicated)()


def build(
    config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    steps_per_epoch: int,
    norm: tuple[float | None, float | None],
    mesh: jax.sharding.Mesh | None = None,
    model=None,
    class_counts=None,
) -> Program:
    """Model, optimiser, initial state and the jitted programs for `config`.

    image_shape: (H, W, C) of the uint8 inputs; steps_per_epoch: for the schedule and the
    unfreeze step; norm: input normalisation (ferjax.data.preprocess.normalization); model: a
    Flax module to use instead of the config's `model.name` (tests of the step); class_counts:
    float[K] training records per class after sampling (the losses' class prior; None =
    uniform)."""
    mesh = mesh or devices.make_mesh()
    config = resolve_model_config(config)
    model = create_model(config, num_classes) if model is None else model
    tx, schedule = make_optimizer(config, steps_per_epoch)
    state = init_state(
        model, tx, config.train.seed, image_shape, mesh, ema=config.train.ema_decay > 0
    )
    spec = StepSpec.from_config(config, norm, steps_per_epoch, class_counts, num_classes)
    step_fn = functools.partial(
        train_step,
        spec=spec,
        model=model,
        tx=tx,
        keep_frozen_stats=transfer.make_keep_frozen_stats(config, steps_per_epoch),
    )
    replicated = devices.replicated(mesh)
    jitted_step = jax.jit(step_fn, out_shardings=(replicated, replicated), donate_argnums=(0,))
    predict = jax.jit(
        make_predict(model, norm, config.eval.tta, config.data.median_filter, config.eval.tta_crop),
        out_shardings=replicated,
    )
    return Program(config, spec, model, tx, schedule, mesh, norm, state, jitted_step, predict)

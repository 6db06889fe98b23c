"""One builder for the compiled programs of a run: the initial state, the jitted train step with
the training run's shardings, and the jitted predict function.

Training, the benchmarks and the tests all call `build`, so a benchmark times exactly the
program `python -m ferjax.main` runs.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
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
    schedule(step) -> learning rate (jitted). ahead: the train step's compilation under way on a
    helper thread (build's compile_ahead), or None.
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
    ahead: CompileAhead | None = None


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


def initializer(
    model,
    tx,
    seed: int,
    image_shape: tuple[int, int, int],
    mesh,
    ema: bool,
    compiler_options: dict | None | str = "default",
):
    """(jitted init, its arguments): init(*args) is the initial TrainState. compiler_options:
    XLA's options for it ("default": init_compiler_options())."""
    if compiler_options == "default":
        compiler_options = init_compiler_options()

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

    jit = functools.partial(
        jax.jit, out_shardings=devices.replicated(mesh), compiler_options=compiler_options
    )
    if 0 <= seed < 2**31:  # the seed as an argument: one compiled init for every seed
        return jit(init), (np.int32(seed),)
    return jit(lambda: init(seed)), ()


def init_compiler_options() -> dict | None:
    """The initialisation runs once: on the CPU, XLA compiles it at LLVM optimisation level 1
    instead of its default (0.5 s instead of 1.1 s for the demo CNN, 1.4 s instead of 2.8 s for
    ResNet-18 on 2 cores). Elementwise random number generation has no reductions for the
    optimiser to reorder; tests/test_training_program.py checks that the state is bitwise the
    same as at the default level (level 0 is not: it is not used)."""
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def step_compiler_options() -> dict | None:
    """XLA's options for the train step: on the CPU, LLVM optimisation level 1 instead of its
    default. The step's time goes to library kernels (convolutions, matrix products,
    reductions) that the level does not touch; the program compiles in 20-35% less time
    (demo CNN 1.9-2.1 -> 1.6 s, `cnn` with Winograd 9.4-10.5 -> 7.7 s on 2 cores) and its
    steps take as long. Bitwise the same steps as at the default level for the `fast`
    convolutions (tests/test_training_program.py); the Winograd path differs in the last bits
    (XLA's own passes take other routes below level 2), i.e. `cnn` and ResNet-18 on one CPU
    device train to other float32 rounding than before this option."""
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


class CompileAhead:
    """Lowers and compiles `jitted` for `args` on a helper thread, so that the compilation runs
    beside whatever the caller does next (the model's initialisation, the rest of the set-up)
    on the other cores. `wait()` before the first call: the call then finds the executable in
    JAX's in-memory cache (same program, same shardings) and compiles nothing. A failure here is
    left for that call to report. The thread is not a daemon: the interpreter joins it at exit
    rather than ending it inside XLA."""

    def __init__(self, jitted, *args):
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._compile, args=(jitted, args), name="ferjax-compile-ahead"
        )
        self._thread.start()

    def _compile(self, jitted, args) -> None:
        try:
            jitted.lower(*args).compile()
        except BaseException as e:  # noqa: BLE001 - reported by the real call
            self.error = e

    def wait(self) -> None:
        self._thread.join()


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
    compile_ahead: tuple | None = None,
) -> Program:
    """Model, optimiser, initial state and the jitted programs for `config`.

    image_shape: (H, W, C) of the uint8 inputs; steps_per_epoch: for the schedule and the
    unfreeze step; norm: input normalisation (ferjax.data.preprocess.normalization); model: a
    Flax module to use instead of the config's `model.name` (tests of the step); class_counts:
    float[K] training records per class after sampling (the losses' class prior; None =
    uniform); compile_ahead: (data, batch), the train step's other two arguments (arrays as
    the loop will pass them): the step is then compiled on a helper thread while the initial
    state is computed (Program.ahead; wait for it before the first step)."""
    mesh = mesh or devices.make_mesh()
    config = resolve_model_config(config)
    model = create_model(config, num_classes) if model is None else model
    tx, schedule = make_optimizer(config, steps_per_epoch)
    init, init_args = initializer(
        model, tx, config.train.seed, image_shape, mesh, config.train.ema_decay > 0
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
    jitted_step = jax.jit(
        step_fn,
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
        compiler_options=step_compiler_options(),
    )
    ahead = None
    if compile_ahead is not None:  # the step's compilation beside the initialisation
        ahead = CompileAhead(jitted_step, jax.eval_shape(init, *init_args), *compile_ahead)
    state = init(*init_args)
    predict = jax.jit(
        make_predict(model, norm, config.eval.tta, config.data.median_filter, config.eval.tta_crop),
        out_shardings=replicated,
    )
    # The schedule as the loop logs it: one small program instead of a dozen eager operations,
    # each compiled on its first use.
    logged_schedule = jax.jit(schedule)
    return Program(
        config, spec, model, tx, logged_schedule, mesh, norm, state, jitted_step, predict, ahead
    )

"""training.program's build: the initialisation compiled cheaply yet bitwise the same, the
train step compiled ahead on a helper thread without a second compilation or another result, and
the grayscale first layer's GEMM forward without another result."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import gemm_rounds_like_xla, tiny_config

from ferjax.models import create_model
from ferjax.runtime import devices
from ferjax.training.optim import make_optimizer
from ferjax.training.program import (
    build,
    init_compiler_options,
    initializer,
    resolve_model_config,
)


def bits(tree) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize(
    "model,size,ema",
    [("cnn", 48, False), ("resnet18", 32, True)],
    ids=["cnn", "resnet18-ema"],
)
def test_the_cheaper_init_compile_gives_the_same_bits(model, size, ema):
    """init_compiler_options (LLVM level 1 on the CPU) against XLA's default level: the same
    initial state, every bit (the premise: the options are in force here)."""
    if jax.default_backend() == "cpu":
        assert init_compiler_options() == {"xla_backend_optimization_level": 1}
    config = resolve_model_config(tiny_config(model__name=model, data__image_size=size))
    net = create_model(config, 7)
    tx, _ = make_optimizer(config, 10)
    mesh = devices.make_mesh()
    cheap, args = initializer(net, tx, 3, (size, size, 1), mesh, ema)
    default, _ = initializer(net, tx, 3, (size, size, 1), mesh, ema, compiler_options=None)
    assert bits(cheap(*args)) == bits(default(*args))


def step_inputs(program, b=8, size=16):
    rng = np.random.default_rng(0)
    data = devices.replicate(
        {
            "images": rng.integers(0, 256, (4 * b, size, size, 1)).astype(np.uint8),
            "targets": np.eye(3, dtype=np.float32)[np.arange(4 * b) % 3],
            "seed": np.int32(0),
        },
        program.mesh,
    )
    batch = devices.global_batch(
        {
            "i": np.arange(b, dtype=np.int32),
            "j": np.arange(b, 2 * b, dtype=np.int32),
            "lam": np.zeros(b, np.float32),
            "weight": np.ones(b, np.float32),
        },
        program.mesh,
    )
    return data, batch


def test_the_step_compiled_ahead_is_the_one_the_first_call_runs():
    """With compile_ahead, the step is compiled on a helper thread during the build; the first
    call then compiles nothing (no backend compilation event for it) and gives the bits of a
    program built without it."""
    config = tiny_config(data__image_size=16, augment__ops="flip")
    kwargs = dict(num_classes=3, image_shape=(16, 16, 1), steps_per_epoch=4, norm=(None, None))
    plain = build(config, **kwargs)
    data, batch = step_inputs(plain)
    ahead = build(config, **kwargs, compile_ahead=(data, batch))
    assert ahead.ahead is not None and plain.ahead is None
    ahead.ahead.wait()
    assert ahead.ahead.error is None
    compiled = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(str(kw.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        state_a, metrics_a = ahead.train_step(ahead.state, data, batch)
        jax.block_until_ready(state_a)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not [name for name in compiled if "train_step" in name], compiled
    state_p, metrics_p = plain.train_step(plain.state, data, batch)
    assert bits((state_a, metrics_a)) == bits((state_p, metrics_p))


def test_the_cheaper_step_compile_gives_the_same_bits(monkeypatch):
    """step_compiler_options (LLVM level 1 on the CPU) against XLA's default level, for the
    `fast` convolutions (the CPU's choice for narrow models and for several devices): three
    steps of a CNN with augmentation, dropout and the logit-adjusted loss give the same state
    and metrics, every bit (level 0 does not: the comparison can fail). Premise: the options
    are in force and the model runs `fast`."""
    from ferjax.training import program

    if jax.default_backend() == "cpu":
        assert program.step_compiler_options() == {"xla_backend_optimization_level": 1}
    config = tiny_config(
        data__image_size=16,
        augment__ops="flip|shift(pad=2)|rotate(degrees=10)",
        model__dropout=0.3,
        model__conv_impl="fast",
        loss__name="logit_adjusted",
    )
    kwargs = dict(num_classes=3, image_shape=(16, 16, 1), steps_per_epoch=4, norm=(None, None))
    cheap = build(config, **kwargs)
    monkeypatch.setattr(program, "step_compiler_options", lambda: None)
    default = build(config, **kwargs)
    assert cheap.model.conv_impl == default.model.conv_impl == "fast"
    data, batch = step_inputs(cheap)
    runs = []
    for prog in (cheap, default):
        state, outs = prog.state, []
        for _ in range(3):
            state, metrics = prog.train_step(state, data, batch)
            outs.append(metrics)
        runs.append(bits((state, outs)))
    assert runs[0] == runs[1]


# The demo's first layer (48x48, batch 128, 16 channels): at this size a reduction over the
# GEMM's output that is not read as stored rounds otherwise, so the comparison can fail.
SIZE, BATCH = 48, 128


def test_the_single_channel_gemm_keeps_the_training_bits(monkeypatch):
    """The grayscale first layer's forward as one GEMM (im2col.conv_general_dilated, in the
    `fast` layers) against XLA's convolution: three steps with augmentation, dropout and
    BatchNorm give the same state and metrics, every bit where this CPU's convolution and GEMM
    round alike for that layer (checked first), else to float32 rounding. Premise: the GEMM
    path is traced in the first program and not in the second."""
    from ferjax.models.ops import im2col

    config = tiny_config(
        data__image_size=SIZE,
        augment__ops="flip|shift(pad=2)|rotate(degrees=10)",
        model__dropout=0.3,
        model__conv_impl="fast",
        model__cnn_widths="16,16",
    )
    kwargs = dict(num_classes=3, image_shape=(SIZE, SIZE, 1), steps_per_epoch=4, norm=(None, None))
    traced = []
    real = im2col._single_channel
    monkeypatch.setattr(im2col, "_single_channel", lambda *a: traced.append(1) or real(*a))

    def three_steps(prog):
        data, batch = step_inputs(prog, b=BATCH, size=SIZE)
        state, outs = prog.state, []
        for _ in range(3):
            state, metrics = prog.train_step(state, data, batch)
            outs.append(metrics)
        return jax.tree.map(np.asarray, (state, outs))

    gemm = three_steps(build(config, **kwargs))
    assert traced
    monkeypatch.setattr(im2col, "single_channel_applies", lambda *a, **k: False)
    del traced[:]
    xla = three_steps(build(config, **kwargs))
    assert not traced

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZE, SIZE, 1)).astype(np.float32)
    kern = rng.standard_normal((3, 3, 1, 16)).astype(np.float32)
    if gemm_rounds_like_xla(x, kern, (1, 1), "SAME"):
        assert bits(gemm) == bits(xla)
    else:
        for a, b in zip(jax.tree.leaves(gemm), jax.tree.leaves(xla)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

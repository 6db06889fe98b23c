"""ferjax.models.ops and the conv_impl switch: values and gradients equal XLA's reference ops."""

import runpy
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from ferjax.config.validate import validate
from ferjax.models.layers import GemmConv, resolve_conv_impl
from ferjax.models.ops import conv2d, max_pool_2x2
from ferjax.runtime.errors import ConfigError
from ferjax.training.program import build

DN = ("NHWC", "HWIO", "NHWC")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.py"


def _reference_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)


def _grads(fn, x, w):
    """Value and (dx, dw) of sum(fn(x, w) * cotangent) for a fixed pseudo-random cotangent."""
    y = fn(x, w)
    ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)).astype(y.dtype)
    loss = lambda x_, w_: jnp.sum((fn(x_, w_) * ct).astype(jnp.float32))
    return y, jax.grad(loss, argnums=(0, 1))(x, w)


def _close(a, b, tol):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    scale = max(float(np.max(np.abs(b))), 1e-6)
    np.testing.assert_allclose(a / scale, b / scale, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "batch,size,cin,cout,kernel,stride",
    [
        (4, 12, 3, 8, 3, 1),
        (3, 10, 8, 16, 3, 2),
        (5, 9, 4, 6, 3, 2),  # odd spatial size, odd batch
        (4, 12, 8, 16, 1, 1),
        (4, 12, 8, 16, 1, 2),
        (2, 48, 1, 8, 3, 1),  # first layer: one input channel
        (32, 12, 16, 16, 3, 1),  # several batch chunks
    ],
)
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
def test_conv2d_matches_xla(batch, size, cin, cout, kernel, stride, dtype, tol):
    rng = np.random.default_rng(batch * 100 + size)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), dtype)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout)) * 0.2, dtype)
    strides = (stride, stride)
    ref = lambda x_, w_: _reference_conv(x_, w_, strides, "SAME")
    fast = lambda x_, w_: conv2d(x_, w_, strides, "SAME")
    y_ref, (dx_ref, dw_ref) = jax.jit(lambda x, w: _grads(ref, x, w))(x, w)
    y, (dx, dw) = jax.jit(lambda x, w: _grads(fast, x, w))(x, w)
    assert y.dtype == y_ref.dtype and dw.dtype == dw_ref.dtype and dw.shape == w.shape
    _close(y, y_ref, tol)
    _close(dx, dx_ref, tol)
    _close(dw, dw_ref, tol)


def test_conv2d_explicit_padding_and_chunking():
    from ferjax.models.ops.conv import weight_grad

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((12, 8, 8, 5)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((12, 8, 8, 7)), jnp.float32)
    w = jnp.zeros((3, 3, 5, 7))
    pads = ((1, 1), (1, 1))
    ref = jax.vjp(lambda w_: _reference_conv(x, w_, (1, 1), pads), w)[1](dy)[0]
    image_bytes = 8 * 8 * 9 * 5 * 4
    for chunk_bytes in (1, image_bytes, 3 * image_bytes, 1 << 30):  # 1, 1, 3, 12 images a chunk
        _close(weight_grad(x, dy, (3, 3), (1, 1), pads, chunk_bytes), ref, 2e-5)


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (2, 7, 9, 5)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_matches_flax_including_ties(shape, dtype):
    rng = np.random.default_rng(1)
    # Post-ReLU-like values with many exact ties (zeros and repeated integers).
    x = jnp.asarray(np.maximum(rng.integers(-2, 3, shape), 0), dtype)
    ref = lambda x_: nn.max_pool(x_, (2, 2), strides=(2, 2))
    for fn in (ref, max_pool_2x2):
        assert fn(x).shape == ref(x).shape
    np.testing.assert_array_equal(np.asarray(max_pool_2x2(x)), np.asarray(ref(x)))
    y = ref(x)
    ct = jnp.asarray(rng.standard_normal(y.shape), dtype)
    g_ref = jax.grad(lambda x_: jnp.sum((ref(x_) * ct).astype(jnp.float32)))(x)
    g = jax.grad(lambda x_: jnp.sum((max_pool_2x2(x_) * ct).astype(jnp.float32)))(x)
    np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(g_ref, np.float32))


def test_gemm_conv_module_is_a_drop_in_for_nn_conv():
    x = jnp.ones((2, 6, 6, 3))
    for kwargs in ({"use_bias": True}, {"use_bias": False}, {"strides": (2, 2)}):
        a = nn.Conv(4, (3, 3), **kwargs).init(jax.random.PRNGKey(0), x)
        b = GemmConv(4, (3, 3), **kwargs).init(jax.random.PRNGKey(0), x)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        jax.tree.map(np.testing.assert_array_equal, a, b)
        _close(
            GemmConv(4, (3, 3), **kwargs).apply(b, x),
            nn.Conv(4, (3, 3), **kwargs).apply(a, x),
            1e-6,
        )


def test_resolve_conv_impl(monkeypatch):
    from ferjax.runtime import platform

    monkeypatch.setattr(platform, "xla_cpu_convs_tuned", lambda: True)
    assert resolve_conv_impl("auto", "cpu", devices=1) == "winograd"
    assert resolve_conv_impl("auto", "cpu", devices=8) == "fast"
    assert resolve_conv_impl("auto", "cpu", devices=1, widest=512) == "winograd"
    assert resolve_conv_impl("auto", "cpu", devices=1, widest=128) == "fast"  # the demo CNN
    monkeypatch.setattr(platform, "xla_cpu_convs_tuned", lambda: False)
    assert resolve_conv_impl("auto", "cpu", devices=1) == "gemm"
    assert resolve_conv_impl("gemm", "gpu") == "gemm"
    assert resolve_conv_impl("auto", "gpu") == "xla"
    assert resolve_conv_impl("auto", "tpu") == "xla"
    assert resolve_conv_impl("xla", "cpu") == "xla"
    with pytest.raises(ConfigError, match="model.conv_impl: got 'oneDNN'"):
        resolve_conv_impl("oneDNN")


def _config(name: str, impl: str):
    config = runpy.run_path(str(DEFAULT_CONFIG))["get_config"]()
    config.model.name = name
    config.model.cnn_widths = "8,16"
    config.model.cnn_convs_per_stage = 2
    config.model.cnn_hidden = 16
    config.model.width = 8
    config.model.conv_impl = impl
    config.train.batch_size = 8
    config.augment.ops = "flip"
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_param_trees_and_train_step_agree_between_impls(name):
    """The builder's program with each conv_impl: identical initial parameters, close losses
    and parameters after two steps."""
    rng = np.random.default_rng(0)
    n, k = 16, 3
    data = {
        "images": jnp.asarray(rng.integers(0, 256, (n, 16, 16, 1)), jnp.uint8),
        "targets": jax.nn.one_hot(jnp.arange(n) % k, k),
    }
    batch = {
        "i": jnp.arange(8, dtype=jnp.int32),
        "j": jnp.arange(8, 16, dtype=jnp.int32),
        "lam": jnp.zeros(8),
        "weight": jnp.ones(8),
    }
    # ResNet-18 adds strided and 1x1 layers, which only winograd computes differently (GEMM input
    # gradients); fast and gemm are the plain CNN's layers with another weight gradient.
    impls = ("xla", "fast", "gemm", "winograd") if name == "cnn" else ("xla", "winograd")
    results = {}
    for impl in impls:
        program = build(
            _config(name, impl),
            num_classes=k,
            image_shape=(16, 16, 1),
            steps_per_epoch=10,
            norm=(128.0, 64.0),
        )
        state = program.state
        initial = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        for _ in range(2):
            state, metrics = program.train_step(state, data, batch)
        results[impl] = (initial, jax.device_get(state), jax.device_get(metrics))
    v_xla, s_xla, m_xla = results["xla"]
    for impl in impls[1:]:
        v, s, m = results[impl]
        assert jax.tree.structure(v_xla) == jax.tree.structure(v)
        jax.tree.map(np.testing.assert_array_equal, v_xla, v)
        np.testing.assert_allclose(m["loss_sum"], m_xla["loss_sum"], rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
            s.params,
            s_xla.params,
        )
        # The running statistics too: the CPU impls train the CNN's BatchNorm + ReLU + pool as
        # one op (ferjax.models.ops.bn_relu_pool), xla as library ops.
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
            s.batch_stats,
            s_xla.batch_stats,
        )
        assert optax.tree_utils.tree_l2_norm(s.params) > 0


def test_config_rejects_unknown_conv_impl():
    config = runpy.run_path(str(DEFAULT_CONFIG))["get_config"]()
    validate(config)
    config.model.conv_impl = "onednn"
    with pytest.raises(ConfigError, match="model.conv_impl"):
        validate(config)

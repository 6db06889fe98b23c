"""ferjax.models.ops.winograd and WinogradConv: values and all gradients equal XLA's convolution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ferjax.models.ops import winograd
from ferjax.models.winograd_conv import WinogradConv, winograd_applies

DN = ("NHWC", "HWIO", "NHWC")


def _reference(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)


def _value_and_grads(fn, x, w, ct):
    y = fn(x, w)
    grads = jax.grad(lambda x_, w_: jnp.sum(fn(x_, w_) * ct), argnums=(0, 1))(x, w)
    return y, grads


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _operands(batch, h, w, cin, cout, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(np.maximum(rng.standard_normal((batch, h, w, cin)), 0), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((batch, h, w, cout)), jnp.float32)
    return x, k, ct


@pytest.mark.parametrize("m", winograd.TILES)
def test_transforms_compute_a_1d_correlation(m):
    t = winograd.TRANSFORMS[m]
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    expected = np.array([d[i : i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(t.at @ ((t.g @ k) * (t.bt @ d)), expected, atol=1e-12)


# Relative error bounds (max |err| / max |ref|) per tile size in float32.
TOL = {2: 2e-6, 3: 5e-6, 4: 2e-5}


SHAPES = [
    (2, 7, 9, 5, 6),  # odd sizes, channels not multiples of 8
    (1, 12, 12, 8, 3),  # batch 1
    (3, 6, 6, 16, 16),
    (4, 5, 11, 3, 10),
]
CASES = [(s, 2, "winograd") for s in SHAPES]
CASES += [(SHAPES[0], 2, "gemm"), (SHAPES[0], 2, "xla")]
CASES += [(s, m, "winograd") for s in SHAPES[:2] for m in (3, 4)]
CASES += [(SHAPES[2], 4, "gemm")]


@pytest.mark.parametrize("shape,m,weight_grad", CASES)
def test_values_and_gradients_match_xla(shape, m, weight_grad):
    batch, h, w, cin, cout = shape
    x, k, ct = _operands(batch, h, w, cin, cout)
    ref = jax.jit(lambda x, k: _value_and_grads(_reference, x, k, ct))(x, k)
    conv = lambda x_, k_: winograd.winograd_conv3x3(x_, k_, m, weight_grad)
    got = jax.jit(lambda x, k: _value_and_grads(conv, x, k, ct))(x, k)
    y, (dx, dk) = got
    assert y.shape == ref[0].shape and dx.shape == x.shape and dk.shape == k.shape
    assert y.dtype == dx.dtype == dk.dtype == jnp.float32
    for a, b in zip((y, dx, dk), (ref[0], *ref[1])):
        assert _rel_err(a, b) < TOL[m]


@pytest.mark.parametrize("m", (2, 4))
def test_batch_chunks_give_the_same_result(m, monkeypatch):
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    x, k, ct = _operands(6, 8, 8, 4, 5, seed=1)
    whole = jax.jit(
        lambda x, k: _value_and_grads(
            lambda a, b: winograd.winograd_conv3x3(a, b, m, chunk_bytes=1 << 30), x, k, ct
        )
    )(x, k)
    # One byte per chunk: one image per chunk (6 chunks); 3 images per chunk: 2 chunks.
    image_bytes = (m + 2) ** 2 * (8 // m) ** 2 * 5 * 4
    for chunk_bytes in (1, 3 * image_bytes):
        fn = lambda a, b, cb=chunk_bytes: winograd.winograd_conv3x3(a, b, m, chunk_bytes=cb)
        got = jax.jit(lambda x, k, fn=fn: _value_and_grads(fn, x, k, ct))(x, k)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(whole)):
            assert _rel_err(a, b) < TOL[m] / 2


def test_bfloat16_gemms_are_close():
    x, k, ct = _operands(2, 10, 10, 16, 8, seed=2)
    ref = _value_and_grads(_reference, x, k, ct)
    conv = lambda a, b: winograd.winograd_conv3x3(a, b, 2, gemm_dtype="bfloat16")
    got = jax.jit(lambda x, k: _value_and_grads(conv, x, k, ct))(x, k)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        assert _rel_err(a, b) < 2e-2


def test_auto_tile_takes_the_fewest_multiplies():
    assert [winograd.auto_tile(n, n) for n in (5, 6, 12, 24, 48)] == [2, 2, 4, 4, 4]
    x, k, ct = _operands(2, 6, 6, 8, 8)
    auto = winograd.winograd_conv3x3(x, k, tile=0)
    np.testing.assert_array_equal(auto, winograd.winograd_conv3x3(x, k, tile=2))


def test_rejects_unsupported_arguments():
    x, k, _ = _operands(1, 6, 6, 2, 2)
    with pytest.raises(ValueError, match="3x3"):
        winograd.winograd_conv3x3(x, jnp.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="tile"):
        winograd.winograd_conv3x3(x, k, tile=6)
    with pytest.raises(ValueError, match="weight_grad"):
        winograd.winograd_conv3x3(x, k, weight_grad="fft")


def test_winograd_applies_only_to_3x3_stride_1_same_layers():
    assert winograd_applies((3, 3), (1, 1), "SAME", 16, 8)
    assert winograd_applies((3, 3), (1, 1), ((1, 1), (1, 1)), 16, 8)
    assert not winograd_applies((3, 3), (2, 2), "SAME", 16, 8)
    assert not winograd_applies((1, 1), (1, 1), "SAME", 16, 8)
    assert not winograd_applies((3, 3), (1, 1), "VALID", 16, 8)
    assert not winograd_applies((3, 3), (1, 1), "SAME", 1, 8)


@pytest.mark.parametrize(
    "kernel,strides,cin,use_bias,others",
    [
        (3, 1, 8, False, "xla"),
        (3, 1, 12, True, "xla"),
        (3, 2, 8, False, "xla"),
        (1, 1, 8, True, "xla"),
        (3, 1, 1, False, "gemm"),
        (3, 2, 8, False, "gemm"),
        (1, 2, 8, True, "gemm"),
    ],
)
def test_module_has_nn_conv_parameters_and_outputs(kernel, strides, cin, use_bias, others):
    kw = dict(
        features=6,
        kernel_size=(kernel, kernel),
        strides=(strides, strides),
        padding="SAME",
        use_bias=use_bias,
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, cin))
    ref_mod, mod = nn.Conv(**kw), WinogradConv(**kw, others=others)
    ref_params = ref_mod.init(jax.random.PRNGKey(1), x)
    params = mod.init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if use_bias:
        params = jax.tree.map(lambda p: p + 0.1, params)
    loss = lambda m, p: jnp.sum(jnp.sin(m.apply(p, x)))
    y, g = jax.jit(lambda p: (mod.apply(p, x), jax.grad(lambda p_: loss(mod, p_))(p)))(params)
    y_ref, g_ref = jax.jit(
        lambda p: (ref_mod.apply(p, x), jax.grad(lambda p_: loss(ref_mod, p_))(p))
    )(params)
    tol = TOL[winograd.auto_tile(9, 9)]  # tile=0: the module picks the tile
    assert _rel_err(y, y_ref) < tol
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        assert _rel_err(a, b) < tol

"""ferjax.models.ops.im2col: values and gradients equal lax.conv_general_dilated's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gemm_rounds_like_xla
from jax import lax

from ferjax.models.ops import im2col

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "batch,h,w,cin,cout,k,s,padding",
    [
        (2, 8, 8, 3, 5, 3, 2, "SAME"),
        (3, 9, 7, 4, 6, 3, 2, "SAME"),  # odd sizes
        (2, 9, 9, 3, 5, 3, 2, "VALID"),
        (1, 8, 8, 3, 5, 3, 1, "SAME"),
        (2, 8, 8, 3, 5, 1, 2, "SAME"),  # 1x1: one GEMM of the strided input
        (2, 7, 7, 3, 5, 1, 1, "SAME"),
        (40, 12, 12, 16, 8, 3, 2, "SAME"),  # several batch chunks
    ],
)
@pytest.mark.parametrize("op", ["im2col_conv", "strided_conv"])
def test_matches_xla(batch, h, w, cin, cout, k, s, padding, op, monkeypatch):
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 64 << 10)
    rng = np.random.default_rng(batch + h + k)
    x = jnp.asarray(rng.standard_normal((batch, h, w, cin)), jnp.float32)
    kern = jnp.asarray(rng.standard_normal((k, k, cin, cout)), jnp.float32)

    def value_and_grads(conv):
        y = conv(x, kern)
        ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return y, jax.grad(lambda a, b: jnp.sum(conv(a, b) * ct), (0, 1))(x, kern)

    ref = jax.jit(
        lambda: value_and_grads(
            lambda a, b: lax.conv_general_dilated(a, b, (s, s), padding, dimension_numbers=DN)
        )
    )()
    conv = getattr(im2col, op)
    got = jax.jit(lambda: value_and_grads(lambda a, b: conv(a, b, (s, s), padding)))()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a / np.abs(b).max(), b / np.abs(b).max(), atol=2e-6)


def _xla(x, kern, s, padding):
    return lax.conv_general_dilated(x, kern, (s, s), padding, dimension_numbers=DN)


@pytest.mark.parametrize(
    "batch,h,w,cout,k,s,padding",
    [
        (8, 16, 16, 4, 3, 1, "SAME"),
        (3, 9, 7, 5, 3, 2, "SAME"),  # odd sizes, strided
        (2, 12, 12, 6, 3, 1, "VALID"),
        (2, 10, 10, 3, 3, 1, ((2, 0), (1, 1))),  # explicit padding
        (4, 11, 11, 8, 2, 1, "SAME"),  # an even kernel
    ],
)
def test_single_channel_conv_is_xlas_conv(batch, h, w, cout, k, s, padding):
    """conv_general_dilated on a one-channel input: the GEMM path is taken (premise) and gives
    lax.conv_general_dilated's values and gradients; every bit where this CPU's convolution and
    GEMM round alike (checked first), also after a reduction over the output in the same
    program (BatchNorm's statistics: the output is read as stored)."""
    rng = np.random.default_rng(batch + h + k)
    x = jnp.asarray(rng.standard_normal((batch, h, w, 1)), jnp.float32)
    kern = jnp.asarray(rng.standard_normal((k, k, 1, cout)), jnp.float32)

    def ours(a, b):
        return im2col.conv_general_dilated(a, b, (s, s), padding, dimension_numbers=DN)

    jaxpr = str(jax.make_jaxpr(ours)(x, kern))
    assert "dot_general" in jaxpr and "custom_vjp_call" in jaxpr, jaxpr

    def outputs(conv, x, kern):  # operands as arguments: constants would be folded
        y = conv(x, kern)
        ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        grads = jax.grad(lambda a, b: jnp.sum(conv(a, b) * ct), (0, 1))(x, kern)
        return y, y.mean((0, 1, 2)), (y * y).mean((0, 1, 2)), grads

    got = jax.jit(lambda *a: outputs(ours, *a))(x, kern)
    ref = jax.jit(lambda *a: outputs(lambda a, b: _xla(a, b, s, padding), *a))(x, kern)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))
    if gemm_rounds_like_xla(x, kern, (s, s), padding):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "shape,dtype,k,strides,kwargs",
    [
        ((2, 8, 8, 3), jnp.float32, 3, 1, {}),  # three channels
        ((2, 8, 8, 1), jnp.float32, 3, 1, {"rhs_dilation": (2, 2)}),
        ((2, 8, 8, 1), jnp.bfloat16, 3, 1, {}),
        ((2, 16, 16, 1), jnp.float32, 7, 2, {}),  # a 7x7 stem: more than MAX_TAPS taps
        ((1, 160, 160, 1), jnp.float32, 3, 1, {}),  # more than MAX_PIXELS pixels
    ],
    ids=["rgb", "dilated", "bfloat16", "7x7", "large"],
)
def test_other_convolutions_are_left_to_xla(shape, dtype, k, strides, kwargs):
    """Anything but a float32 single-channel, undilated convolution of at most 3x3 taps on an
    image of at most 128x128 pixels is lax's own op, unchanged."""
    x = jnp.ones(shape, dtype)
    kern = jnp.ones((k, k, shape[-1], 4), dtype)
    jaxpr = str(
        jax.make_jaxpr(
            lambda a, b: im2col.conv_general_dilated(
                a, b, (strides, strides), "SAME", dimension_numbers=DN, **kwargs
            )
        )(x, kern)
    )
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr, jaxpr

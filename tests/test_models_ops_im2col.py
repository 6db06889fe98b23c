"""ferjax.models.ops.im2col: values and gradients equal lax.conv_general_dilated's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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

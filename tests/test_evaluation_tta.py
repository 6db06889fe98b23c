"""ferjax.evaluation.tta: the test-time views."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ferjax.evaluation import tta as T


def ramp(h=48, w=48, c=1):
    """float32[h, w, c] test image."""
    return jnp.asarray(np.arange(h * w * c, dtype=np.float32).reshape(h, w, c) % 251)


def test_tta_views():
    x = ramp(c=3)[None]
    assert T.tta_views(x, "none").shape == (1, 1, 48, 48, 3)
    flip = T.tta_views(x, "flip")
    assert np.array_equal(flip[1], x[:, :, ::-1])
    ten = T.tta_views(x, "ten_crop")
    assert ten.shape == (10, 1, 48, 48, 3)
    np.testing.assert_allclose(ten[5:], ten[:5][:, :, :, ::-1])

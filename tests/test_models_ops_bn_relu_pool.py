"""ferjax.models.ops.bn_relu_pool and layers.PooledBatchNormReLU: the values, gradients and
running statistics of flax.linen.BatchNorm + relu + 2x2 max-pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.models import layers
from ferjax.models.ops import max_pool_2x2
from ferjax.models.ops.bn_relu_pool import bn_relu_pool


class Composed(nn.Module):
    """The block as library ops: what the fused op must equal."""

    @nn.compact
    def __call__(self, x):
        y = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")(x)
        return max_pool_2x2(nn.relu(y))


class Fused(nn.Module):
    @nn.compact
    def __call__(self, x):
        return layers.PooledBatchNormReLU(momentum=0.9, epsilon=1e-5, name="bn")(x)


def _inputs(shape, seed, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if ties:  # many equal elements in a window: the gradient must pick the same one
        x = np.round(x * 2) / 2
    c = shape[-1]
    scale = rng.standard_normal(c).astype(np.float32)  # negative slopes too: the window's min
    scale[0] = abs(scale[0]) + 0.5
    scale[-1] = -abs(scale[-1]) - 0.5
    bias = (0.3 * rng.standard_normal(c)).astype(np.float32)
    ct = np.cos(np.arange(x.size // 4 * 1.0)).reshape(shape[0], shape[1] // 2, shape[2] // 2, c)
    return jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), jnp.asarray(ct, jnp.float32)


@pytest.mark.parametrize("shape", [(4, 8, 6, 5), (16, 12, 12, 8), (2, 48, 48, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_values_gradients_and_running_stats_equal_flax(shape, ties):
    x, scale, bias, ct = _inputs(shape, seed=sum(shape), ties=ties)
    variables = Composed().init(jax.random.key(0), x)
    variables = {
        "params": {"bn": {"scale": scale, "bias": bias}},
        "batch_stats": variables["batch_stats"],
    }
    assert jax.tree.structure(Fused().init(jax.random.key(0), x)) == jax.tree.structure(
        Composed().init(jax.random.key(0), x)
    )

    def run(module):
        def loss(params, x):
            y, updates = module.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                mutable=["batch_stats"],
            )
            return jnp.sum(y * ct), (y, updates["batch_stats"])

        (_, (y, stats)), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
            variables["params"], x
        )
        return y, stats, grads

    y_ref, stats_ref, (dp_ref, dx_ref) = run(Composed())
    y, stats, (dp, dx) = run(Fused())
    assert float(jnp.abs(y_ref).max()) > 0.1 and float((y_ref == 0).mean()) > 0.1  # ReLU active
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats, stats_ref
    )
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), dp, dp_ref)
    # The premise of the tie case: some windows hold their maximum twice.
    w = np.asarray(x).reshape(shape[0], shape[1] // 2, 2, shape[2] // 2, 2, shape[3])
    repeated = (w == w.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4)) > 1
    assert repeated.any() == ties


def test_odd_sizes_are_refused_and_left_to_the_library_ops():
    x = jnp.zeros((2, 7, 8, 3))
    with pytest.raises(ValueError, match=r"even height and width, got \(2, 7, 8, 3\)"):
        bn_relu_pool(x, jnp.ones(3), jnp.zeros(3))
    assert not layers.fused_bn_relu_pool("fast", (2, 7, 8, 3))
    assert layers.fused_bn_relu_pool("fast", (2, 8, 8, 3))
    assert layers.fused_bn_relu_pool("winograd", (2, 8, 8, 3))
    assert not layers.fused_bn_relu_pool("xla", (2, 8, 8, 3))

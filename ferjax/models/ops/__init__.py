"""Custom ops with gradients that XLA's CPU backend computes faster than its defaults."""

from ferjax.models.ops.bn_relu_pool import bn_relu_pool
from ferjax.models.ops.conv import conv2d, weight_grad
from ferjax.models.ops.pool import max_pool_2x2

__all__ = ["bn_relu_pool", "conv2d", "max_pool_2x2", "weight_grad"]

"""On-device augmentation: small per-example ops composed from a config string, and
test-time views.

Each per-example op is a pure function `op(image, key, **params) -> image` on one float32
[H, W, C] image in pixel units (0..255); the chain is vmapped over the batch and runs inside the
jitted train step. Batch-level ops (mixup, cutmix) see the whole batch and its soft targets.
Adding an op is one function plus `@register("name")` (or `@register("name", batch=True)`); the
config names the chain, e.g. "flip|shift(pad=4)|rotate(degrees=10)|erase(p=0.5)|mixup(alpha=0.2)".
Arguments keep the type of the op's default (int, float or bool); an unknown argument or a value
of the wrong type is a one-line ConfigError.

Automatic policies draw per example from a fixed list of these ops (POLICY_OPS: identity,
brightness, contrast, gamma, rotate, shift_x, shift_y, crop, blur, noise, erase, and saturation
and hue for colour images) with one jittable lax.switch: `trivial_augment` (TrivialAugment: one op
at a uniformly drawn magnitude) and `rand_augment(n, m)` (RandAugment: n ops at magnitude m of 30).
"""

from ferjax.data.augment.chain import OPS, Op, make_augment, parse_ops, register
from ferjax.data.augment.ops import *  # noqa: F403 - every op, registered on import
from ferjax.data.augment.policies import POLICY_OPS, policy_ops, rand_augment, trivial_augment

__all__ = [
    "OPS",
    "Op",
    "POLICY_OPS",
    "make_augment",
    "parse_ops",
    "policy_ops",
    "rand_augment",
    "register",
    "trivial_augment",
]

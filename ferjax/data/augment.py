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

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import Registry, did_you_mean


@dataclasses.dataclass(frozen=True)
class Op:
    """An augmentation op: fn(image f32[H, W, C], key, **params) (per example) or
    fn(images f32[B, H, W, C], targets f32[B, K], key, **params) -> (images, targets) (batch)."""

    fn: Callable
    batch: bool = False
    check: Callable | None = None  # check(**params) raises ConfigError on bad values

    def arguments(self) -> dict[str, object]:
        """The op's arguments and their defaults."""
        skip = ("image", "images", "targets", "key")
        return {
            n: p.default
            for n, p in inspect.signature(self.fn).parameters.items()
            if n not in skip and p.default is not inspect.Parameter.empty
        }


OPS = Registry("augment.ops")
TTA_MODES = Registry("eval.tta")


def register(name: str, batch: bool = False, check: Callable | None = None):
    """Registers an augmentation op under `name` (a name can be registered once); `check`, if
    given, validates the parsed arguments (raising ConfigError)."""

    def wrap(fn):
        OPS.register(name, Op(fn, batch, check))
        return fn

    return wrap


def _per_channel(fn, image):
    """fn(float[H, W]) -> float[H, W] applied to every channel of float[H, W, C] (a grayscale
    image goes through fn as [H, W], exactly as a 2-D image would)."""
    if image.shape[-1] == 1:
        return fn(image[..., 0])[..., None]
    return jax.vmap(fn, in_axes=2, out_axes=2)(image)


def _bilinear(image, rows, cols):
    """Samples image float[H, W, C] at float coordinates [H', W'] (edge values outside)."""
    return _per_channel(
        lambda ch: jax.scipy.ndimage.map_coordinates(ch, [rows, cols], order=1, mode="nearest"),
        image,
    )


# ----------------------------------------------------------------------- geometric


@register("flip")
def flip(image, key, p: float = 0.5):
    """Horizontal mirror with probability p."""
    return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1], image)


@register("shift")
def shift(image, key, pad: int = 4):
    """Pads by `pad` pixels (edge values) and crops back at a random offset: a shift of up to
    +-pad pixels in each direction."""
    offset = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return _shift_by(image, pad - offset[0], pad - offset[1], pad)


def _shift_by(image, dy, dx, pad: int):
    """Content moved down by dy and right by dx pixels (integers, |dy|, |dx| <= pad, which is
    static), edge values filling in."""
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return jax.lax.dynamic_slice(padded, (pad - dy, pad - dx, 0), image.shape)


@register("crop")
def random_resized_crop(image, key, min_scale: float = 0.7, max_ratio: float = 1.25):
    """Random resized crop: a box of area fraction U(min_scale, 1) and aspect ratio in
    [1/max_ratio, max_ratio] (log-uniform), resized back to the full image (bilinear)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    area = jax.random.uniform(k1, (), minval=min_scale, maxval=1.0)
    log_r = jnp.log(max_ratio)
    ratio = jnp.exp(jax.random.uniform(k2, (), minval=-log_r, maxval=log_r))
    return _crop_by(image, area, ratio, k3, k4)


def _crop_by(image, area, ratio, k_top, k_left):
    """A box of area fraction `area` and aspect ratio `ratio` (width / height) at a random place
    (keys k_top, k_left), resized back to the full image (bilinear)."""
    h, w = image.shape[:2]
    bh = jnp.clip(jnp.sqrt(area / ratio) * h, 1.0, h)
    bw = jnp.clip(jnp.sqrt(area * ratio) * w, 1.0, w)
    top = jax.random.uniform(k_top, ()) * (h - bh)
    left = jax.random.uniform(k_left, ()) * (w - bw)
    rows = top + (jnp.arange(h) + 0.5) * bh / h - 0.5
    cols = left + (jnp.arange(w) + 0.5) * bw / w - 0.5
    rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
    return _bilinear(image, rr, cc)


@register("rotate")
def rotate(image, key, degrees: float = 10.0):
    """Rotation by U(-degrees, degrees) about the centre, bilinear, edge values outside.
    (map_coordinates: ~90x faster than dm_pix.rotate on CPU for 48x48 batches.)"""
    return rotate_by(image, jax.random.uniform(key, (), minval=-degrees, maxval=degrees))


def rotate_by(image, degrees):
    """Rotates the content counter-clockwise (as displayed) by `degrees`, bilinear."""
    h, w = image.shape[:2]
    angle = jnp.deg2rad(degrees)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rr, cc = jnp.meshgrid(jnp.arange(h) - cy, jnp.arange(w) - cx, indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # Output pixel (r, c) takes the input at the point rotated by -angle (counter-clockwise
    # rotation of the content for positive angles, as displayed with row 0 at the top).
    src_r = cos * rr + sin * cc + cy
    src_c = -sin * rr + cos * cc + cx
    return _bilinear(image, src_r, src_c)


# ----------------------------------------------------------------------- photometric


@register("brightness")
def brightness(image, key, delta: float = 25.0):
    """Adds U(-delta, delta) grey levels."""
    return _brighten(image, jax.random.uniform(key, (), minval=-delta, maxval=delta))


def _brighten(image, delta):
    return image + delta


@register("contrast")
def contrast(image, key, lower: float = 0.7, upper: float = 1.3):
    """Scales the deviation from the image mean by U(lower, upper)."""
    return _contrast_by(image, jax.random.uniform(key, (), minval=lower, maxval=upper))


def _contrast_by(image, factor):
    """Deviation from the image mean scaled by `factor`."""
    mean = jnp.mean(image)
    return mean + (image - mean) * factor


@register("gamma")
def gamma(image, key, lower: float = 0.7, upper: float = 1.5):
    """Gamma curve 255 * (x / 255) ** g with log-uniform g in [lower, upper]."""
    g = jnp.exp(jax.random.uniform(key, (), minval=jnp.log(lower), maxval=jnp.log(upper)))
    return _gamma_by(image, g)


def _gamma_by(image, g):
    """255 * (x / 255) ** g (x clipped to 0..255 first)."""
    return 255.0 * jnp.power(jnp.clip(image, 0.0, 255.0) / 255.0, g)


def _luma(image):
    """Grey level float[H, W, 1] of an RGB image float[H, W, 3] (ITU-R 601 weights)."""
    return jnp.tensordot(image, jnp.asarray([0.299, 0.587, 0.114], image.dtype), axes=1)[..., None]


@register("saturation")
def saturation(image, key, lower: float = 0.6, upper: float = 1.4):
    """Colour saturation scaled by U(lower, upper) around the grey level (0 = grey). Leaves
    grayscale images unchanged."""
    if image.shape[-1] != 3:
        return image
    return _saturate(image, jax.random.uniform(key, (), minval=lower, maxval=upper))


def _saturate(image, factor):
    """Colour deviation from the grey level of an RGB image scaled by `factor`."""
    grey = _luma(image)
    return grey + (image - grey) * factor


@register("hue")
def hue(image, key, degrees: float = 10.0):
    """Hue rotated by U(-degrees, degrees) about the grey axis (a rotation in YIQ's chroma
    plane). Leaves grayscale images unchanged."""
    if image.shape[-1] != 3:
        return image
    return _hue_by(image, jax.random.uniform(key, (), minval=-degrees, maxval=degrees))


def _hue_by(image, degrees):
    """Hue of an RGB image rotated by `degrees` about the grey axis (YIQ chroma plane)."""
    angle = jnp.deg2rad(degrees)
    to_yiq = jnp.asarray(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], image.dtype
    )
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rot = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], image.dtype)
    rot = rot.at[1, 1].set(cos).at[1, 2].set(-sin).at[2, 1].set(sin).at[2, 2].set(cos)
    matrix = jnp.linalg.inv(to_yiq) @ rot @ to_yiq
    return image @ matrix.T


@register("channel_gain")
def channel_gain(image, key, delta: float = 0.1):
    """Each channel multiplied by its own U(1 - delta, 1 + delta): colour-cast and white-balance
    jitter (one gain for a grayscale image)."""
    gains = jax.random.uniform(key, (image.shape[-1],), minval=1 - delta, maxval=1 + delta)
    return image * gains


@register("noise")
def gaussian_noise(image, key, std: float = 8.0):
    """Adds Gaussian noise with standard deviation U(0, std) grey levels."""
    k1, k2 = jax.random.split(key)
    return _noise_by(image, k2, jax.random.uniform(k1, (), maxval=std))


def _noise_by(image, key, sigma):
    """Adds Gaussian noise of standard deviation `sigma` grey levels."""
    return image + sigma * jax.random.normal(key, image.shape)


@register("blur")
def gaussian_blur(image, key, sigma: float = 1.0, p: float = 0.5, min_sigma: float = 0.3):
    """With probability p, a Gaussian blur of sigma U(min_sigma, sigma) (separable 5 taps)."""
    k1, k2 = jax.random.split(key)
    blurred = _blur_by(image, jax.random.uniform(k1, (), minval=min_sigma, maxval=sigma))
    return jnp.where(jax.random.bernoulli(k2, p), blurred, image)


def _blur_by(image, s):
    """Gaussian blur of sigma `s` > 0 pixels (separable 5 taps, edge values outside)."""
    taps = jnp.exp(-0.5 * (jnp.arange(-2, 3) / s) ** 2)
    taps = taps / taps.sum()
    padded = jnp.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    rows = sum(taps[i] * padded[i : i + h, :] for i in range(5))
    return sum(taps[j] * rows[:, j : j + w] for j in range(5))


@register("erase")
def random_erase(image, key, p: float = 0.5, min_area: float = 0.02, max_area: float = 0.2):
    """Random erasing (cutout): with probability p, a box of area fraction U(min_area,
    max_area) and aspect ratio in [0.3, 3.3] is set to 0 (all channels)."""
    k = jax.random.split(key, 5)
    box = _erase_box(image, jax.random.uniform(k[0], (), minval=min_area, maxval=max_area), k[1:4])
    return jnp.where((box & jax.random.bernoulli(k[4], p))[..., None], 0.0, image)


def _erase_box(image, area, keys):
    """bool[H, W]: a box of area fraction `area` and aspect ratio log-uniform in [0.3, 3.3] at
    a random place (keys: 3 keys, for the ratio, the top and the left)."""
    h, w = image.shape[:2]
    area = area * h * w
    ratio = jnp.exp(jax.random.uniform(keys[0], (), minval=jnp.log(0.3), maxval=jnp.log(3.3)))
    bh = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h)
    bw = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w)
    top = jnp.floor(jax.random.uniform(keys[1], ()) * (h - bh + 1))
    left = jnp.floor(jax.random.uniform(keys[2], ()) * (w - bw + 1))
    r, c = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    return (r >= top) & (r < top + bh) & (c >= left) & (c < left + bw)


# ----------------------------------------------------------------------- automatic policies
# The ops the policies draw from: fn(image, key, level) with level a traced scalar in [0, 1]
# (0 = identity, 1 = the strongest version: the range below); signed ops take a random sign.
# Sizes are fractions of the image side, so the list suits 48..224-pixel faces alike.
_SHIFT = 0.2  # shift_x / shift_y: up to 20% of the side (10 px at 48, 45 px at 224)


def _sign(key, value):
    return jnp.where(jax.random.bernoulli(key), value, -value)


def _policy_shift(image, key, level, axis: int):
    """Content moved along `axis` (0 = rows, 1 = columns) by +-level x 20% of the side."""
    pad = int(math.ceil(_SHIFT * max(image.shape[:2])))
    d = _sign(key, jnp.round(level * _SHIFT * image.shape[axis])).astype(jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    return _shift_by(image, d, zero, pad) if axis == 0 else _shift_by(image, zero, d, pad)


def _policy_erase(image, key, level):
    """A box of area fraction level x 0.25 set to 0 (nothing at level 0)."""
    area = 0.25 * level
    box = _erase_box(image, area, jax.random.split(key, 3)) & (area > 0)
    return jnp.where(box[..., None], 0.0, image)


def _policy_crop(image, key, level):
    """A square-ish crop (aspect ratio 1) of area fraction 1 - level x 0.5, resized back."""
    k1, k2 = jax.random.split(key)
    return _crop_by(image, 1.0 - 0.5 * level, 1.0, k1, k2)


# name -> (fn(image, key, level), colour only); the ranges are those at level 1.
POLICY_OPS: dict[str, tuple[Callable, bool]] = {
    "identity": (lambda x, k, v: x, False),
    "brightness": (lambda x, k, v: _brighten(x, _sign(k, 60.0 * v)), False),  # +-60 levels
    "contrast": (lambda x, k, v: _contrast_by(x, 1.0 + _sign(k, 0.6 * v)), False),  # x0.4..1.6
    "gamma": (lambda x, k, v: _gamma_by(x, jnp.exp(_sign(k, math.log(2.0) * v))), False),  # 0.5..2
    "rotate": (lambda x, k, v: rotate_by(x, _sign(k, 30.0 * v)), False),  # +-30 degrees
    "shift_x": (lambda x, k, v: _policy_shift(x, k, v, axis=1), False),  # +-20% of the width
    "shift_y": (lambda x, k, v: _policy_shift(x, k, v, axis=0), False),  # +-20% of the height
    "crop": (_policy_crop, False),  # area 1..0.5
    "blur": (lambda x, k, v: _blur_by(x, jnp.maximum(1.5 * v, 1e-3)), False),  # sigma 0..1.5 px
    "noise": (lambda x, k, v: _noise_by(x, k, 20.0 * v), False),  # std 0..20 levels
    "erase": (_policy_erase, False),  # box of area 0..0.25
    "saturation": (lambda x, k, v: _saturate(x, 1.0 + _sign(k, 0.9 * v)), True),  # x0.1..1.9
    "hue": (lambda x, k, v: _hue_by(x, _sign(k, 20.0 * v)), True),  # +-20 degrees
}


def policy_ops(channels: int) -> list[str]:
    """Names of the ops the policies draw from for images of `channels` channels (the colour
    ops only for 3)."""
    return [n for n, (_, colour) in POLICY_OPS.items() if channels == 3 or not colour]


def _policy_draw(image, key, level):
    """One op of policy_ops(C), uniformly, at `level`, as one program (lax.switch on a random
    index; under vmap every branch runs and the drawn one is selected). Clipped to 0..255."""
    branches = [POLICY_OPS[n][0] for n in policy_ops(image.shape[-1])]
    k_op, k_args = jax.random.split(key)
    index = jax.random.randint(k_op, (), 0, len(branches))
    out = jax.lax.switch(index, branches, image, k_args, jnp.asarray(level, image.dtype))
    return jnp.clip(out, 0.0, 255.0).astype(image.dtype)


@register("trivial_augment")
def trivial_augment(image, key):
    """TrivialAugment (Muller & Hutter 2021): one op drawn uniformly from policy_ops(C) at a
    magnitude drawn uniformly from its range."""
    k_level, k_draw = jax.random.split(key)
    return _policy_draw(image, k_draw, jax.random.uniform(k_level, ()))


def _check_rand_augment(n: int = 2, m: int = 9):
    if n < 0:
        raise ConfigError(f"augment.ops: rand_augment(n=...) must be >= 0, got {n}")
    if not 0 <= m <= 30:
        raise ConfigError(f"augment.ops: rand_augment(m=...) must be in 0..30, got {m}")


@register("rand_augment", check=_check_rand_augment)
def rand_augment(image, key, n: int = 2, m: int = 9):
    """RandAugment (Cubuk et al. 2020): n ops drawn uniformly (with replacement) from
    policy_ops(C), each at magnitude m of 30 (level m / 30 of each op's range)."""
    _check_rand_augment(n, m)
    for k in jax.random.split(key, n) if n else []:
        image = _policy_draw(image, k, m / 30.0)
    return image


# ----------------------------------------------------------------------- batch level


@register("mixup", batch=True)
def mixup(images, targets, key, alpha: float = 0.2):
    """Mixes each example with a random partner: x = l x + (1 - l) x', same for targets,
    l ~ Beta(alpha, alpha) per example."""
    k1, k2 = jax.random.split(key)
    lam = jax.random.beta(k1, alpha, alpha, (images.shape[0],))
    perm = jax.random.permutation(k2, images.shape[0])
    mix = lambda a, b, w: w * a + (1 - w) * b  # noqa: E731
    return (
        mix(images, images[perm], lam[:, None, None, None]),
        mix(targets, targets[perm], lam[:, None]),
    )


@register("cutmix", batch=True)
def cutmix(images, targets, key, alpha: float = 1.0, p: float = 0.5):
    """With probability p per example, pastes a box of a random partner; targets are mixed by
    the pasted area fraction."""
    b, h, w = images.shape[:3]
    k = jax.random.split(key, 5)
    lam = jax.random.beta(k[0], alpha, alpha, (b,))
    perm = jax.random.permutation(k[1], b)
    bh, bw = jnp.sqrt(1 - lam) * h, jnp.sqrt(1 - lam) * w
    cy, cx = jax.random.uniform(k[2], (b,)) * h, jax.random.uniform(k[3], (b,)) * w
    r, c = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    box = (
        (r >= (cy - bh / 2)[:, None, None])
        & (r < (cy + bh / 2)[:, None, None])
        & (c >= (cx - bw / 2)[:, None, None])
        & (c < (cx + bw / 2)[:, None, None])
    )
    box = box & jax.random.bernoulli(k[4], p, (b,))[:, None, None]
    pasted = box.mean(axis=(1, 2))
    out = jnp.where(box[..., None], images[perm], images)
    return out, (1 - pasted)[:, None] * targets + pasted[:, None] * targets[perm]


# ----------------------------------------------------------------------- composition

_OP_RE = re.compile(r"^([a-z_0-9]+)(?:\((.*)\))?$")


def _typed(value: str, default, where: str):
    """`value` (text) in the type of the op argument's `default` (bool, int or float)."""
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ConfigError(f"augment.ops: {where} must be true or false, got {text!r}")
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = None
    if isinstance(default, int) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if (
        isinstance(default, float)
        and isinstance(parsed, int | float)
        and not isinstance(parsed, bool)
    ):
        return float(parsed)
    kind = "an integer" if isinstance(default, int) else "a number"
    raise ConfigError(f"augment.ops: {where} must be {kind}, got {text!r}")


def parse_ops(spec: str) -> list[tuple[str, dict]]:
    """'flip|shift(pad=4)' -> [('flip', {}), ('shift', {'pad': 4})] with typed arguments."""
    chain = []
    for part in [p.strip() for p in str(spec).split("|") if p.strip()]:
        m = _OP_RE.match(part)
        if not m or m.group(1) not in OPS:
            name = m.group(1) if m else part
            raise ConfigError(
                f"augment.ops: unknown op {part!r}; known ops: {', '.join(sorted(OPS))}"
                + did_you_mean(name, OPS)
            )
        name, allowed = m.group(1), OPS.get(m.group(1)).arguments()
        params = {}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            key, eq, value = arg.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(f"augment.ops: bad argument {arg!r} in {part!r}, expected k=v")
            if key not in allowed:
                raise ConfigError(
                    f"augment.ops: {name} has no argument {key!r} "
                    f"(it takes {', '.join(allowed) or 'none'})" + did_you_mean(key, allowed)
                )
            params[key] = _typed(value, allowed[key], f"{name}({key}=...)")
        if OPS.get(name).check is not None:
            OPS.get(name).check(**params)
        chain.append((name, params))
    return chain


def make_augment(spec) -> Callable:
    """Returns augment(images f32[B, H, W, C], targets f32[B, K], key) -> (images, targets).

    spec: the `augment.ops` text, or the chain parse_ops made of it (parsed once per run)."""
    parsed = parse_ops(spec) if isinstance(spec, str) else spec
    chain = [(OPS.get(n), dict(p)) for n, p in parsed]
    per_example = [(op, p) for op, p in chain if not op.batch]
    batch_level = [(op, p) for op, p in chain if op.batch]

    def one(image, key):
        keys = jax.random.split(key, max(len(per_example), 1))
        for (op, params), k in zip(per_example, keys):
            image = op.fn(image, k, **params)
        return image

    def augment(images, targets, key):
        k_ex, k_batch = jax.random.split(key)
        if per_example:
            images = jax.vmap(one)(images, jax.random.split(k_ex, images.shape[0]))
        for (op, params), k in zip(batch_level, jax.random.split(k_batch, len(batch_level))):
            images, targets = op.fn(images, targets, k, **params)
        return images, targets

    return augment


# ----------------------------------------------------------------------- test-time views


@TTA_MODES.register("none")
def _no_tta(images, crop: float):
    return images[None]


@TTA_MODES.register("flip")
def _flip_tta(images, crop: float):
    """The image and its mirror."""
    return jnp.stack([images, images[:, :, ::-1]])


@TTA_MODES.register("ten_crop")
def _ten_crop(images, crop: float):
    """4 corner crops and the centre crop of `crop` x the size, resized back (bilinear), and
    their mirrors."""
    b, h, w, c = images.shape
    ch, cw = int(round(h * crop)), int(round(w * crop))
    starts = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    views = []
    for top, left in starts:
        part = images[:, top : top + ch, left : left + cw]
        views.append(jax.image.resize(part, (b, h, w, c), "bilinear"))
    views += [v[:, :, ::-1] for v in views]
    return jnp.stack(views)


def tta_views(images, mode: str, crop: float = 0.9):
    """Test-time views of float32[B, H, W, C] images -> float32[V, B, H, W, C] (TTA_MODES)."""
    return TTA_MODES.get(mode)(images, crop)

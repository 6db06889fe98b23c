"""On-device augmentation: small per-example ops, composed from a config string.

Each per-example op is a pure function `op(image, key, **params) -> image` on one float32
[H, W] image in pixel units (0..255); the chain is vmapped over the batch and runs inside the
jitted train step. Batch-level ops (mixup, cutmix) see the whole batch and its soft targets.
Adding an op is one function plus `@register("name")` (or `@register_batch`); the config names
the chain, e.g. "flip|shift(pad=4)|rotate(degrees=10)|erase(p=0.5)|mixup(alpha=0.2)".
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ferjax.errors import ConfigError

OPS: dict[str, Callable] = {}
BATCH_OPS: dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        OPS[name] = fn
        return fn

    return wrap


def register_batch(name: str):
    def wrap(fn):
        BATCH_OPS[name] = fn
        return fn

    return wrap


def _bilinear(image, rows, cols):
    """Samples image at float coordinates (edge values outside)."""
    return jax.scipy.ndimage.map_coordinates(image, [rows, cols], order=1, mode="nearest")


# ----------------------------------------------------------------------- geometric


@register("flip")
def flip(image, key, p: float = 0.5):
    """Horizontal mirror with probability p."""
    return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1], image)


@register("shift")
def shift(image, key, pad: int = 4):
    """Pads by `pad` pixels (edge values) and crops back at a random offset: a shift of up to
    +-pad pixels in each direction."""
    pad = int(pad)
    padded = jnp.pad(image, pad, mode="edge")
    offset = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1]), image.shape)


@register("crop")
def random_resized_crop(image, key, min_scale: float = 0.7, max_ratio: float = 1.25):
    """Random resized crop: a box of area fraction U(min_scale, 1) and aspect ratio in
    [1/max_ratio, max_ratio] (log-uniform), resized back to the full image (bilinear)."""
    h, w = image.shape
    k1, k2, k3, k4 = jax.random.split(key, 4)
    area = jax.random.uniform(k1, (), minval=min_scale, maxval=1.0)
    log_r = jnp.log(max_ratio)
    ratio = jnp.exp(jax.random.uniform(k2, (), minval=-log_r, maxval=log_r))
    bh = jnp.clip(jnp.sqrt(area / ratio) * h, 1.0, h)
    bw = jnp.clip(jnp.sqrt(area * ratio) * w, 1.0, w)
    top = jax.random.uniform(k3, ()) * (h - bh)
    left = jax.random.uniform(k4, ()) * (w - bw)
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
    h, w = image.shape
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
    return image + jax.random.uniform(key, (), minval=-delta, maxval=delta)


@register("contrast")
def contrast(image, key, lower: float = 0.7, upper: float = 1.3):
    """Scales the deviation from the image mean by U(lower, upper)."""
    factor = jax.random.uniform(key, (), minval=lower, maxval=upper)
    mean = jnp.mean(image)
    return mean + (image - mean) * factor


@register("gamma")
def gamma(image, key, lower: float = 0.7, upper: float = 1.5):
    """Gamma curve 255 * (x / 255) ** g with log-uniform g in [lower, upper]."""
    g = jnp.exp(jax.random.uniform(key, (), minval=jnp.log(lower), maxval=jnp.log(upper)))
    return 255.0 * jnp.power(jnp.clip(image, 0.0, 255.0) / 255.0, g)


@register("noise")
def gaussian_noise(image, key, std: float = 8.0):
    """Adds Gaussian noise with standard deviation U(0, std) grey levels."""
    k1, k2 = jax.random.split(key)
    sigma = jax.random.uniform(k1, (), maxval=std)
    return image + sigma * jax.random.normal(k2, image.shape)


@register("blur")
def gaussian_blur(image, key, sigma: float = 1.0, p: float = 0.5, min_sigma: float = 0.3):
    """With probability p, a Gaussian blur of sigma U(min_sigma, sigma) (separable 5 taps)."""
    k1, k2 = jax.random.split(key)
    s = jax.random.uniform(k1, (), minval=min_sigma, maxval=sigma)
    taps = jnp.exp(-0.5 * (jnp.arange(-2, 3) / s) ** 2)
    taps = taps / taps.sum()
    padded = jnp.pad(image, 2, mode="edge")
    h, w = image.shape
    rows = sum(taps[i] * padded[i : i + h, :] for i in range(5))
    blurred = sum(taps[j] * rows[:, j : j + w] for j in range(5))
    return jnp.where(jax.random.bernoulli(k2, p), blurred, image)


@register("erase")
def random_erase(image, key, p: float = 0.5, min_area: float = 0.02, max_area: float = 0.2):
    """Random erasing (cutout): with probability p, a box of area fraction U(min_area,
    max_area) and aspect ratio in [0.3, 3.3] is set to 0."""
    h, w = image.shape
    k = jax.random.split(key, 5)
    area = jax.random.uniform(k[0], (), minval=min_area, maxval=max_area) * h * w
    ratio = jnp.exp(jax.random.uniform(k[1], (), minval=jnp.log(0.3), maxval=jnp.log(3.3)))
    bh = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h)
    bw = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w)
    top = jnp.floor(jax.random.uniform(k[2], ()) * (h - bh + 1))
    left = jnp.floor(jax.random.uniform(k[3], ()) * (w - bw + 1))
    r, c = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (r >= top) & (r < top + bh) & (c >= left) & (c < left + bw)
    return jnp.where(box & jax.random.bernoulli(k[4], p), 0.0, image)


# ----------------------------------------------------------------------- batch level


@register_batch("mixup")
def mixup(images, targets, key, alpha: float = 0.2):
    """Mixes each example with a random partner: x = l x + (1 - l) x', same for targets,
    l ~ Beta(alpha, alpha) per example."""
    k1, k2 = jax.random.split(key)
    lam = jax.random.beta(k1, alpha, alpha, (images.shape[0],))
    perm = jax.random.permutation(k2, images.shape[0])
    mix = lambda a, b, w: w * a + (1 - w) * b  # noqa: E731
    return (
        mix(images, images[perm], lam[:, None, None]),
        mix(targets, targets[perm], lam[:, None]),
    )


@register_batch("cutmix")
def cutmix(images, targets, key, alpha: float = 1.0, p: float = 0.5):
    """With probability p per example, pastes a box of a random partner; targets are mixed by
    the pasted area fraction."""
    b, h, w = images.shape
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
    out = jnp.where(box, images[perm], images)
    return out, (1 - pasted)[:, None] * targets + pasted[:, None] * targets[perm]


# ----------------------------------------------------------------------- composition

_OP_RE = re.compile(r"^([a-z_0-9]+)(?:\((.*)\))?$")


def parse_ops(spec: str) -> list[tuple[str, dict]]:
    """'flip|shift(pad=4)' -> [('flip', {}), ('shift', {'pad': 4.0})]."""
    chain = []
    for part in [p.strip() for p in str(spec).split("|") if p.strip()]:
        m = _OP_RE.match(part)
        if not m or (m.group(1) not in OPS and m.group(1) not in BATCH_OPS):
            known = ", ".join(sorted(OPS) + sorted(BATCH_OPS))
            raise ConfigError(f"augment.ops: unknown op {part!r}; known ops: {known}")
        params = {}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            key, eq, value = arg.partition("=")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                eq = ""
            if not eq:
                raise ConfigError(f"augment.ops: bad argument {arg!r} in {part!r}, expected k=v")
        fn = OPS.get(m.group(1)) or BATCH_OPS[m.group(1)]
        names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        allowed = [n for n in names if n not in ("image", "images", "targets", "key")]
        for key in params:
            if key not in allowed:
                raise ConfigError(
                    f"augment.ops: {m.group(1)} has no argument {key!r} "
                    f"(it takes {', '.join(allowed) or 'none'})"
                )
        chain.append((m.group(1), params))
    return chain


def make_augment(spec: str) -> Callable:
    """Returns augment(images f32[B, H, W], targets f32[B, K], key) -> (images, targets)."""
    chain = parse_ops(spec)
    per_example = [(n, p) for n, p in chain if n in OPS]
    batch_level = [(n, p) for n, p in chain if n in BATCH_OPS]

    def one(image, key):
        keys = jax.random.split(key, max(len(per_example), 1))
        for (name, params), k in zip(per_example, keys):
            image = OPS[name](image, k, **params)
        return image

    def augment(images, targets, key):
        k_ex, k_batch = jax.random.split(key)
        if per_example:
            images = jax.vmap(one)(images, jax.random.split(k_ex, images.shape[0]))
        for (name, params), k in zip(batch_level, jax.random.split(k_batch, len(batch_level))):
            images, targets = BATCH_OPS[name](images, targets, k, **params)
        return images, targets

    return augment


# ----------------------------------------------------------------------- test-time views


def tta_views(images, mode: str, crop: float = 0.9):
    """Test-time views of float32[B, H, W] images -> float32[V, B, H, W].

    none: the image; flip: image and mirror; ten_crop: 4 corner crops and the centre crop of
    `crop` x the size, resized back (bilinear), and their mirrors.
    """
    if mode == "none":
        return images[None]
    if mode == "flip":
        return jnp.stack([images, images[:, :, ::-1]])
    if mode != "ten_crop":
        raise ConfigError(f"eval.tta: unknown {mode!r}, expected none, flip or ten_crop")
    b, h, w = images.shape
    ch, cw = int(round(h * crop)), int(round(w * crop))
    starts = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    views = []
    for top, left in starts:
        part = images[:, top : top + ch, left : left + cw]
        views.append(jax.image.resize(part, (b, h, w), "bilinear"))
    views += [v[:, :, ::-1] for v in views]
    return jnp.stack(views)

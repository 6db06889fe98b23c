"""Procedural faces: an embedded, deterministic stand-in for FER2013.

Each face is rendered analytically, directly on the output grid (48x48 by default, any size).
Its *expression* depends on the class (mouth curvature, openness and width, eyebrow slant and
height, eye openness, a one-sided sneer for disgust) and its *identity and capture* vary at
random (face shape, size, position, rotation, skin and background tone, lighting gradient,
blur, noise, occluders). Expression parameters are drawn around class means with wide spreads,
so neighbouring classes overlap: a good model clearly beats a weak one, but nothing reaches
100%.

In colour (channels=3) the same faces get skin tones, hair, irises, darker lips, clothing and
coloured backgrounds and occluders. The grayscale faces are bit-identical to the original
renderer: the colour path draws its extra random numbers only after the grayscale draws.

Generation is vectorised over chunks of faces (no per-face Python loop).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ferjax.data.dataset import FER2013_CLASSES, FerData, Split
from ferjax.data.sources.fer2013 import default_cache_dir, save_npz

# FER2013's training-split class counts (angry, disgust, fear, happy, sad, surprise, neutral).
FER2013_TRAIN_COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])

# Class means of the expression parameters, in FER2013 class order:
#   brow_y: eyebrow height (negative = raised); brow_slant: inner end down (+) or up (-);
#   eye_open: eye height factor; curve: mouth corners up (+) or down (-);
#   mouth_open: mouth opening; mouth_w: mouth half-width; sneer: one-sided upper-lip raise.
_EXPRESSIONS = {
    #            brow_y brow_slant eye_open curve mouth_open mouth_w sneer
    "angry": (-0.30, 0.10, 0.75, -0.06, 0.02, 0.28, 0.0),
    "disgust": (-0.32, 0.06, 0.60, -0.10, 0.03, 0.30, 0.12),
    "fear": (-0.45, -0.07, 1.40, -0.06, 0.10, 0.40, 0.0),
    "happy": (-0.38, 0.00, 0.70, 0.20, 0.05, 0.42, 0.0),
    "sad": (-0.36, -0.09, 0.80, -0.14, 0.00, 0.30, 0.0),
    "surprise": (-0.50, -0.02, 1.45, 0.00, 0.20, 0.22, 0.0),
    "neutral": (-0.36, 0.00, 1.00, 0.00, 0.00, 0.32, 0.0),
}
_PARAM_STD = np.array([0.04, 0.04, 0.22, 0.06, 0.04, 0.05, 0.04])


def _segment_distance(px, py, ax, ay, bx, by):
    """Distance from points (px, py) to segments a-b; all arrays broadcast."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    ex, ey = px - ax - t * dx, py - ay - t * dy
    return np.sqrt(ex * ex + ey * ey)


def _soft(d, width):
    """1 inside (d < 0), 0 outside, with a linear edge `width` wide (anti-aliasing)."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


class _Face(NamedTuple):
    """Geometry and capture parameters of a chunk of faces (every draw of the grayscale face
    except its pixel noise). Parameters are float32[N, 1, 1]; masks are float32[N, S, S] in 0..1."""

    x: np.ndarray  # float32[1, 1, S] image coordinates in -1..1
    y: np.ndarray  # float32[1, S, 1]
    u: np.ndarray  # float32[N, S, S] face coordinates (rotated, scaled, centred)
    v: np.ndarray
    px: np.ndarray  # one pixel in face coordinates
    face_ax: np.ndarray
    face_ay: np.ndarray
    skin: np.ndarray
    background: np.ndarray
    feature_dark: np.ndarray
    face: np.ndarray
    eye: np.ndarray
    brow: np.ndarray
    nose: np.ndarray
    mouth: np.ndarray
    lip_y: np.ndarray  # float32[N, S, S] mouth centre line
    mouth_half: np.ndarray  # float32[N, S, S] half-height of the mouth opening
    mouth_t: np.ndarray  # float32[N, S, S] position along the mouth, -1..1 at the corners
    phi: np.ndarray
    gain: np.ndarray
    occluded: np.ndarray  # bool[N]
    occluder_box: np.ndarray | None  # bool[K, S, S] for the K occluded faces
    occluder_value: np.ndarray | None  # float32[K, 1, 1]
    blur: np.ndarray
    noise: np.ndarray


def _draw_faces(labels: np.ndarray, rng: np.random.Generator, size: int) -> _Face:
    """Draws and lays out one face per label on a size x size grid.

    The draws are those of the original grayscale renderer, in its order, so that grayscale
    faces stay bit-identical; the colour path draws its extra numbers only after these.
    """
    n = len(labels)
    f32 = np.float32
    col = lambda a: np.asarray(a, f32)[:, None, None]  # noqa: E731
    means = np.array([_EXPRESSIONS[c] for c in FER2013_CLASSES], f32)[labels]
    expr = means + rng.normal(size=means.shape).astype(f32) * _PARAM_STD
    brow_y, brow_slant, eye_open, curve, mouth_open, mouth_w, sneer = (
        col(expr[:, k]) for k in range(7)
    )
    eye_open = np.maximum(eye_open, 0.15)
    sneer_side = col(rng.choice([-1.0, 1.0], n))

    # Identity and capture.
    cx, cy = col(rng.uniform(-0.1, 0.1, n)), col(rng.uniform(-0.1, 0.1, n))
    scale = col(rng.uniform(0.78, 1.08, n))
    theta = col(np.deg2rad(rng.normal(0.0, 8.0, n)))
    face_ax, face_ay = col(rng.uniform(0.55, 0.7, n)), col(rng.uniform(0.75, 0.9, n))
    skin = col(rng.uniform(0.45, 0.85, n))
    background = col(rng.uniform(0.0, 1.0, n))
    feature_dark = col(rng.uniform(0.25, 0.45, n))
    eye_y = col(rng.normal(-0.14, 0.03, n))
    eye_dx = col(rng.normal(0.28, 0.025, n))
    mouth_y = col(rng.normal(0.45, 0.03, n))

    grid = (np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0
    x, y = grid[None, None, :], grid[None, :, None]
    cos, sin = np.cos(theta), np.sin(theta)
    u = ((x - cx) * cos + (y - cy) * sin) / scale
    v = (-(x - cx) * sin + (y - cy) * cos) / scale
    px = 2.0 / size / scale  # one pixel in face coordinates: edge softness

    face = _soft(np.sqrt((u / face_ax) ** 2 + (v / face_ay) ** 2) - 1.0, 0.03)
    au = np.abs(u)  # faces are symmetric except for the sneer
    eye_d = np.sqrt(((au - eye_dx) / 0.11) ** 2 + ((v - eye_y) / (0.055 * eye_open)) ** 2)
    eye = _soft(eye_d - 1.0, 0.12)
    inner_y, outer_y = brow_y + brow_slant, brow_y - brow_slant
    brow = _soft(
        _segment_distance(au, v, eye_dx - 0.15, inner_y, eye_dx + 0.14, outer_y) - 0.035, px
    )
    nose = _soft(_segment_distance(u, v, 0.0, 0.02, 0.0, 0.22) - 0.025, px)

    t = np.clip(u / mouth_w, -1.5, 1.5)
    lip_y = mouth_y - curve * t * t + curve * 0.3 - sneer * sneer_side * np.clip(t, 0, 1) * 1.5
    inside = np.clip(1.0 - t * t, 0.0, 1.0)
    half = 0.025 + mouth_open * inside
    mouth = _soft((np.abs(v - lip_y) - half) * (np.abs(t) <= 1.0) + (np.abs(t) > 1.0) * 1.0, px)

    phi = col(rng.uniform(0, 2 * np.pi, n))
    gain = col(rng.uniform(0.0, 0.35, n))
    occluded = rng.random(n) < 0.12
    occluder_box = occluder_value = None
    if occluded.any():
        k = occluded.sum()
        ox, oy = col(rng.uniform(-0.9, 0.9, k)), col(rng.uniform(-0.9, 0.9, k))
        ow, oh = col(rng.uniform(0.15, 0.45, k)), col(rng.uniform(0.15, 0.45, k))
        occluder_box = (np.abs(x - ox) < ow) & (np.abs(y - oy) < oh)
        occluder_value = col(rng.uniform(0, 1, k))
    blur = col(rng.uniform(0.0, 1.0, n))
    noise = col(rng.uniform(0.0, 0.05, n))
    return _Face(
        x, y, u, v, px, face_ax, face_ay, skin, background, feature_dark, face, eye, brow, nose,
        mouth, lip_y, half, t, phi, gain, occluded, occluder_box, occluder_value, blur, noise,
    )  # fmt: skip


def _compose_gray(f: _Face, rng: np.random.Generator, size: int) -> np.ndarray:
    """The original grayscale face: uint8[N, size, size]."""
    img = f.background + (f.skin - f.background) * f.face
    dark = np.zeros_like(img)
    dark = np.maximum(dark, f.eye)
    dark = np.maximum(dark, f.brow)
    dark = np.maximum(dark, 0.4 * f.nose)
    dark = np.maximum(dark, f.mouth)
    img = img - f.feature_dark * dark * f.face

    # Capture: lighting gradient, occluders, blur, noise.
    img = img * (1.0 + f.gain * (f.x * np.cos(f.phi) + f.y * np.sin(f.phi)))
    if f.occluder_box is not None:
        img[f.occluded] = np.where(f.occluder_box, f.occluder_value, img[f.occluded])
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    box3 = sum(padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3)) / 9.0
    img = img + f.blur * (box3 - img)
    img = img + f.noise * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# Skin tones from deep to light (sRGB, 0..1); a face's grayscale `skin` picks a point between.
_SKIN_TONES = np.array(
    [[0.33, 0.21, 0.15], [0.55, 0.36, 0.25], [0.76, 0.56, 0.42], [0.96, 0.80, 0.69]], np.float32
)
_HAIR_COLOURS = np.array(
    [
        [0.07, 0.06, 0.05],  # black
        [0.25, 0.16, 0.10],  # dark brown
        [0.45, 0.30, 0.18],  # brown
        [0.80, 0.65, 0.40],  # blond
        [0.55, 0.25, 0.12],  # red
        [0.62, 0.62, 0.62],  # grey
    ],
    np.float32,
)
_HAIR_SHARE = np.array([0.35, 0.25, 0.15, 0.1, 0.05, 0.1])
_IRIS_COLOURS = np.array(
    [[0.25, 0.14, 0.07], [0.40, 0.26, 0.12], [0.25, 0.40, 0.60], [0.30, 0.42, 0.28]], np.float32
)  # dark brown, hazel, blue, green


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (each float32[N], 0..1) -> RGB float32[N, 3]."""
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _mix(img: np.ndarray, colour: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """img float32[N, S, S, 3] blended towards colour [N, 3] (or [N, S, S, 3]) by amount
    float32[N, S, S] in 0..1."""
    if colour.ndim == 2:
        colour = colour[:, None, None, :]
    a = amount[..., None]
    return img + (colour - img) * a


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable (2 radius + 1)^2 box filter over the two spatial axes of [N, S, S, 3]."""
    for axis in (1, 2):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float32)
        hi = np.take(c, np.arange(2 * radius + 1, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - 2 * radius - 1), axis=axis)
        img = (hi - lo) / (2 * radius + 1)
    return img


def _compose_colour(f: _Face, rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour face from the same geometry: uint8[N, size, size, 3].

    Skin tone follows the grayscale skin value (deep to light) with a random undertone; the
    background, clothing and occluders get random colours; hair (most faces), brows, irises
    and darker lips are drawn in colour. Every draw here comes after the grayscale draws.
    """
    n = len(f.skin)
    f32 = np.float32
    flat = lambda a: a.reshape(n).astype(f32)  # noqa: E731

    tone = np.clip((flat(f.skin) - 0.45) / 0.4, 0.0, 1.0) * (len(_SKIN_TONES) - 1)
    lo = np.minimum(tone.astype(int), len(_SKIN_TONES) - 2)
    w = (tone - lo)[:, None]
    skin = _SKIN_TONES[lo] * (1 - w) + _SKIN_TONES[lo + 1] * w
    skin = skin * (1.0 + rng.uniform(-0.06, 0.06, (n, 3)).astype(f32))
    background = _hsv(
        rng.random(n).astype(f32),
        rng.uniform(0.0, 0.6, n).astype(f32),
        (0.15 + 0.85 * flat(f.background)).astype(f32),
    )
    clothing = _hsv(
        rng.random(n).astype(f32), rng.uniform(0.1, 0.9, n).astype(f32),
        rng.uniform(0.15, 0.95, n).astype(f32),
    )  # fmt: skip
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), n, p=_HAIR_SHARE)]
    hair = hair * rng.uniform(0.85, 1.15, (n, 1)).astype(f32)
    has_hair = (rng.random(n) < 0.85).astype(f32)[:, None, None]
    hairline = rng.uniform(-0.68, -0.55, n).astype(f32)[:, None, None]
    iris = _IRIS_COLOURS[rng.choice(len(_IRIS_COLOURS), n, p=[0.5, 0.2, 0.15, 0.15])]
    lips = skin * np.array([0.80, 0.52, 0.55], f32) * rng.uniform(0.85, 1.05, (n, 1)).astype(f32)
    white_balance = rng.uniform(-0.06, 0.06, n).astype(f32)

    u, v, px = f.u, f.v, f.px
    img = np.broadcast_to(background[:, None, None, :], (n, size, size, 3)).astype(f32)
    shoulders = _soft(np.maximum(0.95 - v, np.abs(u) - 0.55 - 0.9 * (v - 0.95)), px)
    img = _mix(img, clothing, shoulders)
    neck = _soft(np.maximum(np.abs(u) - 0.25, 0.55 - v), px) * (1.0 - shoulders)
    img = _mix(img, skin * 0.85, neck)
    hair_cap = _soft(np.sqrt((u / (f.face_ax * 1.1)) ** 2 + (v / (f.face_ay * 1.07)) ** 2) - 1, px)
    behind = hair_cap * _soft(v - 0.05, px) * has_hair  # hair around the upper head
    img = _mix(img, hair, behind)
    img = _mix(img, skin, f.face)
    img = _mix(img, skin * (1 - 0.4 * f.feature_dark.reshape(n, 1)), f.nose * f.face)
    shade = 1.0 - f.feature_dark.reshape(n, 1)
    img = _mix(img, iris * shade, f.eye * f.face)
    img = _mix(img, hair * shade + 0.05, f.brow * f.face)
    img = _mix(img, lips, f.mouth * f.face)
    opening = _soft(np.abs(v - f.lip_y) - (f.mouth_half - 0.03), px) * (np.abs(f.mouth_t) <= 1)
    img = _mix(img, np.tile(np.array([[0.22, 0.06, 0.06]], f32), (n, 1)), opening * f.face)
    img = _mix(img, hair, hair_cap * _soft(v - hairline, px) * has_hair)

    light = 1.0 + f.gain * (f.x * np.cos(f.phi) + f.y * np.sin(f.phi))
    cast = 1.0 + white_balance[:, None] * np.array([1.0, 0.0, -1.0], f32)
    img = img * light[..., None] * cast[:, None, None, :]
    if f.occluder_box is not None:
        k = len(f.occluder_value)
        colour = _hsv(
            rng.random(k).astype(f32), rng.uniform(0, 0.8, k).astype(f32),
            f.occluder_value.reshape(k),
        )  # fmt: skip
        hand = rng.random(k) < 0.4
        colour[hand] = skin[f.occluded][hand]
        img[f.occluded] = np.where(
            f.occluder_box[..., None], colour[:, None, None], img[f.occluded]
        )
    blurred = _box_blur(img, max(1, round(size / 48)))
    img = img + f.blur[..., None] * (blurred - img)
    img = img + f.noise[..., None] * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_faces(
    labels: np.ndarray, rng: np.random.Generator, size: int = 48, channels: int = 1
) -> np.ndarray:
    """Renders one face per label (FER2013 class indices) directly on a size x size grid.

    Returns uint8[N, size, size] for channels=1 (bit-identical to the original grayscale
    renderer) or uint8[N, size, size, 3] for channels=3 (same geometry, in colour).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    faces = _draw_faces(np.asarray(labels), rng, size)
    if channels == 1:
        return _compose_gray(faces, rng, size)
    return _compose_colour(faces, rng, size)


def _class_labels(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` labels in FER2013's training proportions, exactly apportioned, shuffled."""
    share = FER2013_TRAIN_COUNTS / FER2013_TRAIN_COUNTS.sum() * count
    per_class = np.floor(share).astype(int)
    per_class[np.argsort(per_class - share)[: count - per_class.sum()]] += 1
    labels = np.repeat(np.arange(len(per_class)), per_class)
    return rng.permutation(labels).astype(np.int32)


def make_synthetic(
    num_train: int = 28709,
    num_val: int = 3589,
    num_test: int = 3589,
    seed: int = 0,
    label_noise: float = 0.0,
    chunk: int = 256,
    image_size: int = 48,
    channels: int = 1,
) -> FerData:
    """Procedural faces in FER2013's 7 classes and training proportions.

    Images are uint8[N, S, S] for channels=1 (the original faces at S=48) and uint8[N, S, S, 3]
    for channels=3, S = image_size. `label_noise` relabels that fraction of *training* examples
    uniformly at random (FER2013's annotations are noisy too); validation and test labels stay
    clean. `chunk` faces are rendered at a time at 48 px, proportionally fewer at larger sizes.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, chunk * 48 * 48 // (image_size * image_size))
    empty_shape = (0, image_size, image_size) + ((3,) if channels == 3 else ())
    splits = {}
    for name, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        labels = _class_labels(count, rng)
        images = np.concatenate(
            [
                render_faces(labels[s : s + chunk], rng, image_size, channels)
                for s in range(0, count, chunk)
            ]
            or [np.zeros(empty_shape, np.uint8)]
        )
        if name == "train" and label_noise > 0:
            flip = rng.random(count) < label_noise
            labels = np.where(flip, rng.integers(0, 7, count), labels).astype(np.int32)
        splits[name] = Split(images=images, labels=labels)
    return FerData(class_names=FER2013_CLASSES, splits=splits, source="synthetic")


# Sets at least this many 48 px pixels are cached (smaller ones render faster than a file reads).
CACHE_MIN_PIXELS = 4096 * 48 * 48
_PARAMETERS = inspect.signature(make_synthetic)


def _all_params(params: dict) -> dict:
    """make_synthetic's arguments with its defaults filled in (so that a default and the same
    value given explicitly are one cache entry)."""
    bound = _PARAMETERS.bind(**params)
    bound.apply_defaults()
    return dict(bound.arguments)


def cache_key(**params) -> str:
    """The cache file name of the faces make_synthetic(**params) renders: a digest of the
    parameters and of this module's source (any change to the renderer is a new key)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(_all_params(params), sort_keys=True).encode())
    return f"synthetic-{digest.hexdigest()[:20]}.npz"


def load_synthetic(cache_dir: str | None = None, **params) -> FerData:
    """make_synthetic(**params), kept in `cache_dir` (None: ~/.cache/ferjax or $FERJAX_CACHE, as
    for FER2013; "": not cached) as an .npz once rendered, so that a second run reads its faces
    instead of rendering them again (~0.25 ms a 48 px face on one core); small sets are
    rendered every time."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    p = _all_params(params)
    pixels = (p["num_train"] + p["num_val"] + p["num_test"]) * p["image_size"] ** 2 * p["channels"]
    if not cache_dir or pixels < CACHE_MIN_PIXELS:
        return make_synthetic(**params)
    path = os.path.join(cache_dir, cache_key(**params))
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                splits = {
                    name: Split(images=z[f"{name}_images"], labels=z[f"{name}_labels"])
                    for name in ("train", "val", "test")
                }
            return FerData(class_names=FER2013_CLASSES, splits=splits, source="synthetic")
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: render again and overwrite it
    data = make_synthetic(**params)
    arrays = {}
    for name, split in data.splits.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = split.images, split.labels
    save_npz(path, **arrays)
    return data

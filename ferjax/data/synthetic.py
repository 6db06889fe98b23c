"""Procedural faces: an embedded, deterministic stand-in for FER2013.

Each face is rendered analytically on a 48x48 grid. Its *expression* depends on the class
(mouth curvature, openness and width, eyebrow slant and height, eye openness, a one-sided sneer
for disgust) and its *identity and capture* vary at random (face shape, size, position,
rotation, skin and background tone, lighting gradient, blur, noise, occluders). Expression
parameters are drawn around class means with wide spreads, so neighbouring classes overlap:
a good model clearly beats a weak one, but nothing reaches 100%.

Generation is vectorised over chunks of faces (tens of thousands of faces per second).
"""

from __future__ import annotations

import numpy as np

from ferjax.data.dataset import FER2013_CLASSES, FerData, Split

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


def render_faces(labels: np.ndarray, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Renders one face per label. Returns uint8[N, size, size]."""
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
    img = background + (skin - background) * face
    dark = np.zeros_like(img)

    au = np.abs(u)  # faces are symmetric except for the sneer
    eye = np.sqrt(((au - eye_dx) / 0.11) ** 2 + ((v - eye_y) / (0.055 * eye_open)) ** 2)
    dark = np.maximum(dark, _soft(eye - 1.0, 0.12))
    inner_y, outer_y = brow_y + brow_slant, brow_y - brow_slant
    brow = _segment_distance(au, v, eye_dx - 0.15, inner_y, eye_dx + 0.14, outer_y)
    dark = np.maximum(dark, _soft(brow - 0.035, px))
    nose = _segment_distance(u, v, 0.0, 0.02, 0.0, 0.22)
    dark = np.maximum(dark, 0.4 * _soft(nose - 0.025, px))

    t = np.clip(u / mouth_w, -1.5, 1.5)
    lip_y = mouth_y - curve * t * t + curve * 0.3 - sneer * sneer_side * np.clip(t, 0, 1) * 1.5
    inside = np.clip(1.0 - t * t, 0.0, 1.0)
    half = 0.025 + mouth_open * inside
    mouth = (np.abs(v - lip_y) - half) * (np.abs(t) <= 1.0) + (np.abs(t) > 1.0) * 1.0
    dark = np.maximum(dark, _soft(mouth, px))
    img = img - feature_dark * dark * face

    # Capture: lighting gradient, occluders, blur, noise.
    phi = col(rng.uniform(0, 2 * np.pi, n))
    gain = col(rng.uniform(0.0, 0.35, n))
    img = img * (1.0 + gain * (x * np.cos(phi) + y * np.sin(phi)))
    occluded = rng.random(n) < 0.12
    if occluded.any():
        k = occluded.sum()
        ox, oy = col(rng.uniform(-0.9, 0.9, k)), col(rng.uniform(-0.9, 0.9, k))
        ow, oh = col(rng.uniform(0.15, 0.45, k)), col(rng.uniform(0.15, 0.45, k))
        box = (np.abs(x - ox) < ow) & (np.abs(y - oy) < oh)
        img[occluded] = np.where(box, col(rng.uniform(0, 1, k)), img[occluded])
    blur = col(rng.uniform(0.0, 1.0, n))
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    box3 = sum(padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3)) / 9.0
    img = img + blur * (box3 - img)
    img = img + col(rng.uniform(0.0, 0.05, n)) * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


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
) -> FerData:
    """Procedural faces in FER2013's 7 classes and training proportions.

    `label_noise` relabels that fraction of *training* examples uniformly at random (FER2013's
    annotations are noisy too); validation and test labels stay clean.
    """
    rng = np.random.default_rng(seed)
    splits = {}
    for name, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        labels = _class_labels(count, rng)
        images = np.concatenate(
            [render_faces(labels[s : s + chunk], rng) for s in range(0, count, chunk)]
            or [np.zeros((0, 48, 48), np.uint8)]
        )
        if name == "train" and label_noise > 0:
            flip = rng.random(count) < label_noise
            labels = np.where(flip, rng.integers(0, 7, count), labels).astype(np.int32)
        splits[name] = Split(images=images, labels=labels)
    return FerData(class_names=FER2013_CLASSES, splits=splits, source="synthetic")

"""RAF-DB and AffectNet readers, on small generated copies of the released layouts, and the
colour procedural faces they are drawn with."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ferjax.data.synthetic import make_synthetic, render_faces


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- procedural faces


def test_grayscale_faces_are_pinned():
    """Hashes computed with the grayscale-only renderer, before colour rendering existed."""
    data = make_synthetic(200, 50, 50, seed=0)
    arrays = [a for s in ("train", "val", "test") for a in (data.splits[s].images,
              data.splits[s].labels)]  # fmt: skip
    assert data.splits["train"].images.shape == (200, 48, 48)
    assert digest(*arrays) == "112e86b04088ab5a29770a7a329341c4"
    faces = render_faces(np.arange(7).repeat(3), np.random.default_rng(5), size=64)
    assert faces.shape == (21, 64, 64)
    assert digest(faces) == "7530eef55bb7824d9921bc7b3661ff36"
    noisy = make_synthetic(30, 10, 10, seed=1, label_noise=0.2)
    arrays = [a for s in ("train", "val", "test") for a in (noisy.splits[s].images,
              noisy.splits[s].labels)]  # fmt: skip
    assert digest(*arrays) == "485c2c015d379b7e983cc83da14a38db"


@pytest.mark.parametrize("size", [48, 100, 224])
def test_colour_faces(size):
    labels = np.arange(14) % 7
    faces = render_faces(labels, np.random.default_rng(2), size=size, channels=3)
    again = render_faces(labels, np.random.default_rng(2), size=size, channels=3)
    assert faces.shape == (14, size, size, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces, again)
    # Colour, not gray replicated: channels differ, and skin (centre) is redder than it is blue.
    assert np.abs(faces[..., 0].astype(int) - faces[..., 2]).mean() > 10
    centre = faces[
        :, size // 2 - size // 10 : size // 2, size // 2 - size // 10 : size // 2 + size // 10
    ]
    assert (centre[..., 0].mean(axis=(1, 2)) > centre[..., 2].mean(axis=(1, 2))).mean() > 0.8
    # Variety: backgrounds (corner pixels) of different hues.
    corners = faces[:, 1, 1].astype(int)
    assert len({tuple(c // 32) for c in corners}) >= 8
    # The same geometry as the grayscale face drawn from the same generator state.
    gray = render_faces(labels, np.random.default_rng(2), size=size)
    assert gray.shape == (14, size, size)


def test_make_synthetic_sizes_and_channels():
    data = make_synthetic(21, 7, 7, seed=4, image_size=64, channels=3)
    assert data.splits["train"].images.shape == (21, 64, 64, 3)
    assert data.splits["test"].images.shape == (7, 64, 64, 3)
    gray = make_synthetic(21, 7, 7, seed=4, image_size=64)
    assert gray.splits["val"].images.shape == (7, 64, 64)
    np.testing.assert_array_equal(gray.splits["train"].labels, data.splits["train"].labels)
    empty = make_synthetic(7, 0, 0, seed=4, image_size=100, channels=3)
    assert empty.splits["val"].images.shape == (0, 100, 100, 3)

"""Writes a PNG grid of training images before and after augmentation.

python -m ferjax.preview --config=configs/demo.py --out=augment_preview.png [--count=12]

Row 1: the original images; rows 2..: independent augmented draws of the same images, with the
exact ops of `augment.ops` (the function the train step runs).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ferjax.augment import make_augment  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags of this command, defined only when it is the program."""
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string("out", "augment_preview.png", "Output PNG.")
    flags.DEFINE_integer("count", 12, "Images per row.")
    flags.DEFINE_integer("draws", 4, "Augmented rows.")
    flags.DEFINE_integer("scale", 3, "Pixel magnification.")


def preview_grid(images: np.ndarray, spec: str, draws: int, seed: int = 0) -> np.ndarray:
    """uint8[(draws + 1) * H, count * W]: originals, then `draws` augmented rows."""
    augment = jax.jit(make_augment(spec))
    x = images.astype(np.float32)
    targets = np.zeros((len(images), 1), np.float32)
    rows = [x]
    for d in range(draws):
        aug, _ = augment(x, targets, jax.random.PRNGKey(seed * 1000 + d))
        rows.append(np.asarray(aug))
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    return np.clip(np.rint(grid), 0, 255).astype(np.uint8)


def main(argv):
    del argv
    from absl import logging
    from PIL import Image

    logging.set_verbosity(logging.WARNING)
    from ferjax.data.load import load_data
    from ferjax.errors import FerjaxError

    try:
        data = load_data(FLAGS.config)
        images = data.splits["train"].images[: FLAGS.count]
        grid = preview_grid(images, FLAGS.config.augment.ops, FLAGS.draws, FLAGS.config.train.seed)
    except FerjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    h, w = grid.shape
    Image.fromarray(grid).resize((w * FLAGS.scale, h * FLAGS.scale), Image.NEAREST).save(FLAGS.out)
    print(f"wrote {FLAGS.out}: originals + {FLAGS.draws} draws of {FLAGS.config.augment.ops!r}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)

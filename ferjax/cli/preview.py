"""Writes a PNG grid of training images before and after augmentation: the first row holds the
original images, each further row an independent draw of the config's `augment.ops` (the very
function the train step runs). Rows are labelled on the left.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from PIL import Image, ImageDraw

from ferjax.cli.flags import Parser, run
from ferjax.data.augment import make_augment
from ferjax.data.load import load_data

LABEL_WIDTH = 80


def preview_grid(images: np.ndarray, spec: str, draws: int, seed: int = 0) -> np.ndarray:
    """uint8[(draws + 1) * H, count * W, C]: the originals, then `draws` augmented rows."""
    augment = jax.jit(make_augment(spec))
    x = images.astype(np.float32)
    targets = np.zeros((len(images), 1), np.float32)
    rows = [x]
    for d in range(draws):
        aug, _ = augment(x, targets, jax.random.PRNGKey(seed * 1000 + d))
        rows.append(np.asarray(aug))
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    return np.clip(np.rint(grid), 0, 255).astype(np.uint8)


def labelled(grid: np.ndarray, rows: int, scale: int) -> Image.Image:
    """The grid magnified `scale` times with a label column: "original", "draw 1", ..."""
    h, w, c = grid.shape
    image = Image.fromarray(grid[..., 0] if c == 1 else grid)
    image = image.resize((w * scale, h * scale), Image.NEAREST).convert("RGB")
    canvas = Image.new("RGB", (image.width + LABEL_WIDTH, image.height), "white")
    canvas.paste(image, (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = image.height // rows
    for r in range(rows):
        draw.text((6, r * row_h + row_h // 2 - 6), "original" if r == 0 else f"draw {r}", "black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax preview", __doc__.split("\n\n")[0], config=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the PNG to write")
    where.add_argument("--workdir", help="write augment_preview.png into this run's workdir")
    p.add_argument("--count", type=int, default=12, help="images per row")
    p.add_argument("--draws", type=int, default=4, help="augmented rows")
    p.add_argument("--scale", type=int, default=3, help="pixel magnification")
    args = p.parse(argv)
    config = args.config
    data = load_data(config)
    images = data.splits["train"].images[: args.count]
    grid = preview_grid(images, config.augment.ops, args.draws, config.train.seed)
    out = args.out or os.path.join(args.workdir, "augment_preview.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    labelled(grid, args.draws + 1, args.scale).save(out)
    print(f"wrote {out}: originals + {args.draws} draws of {config.augment.ops!r}")
    return 0


if __name__ == "__main__":
    run(main)

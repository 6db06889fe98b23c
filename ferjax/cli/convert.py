"""Converts an ImageNet weight file into a VGG16 / ResNet-50 backbone file for model.init_from.

Sources (recognised by content): Keras .h5 / .weights.h5 (keras.applications, with or without
top), PyTorch torchvision / timm .safetensors, and .pth state dicts (needs torch). The output is
a msgpack file of the backbone's parameters and BatchNorm statistics (see ferjax/models/weights.py).
"""

from __future__ import annotations

import jax

from ferjax.cli.flags import Parser, run
from ferjax.models import weights


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax convert", __doc__.split("\n\n")[0])
    p.add_argument("src", help="Keras .h5 / .weights.h5, .safetensors or .pth file")
    p.add_argument("dst", help="output .msgpack file for model.init_from")
    p.add_argument("--model", required=True, choices=weights.WEIGHT_MODELS)
    args = p.parse(argv)
    converted = weights.convert(args.src, args.model)
    weights.save(converted, args.dst)
    meta = converted["meta"]
    count = len(jax.tree.leaves((converted["params"], converted["batch_stats"])))
    print(
        f"converted {args.src} ({meta['source_format']}, {meta['style']} style) -> {args.dst}: "
        f"{count} tensors of {args.model}"
    )
    return 0


if __name__ == "__main__":
    run(main)

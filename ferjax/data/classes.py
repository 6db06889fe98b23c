"""Class names and class subsets (e.g. happy,sad,neutral remapped to labels 0,1,2)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ferjax.data.dataset import FerData, Split
from ferjax.runtime.errors import ConfigError

# Spellings used by FER2013, FER+ and common image-folder datasets -> ferjax's canonical names.
ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "contempt": "contempt",
}


def canonical(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def parse_class_list(text: str) -> list[str]:
    return [c.strip() for c in str(text).split(",") if c.strip()]


def select_classes(data: FerData, wanted: list[str]) -> FerData:
    """Keeps only the `wanted` classes and remaps labels to 0..K-1 in the given order."""
    if not wanted:
        return data
    available = {canonical(n): i for i, n in enumerate(data.class_names)}
    order = []
    for name in wanted:
        c = canonical(name)
        if c not in available:
            raise ConfigError(
                f"data.classes: unknown class {name!r}; this dataset has "
                f"{', '.join(data.class_names)}"
            )
        if available[c] in order:
            raise ConfigError(f"data.classes: class {name!r} is listed twice")
        order.append(available[c])
    old_to_new = np.full(data.num_classes, -1, np.int32)
    old_to_new[order] = np.arange(len(order), dtype=np.int32)
    splits = {}
    for split_name, split in data.splits.items():
        keep = old_to_new[split.labels] >= 0
        part = split.take(keep)
        targets = None
        if part.targets is not None:
            targets = part.targets[:, order]
            targets = targets / np.maximum(targets.sum(axis=1, keepdims=True), 1e-12)
        splits[split_name] = Split(
            images=part.images,
            labels=old_to_new[part.labels],
            targets=targets,
            rows=part.rows,
            paths=part.paths,
        )
    names = tuple(canonical(data.class_names[i]) for i in order)
    return dataclasses.replace(data, class_names=names, splits=splits)

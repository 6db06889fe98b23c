"""Loads the dataset named by the config: read, set channels, clean, select classes, cap,
equalise. Every split then holds uint8 images [N, H, W, C] with C = data.channels."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ferjax.data.classes import parse_class_list, select_classes
from ferjax.data.cleaning import clean
from ferjax.data.dataset import SPLITS, FerData, to_channels
from ferjax.data.formats import FORMATS
from ferjax.data.preprocess import equalize_histogram
from ferjax.errors import ConfigError


def read_source(cfg: ml_collections.ConfigDict) -> FerData:
    """Reads `data.name` from `data.path` (FORMATS) with images as uint8[N, H, W, C]."""
    data = FORMATS.get(cfg.name)(cfg)
    splits = {
        n: dataclasses.replace(s, images=to_channels(s.images, cfg.channels))
        for n, s in data.splits.items()
    }
    return dataclasses.replace(data, splits=splits)


def cap_training_examples(data: FerData, count: int, seed: int) -> FerData:
    """Keeps a seeded random sample of `count` training examples (order preserved)."""
    train = data.splits["train"]
    if count <= 0 or count >= len(train):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    return dataclasses.replace(data, splits={**data.splits, "train": train.take(keep)})


def equalize(data: FerData) -> FerData:
    splits = {
        n: dataclasses.replace(s, images=equalize_histogram(s.images))
        for n, s in data.splits.items()
    }
    return dataclasses.replace(data, splits=splits)


def load_data(config: ml_collections.ConfigDict) -> FerData:
    data = read_source(config.data)
    data = clean(data, config.data.clean)
    data = select_classes(data, parse_class_list(config.data.classes))
    data = cap_training_examples(data, config.data.subset, config.train.seed)
    if config.data.equalize:
        data = equalize(data)
    for name in SPLITS:
        if name not in data.splits or len(data.splits[name]) == 0:
            raise ConfigError(
                f"data: the {name} split of {data.source or config.data.name} is empty"
            )
    return data

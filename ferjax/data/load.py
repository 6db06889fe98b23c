"""Loads the dataset named by the config: read, select classes, cap, report."""

from __future__ import annotations

import ml_collections
import numpy as np

from ferjax.data.classes import parse_class_list, select_classes
from ferjax.data.dataset import FerData, Split
from ferjax.data.fer2013 import load_fer2013
from ferjax.data.synthetic import make_synthetic
from ferjax.errors import ConfigError


def read_source(cfg: ml_collections.ConfigDict) -> FerData:
    """Reads `data.name` from `data.path` into memory, unmodified."""
    cache_dir = cfg.cache_dir or None
    if cfg.name == "synthetic":
        s = cfg.synthetic
        return make_synthetic(s.num_train, s.num_val, s.num_test, s.seed, s.label_noise)
    if cfg.name == "fer2013":
        if not cfg.path:
            raise ConfigError("data.path: empty; data.name=fer2013 needs the path of fer2013.csv")
        return load_fer2013(cfg.path, cfg.on_error, cache_dir)
    raise ConfigError(f"data.name: unknown source {cfg.name!r}")


def cap_training_examples(data: FerData, count: int, seed: int) -> FerData:
    """Keeps a seeded random sample of `count` training examples (order preserved)."""
    train = data.splits["train"]
    if count <= 0 or count >= len(train):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    splits = dict(data.splits)
    splits["train"] = train.take(keep)
    return FerData(data.class_names, splits, data.source, data.skipped)


def load_data(config: ml_collections.ConfigDict) -> FerData:
    data = read_source(config.data)
    data = select_classes(data, parse_class_list(config.data.classes))
    data = cap_training_examples(data, config.data.subset, config.train.seed)
    for name in ("train", "val", "test"):
        if len(data.splits.get(name, Split(np.zeros((0, 48, 48), np.uint8), np.zeros(0)))) == 0:
            raise ConfigError(
                f"data: the {name} split of {data.source or config.data.name} is empty"
            )
    return data

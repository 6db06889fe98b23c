"""Loads the dataset named by the config: read, clean, select classes, cap, preprocess."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ferjax.data.classes import parse_class_list, select_classes
from ferjax.data.cleaning import clean
from ferjax.data.dataset import FerData, Split
from ferjax.data.fer2013 import load_fer2013
from ferjax.data.synthetic import make_synthetic
from ferjax.errors import ConfigError


def _need_path(cfg: ml_collections.ConfigDict, what: str) -> None:
    if not cfg.path:
        raise ConfigError(f"data.path: empty; data.name={cfg.name} needs {what}")


def read_source(cfg: ml_collections.ConfigDict) -> FerData:
    """Reads `data.name` from `data.path` into memory, unmodified."""
    cache_dir = cfg.cache_dir or None
    if cfg.name == "synthetic":
        s = cfg.synthetic
        return make_synthetic(s.num_train, s.num_val, s.num_test, s.seed, s.label_noise)
    if cfg.name == "fer2013":
        _need_path(cfg, "the path of fer2013.csv")
        return load_fer2013(cfg.path, cfg.on_error, cache_dir)
    if cfg.name == "ferplus":
        from ferjax.data.ferplus import load_ferplus

        _need_path(cfg, "the path of fer2013.csv (FER+ takes its pixels)")
        return load_ferplus(cfg.path, cfg.ferplus_path, cfg.ferplus_mode, cfg.on_error, cache_dir)
    if cfg.name == "folder":
        from ferjax.data.folder import load_folder

        _need_path(cfg, "the root folder holding train/<class>/ and test/<class>/")
        return load_folder(cfg.path, cfg.image_size, cfg.val_fraction, cfg.split_seed, cfg.on_error)
    if cfg.name == "tfds":
        from ferjax.data.pipeline import hide_gpus_from_tensorflow
        from ferjax.data.tfds_builder import load_tfds

        hide_gpus_from_tensorflow()

        _need_path(cfg, "TFDS's manual folder holding fer2013.csv (and fer2013new.csv)")
        return load_tfds(cfg.path, cfg.tfds_data_dir, cfg.tfds_config, cfg.ferplus_mode)
    raise ConfigError(f"data.name: unknown source {cfg.name!r}")


def cap_training_examples(data: FerData, count: int, seed: int) -> FerData:
    """Keeps a seeded random sample of `count` training examples (order preserved)."""
    train = data.splits["train"]
    if count <= 0 or count >= len(train):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    splits = dict(data.splits)
    splits["train"] = train.take(keep)
    return dataclasses.replace(data, splits=splits)


def equalize(data: FerData) -> FerData:
    from ferjax.data.preprocess import equalize_histogram

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
    for name in ("train", "val", "test"):
        if len(data.splits.get(name, Split(np.zeros((0, 48, 48), np.uint8), np.zeros(0)))) == 0:
            raise ConfigError(
                f"data: the {name} split of {data.source or config.data.name} is empty"
            )
    return data

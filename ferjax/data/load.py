"""Loads the dataset named by the config: read (into memory, or into a shard store read on
demand for data.placement=disk), set channels and size, clean, select classes, cap, equalise.
Every split then holds uint8 images [N, S, S, C] (S = data.image_size, C = data.channels)."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ferjax.data.classes import parse_class_list, select_classes
from ferjax.data.cleaning import clean
from ferjax.data.dataset import SPLITS, FerData, resize_images, to_channels
from ferjax.data.input import is_stored, stream_from_disk
from ferjax.data.preprocess import equalize_histogram
from ferjax.data.sources.decode import load_index
from ferjax.data.sources.formats import FORMATS, streamable
from ferjax.data.store.stored import stored_data
from ferjax.runtime.errors import ConfigError


def read_source(cfg: ml_collections.ConfigDict) -> FerData:
    """Reads `data.name` from `data.path` (FORMATS) with images as uint8[N, S, S, C]: C =
    data.channels, S = data.image_size."""
    data = FORMATS.get(cfg.name).read(cfg)
    splits = {
        n: dataclasses.replace(
            s, images=resize_images(to_channels(s.images, cfg.channels), cfg.image_size)
        )
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


def read_indexed(cfg: ml_collections.ConfigDict) -> FerData | None:
    """For the sources that can be streamed from disk (a format with an index) under placement
    disk or auto: the index, then the images in a shard store (input.stream_from_disk) or
    decoded into memory.
    None when the source is read by read_source."""
    index_fn = FORMATS.get(cfg.name).index
    if index_fn is None or cfg.placement not in ("auto", "disk"):
        if cfg.placement == "disk":
            raise ConfigError(
                f"data.placement: disk reads a shard store, which data.name={cfg.name} has no "
                f"index for (streamable sources: {', '.join(streamable())}); use device or host"
            )
        return None
    index = index_fn(cfg)
    faces = sum(len(records) for records in index.splits.values())
    need = faces * cfg.image_size**2 * cfg.channels
    if stream_from_disk(cfg.placement, need):
        return stored_data(index, cfg)
    return load_index(index, cfg.image_size, cfg.channels, cfg.workers or None)


def load_data(config: ml_collections.ConfigDict) -> FerData:
    data = read_indexed(config.data) or read_source(config.data)
    data = clean(data, config.data.clean)
    data = select_classes(data, parse_class_list(config.data.classes))
    data = cap_training_examples(data, config.data.subset, config.train.seed)
    if config.data.equalize:
        if is_stored(data.splits["train"].images):
            raise ConfigError("data.equalize: not available with data.placement=disk")
        data = equalize(data)
    for name in SPLITS:
        if name not in data.splits or len(data.splits[name]) == 0:
            raise ConfigError(
                f"data: the {name} split of {data.source or config.data.name} is empty"
            )
    return data

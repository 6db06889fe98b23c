"""The data sources `data.name` can name: one reader function each, registered in FORMATS.

A reader takes the `data` section of the config and returns a FerData read from `data.path`,
unmodified (cleaning, class selection and channel conversion follow in `ferjax.data.load`).
Adding a format is a reader module plus one function and one registration here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

from ferjax.data.dataset import FerData
from ferjax.data.sources.affectnet import index_affectnet, load_affectnet
from ferjax.data.sources.decode import FaceIndex
from ferjax.data.sources.fer2013 import load_fer2013
from ferjax.data.sources.ferplus import load_ferplus
from ferjax.data.sources.folder import load_folder
from ferjax.data.sources.rafdb import index_rafdb, load_rafdb
from ferjax.data.sources.synthetic import load_synthetic
from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import Registry

FORMATS = Registry("data.name")


@dataclasses.dataclass(frozen=True)
class Format:
    """read(cfg) -> FerData; index(cfg) -> FaceIndex for sources that can be streamed from a
    shard store (None for the others)."""

    read: Callable[[ml_collections.ConfigDict], FerData]
    index: Callable[[ml_collections.ConfigDict], FaceIndex] | None = None


def source(name: str, index: Callable | None = None) -> Callable:
    """Registers the decorated reader as FORMATS[name] (with its index function, if any)."""

    def add(read):
        FORMATS.register(name, Format(read, index))
        return read

    return add


def streamable() -> tuple[str, ...]:
    """The data.name values that can be streamed from disk (data.placement=disk)."""
    return tuple(n for n in FORMATS.names() if FORMATS.get(n).index is not None)


# data.tfds_config: the configs of ferjax/data/sources/tfds_builder.py.
TFDS_CONFIGS = ("fer2013", "ferplus")


def _need_path(cfg: ml_collections.ConfigDict, what: str) -> None:
    if not cfg.path:
        raise ConfigError(f"data.path: empty; data.name={cfg.name} needs {what}")


def workers(cfg: ml_collections.ConfigDict) -> int | None:
    """data.workers: image-decoding threads (0 = every core)."""
    return cfg.workers or None


@source("synthetic")
def _synthetic(cfg: ml_collections.ConfigDict) -> FerData:
    s = cfg.synthetic
    return load_synthetic(
        cfg.cache_dir or None,
        num_train=s.num_train,
        num_val=s.num_val,
        num_test=s.num_test,
        seed=s.seed,
        label_noise=s.label_noise,
        image_size=cfg.image_size,
        channels=cfg.channels,
    )


@source("fer2013")
def _fer2013(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "the path of fer2013.csv")
    return load_fer2013(cfg.path, cfg.on_error, cfg.cache_dir or None)


@source("ferplus")
def _ferplus(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "the path of fer2013.csv (FER+ takes its pixels)")
    return load_ferplus(
        cfg.path, cfg.ferplus_path, cfg.ferplus_mode, cfg.on_error, cfg.cache_dir or None
    )


@source("folder")
def _folder(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "the root folder holding train/<class>/ and test/<class>/")
    return load_folder(
        cfg.path, cfg.image_size, cfg.val_fraction, cfg.split_seed, cfg.on_error, cfg.channels
    )


def _rafdb_index(cfg: ml_collections.ConfigDict) -> FaceIndex:
    return index_rafdb(cfg.path, cfg.rafdb_aligned, cfg.val_fraction, cfg.split_seed, cfg.on_error)


@source("rafdb", index=_rafdb_index)
def _rafdb(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "RAF-DB's basic/ folder (EmoLabel/list_patition_label.txt, Image/aligned/)")
    return load_rafdb(
        cfg.path,
        cfg.image_size,
        cfg.channels,
        cfg.rafdb_aligned,
        cfg.val_fraction,
        cfg.split_seed,
        cfg.on_error,
        workers(cfg),
    )


def _affectnet_index(cfg: ml_collections.ConfigDict) -> FaceIndex:
    return index_affectnet(
        cfg.path, cfg.affectnet_classes, cfg.val_fraction, cfg.split_seed, cfg.on_error
    )


@source("affectnet", index=_affectnet_index)
def _affectnet(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "the AffectNet folder holding training.csv, validation.csv and the images")
    return load_affectnet(
        cfg.path,
        cfg.image_size,
        cfg.channels,
        cfg.affectnet_classes,
        cfg.val_fraction,
        cfg.split_seed,
        cfg.on_error,
        workers(cfg),
    )


@source("tfds")
def _tfds(cfg: ml_collections.ConfigDict) -> FerData:
    _need_path(cfg, "TFDS's manual folder holding fer2013.csv (and fer2013new.csv)")
    # Imported here: tensorflow_datasets costs seconds to import and only this source needs it.
    from ferjax.runtime.tensorflow import hide_gpus_from_tensorflow

    hide_gpus_from_tensorflow()
    from ferjax.data.sources.tfds_builder import load_tfds

    return load_tfds(cfg.path, cfg.tfds_data_dir, cfg.tfds_config, cfg.ferplus_mode)

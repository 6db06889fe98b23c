"""TensorFlow Datasets builder for FER2013 (config `fer2013`) and FER+ (config `ferplus`).

FER2013 cannot be downloaded automatically (Kaggle terms), so this builder follows TFDS's
manual-download convention: put fer2013.csv (and fer2013new.csv for FER+) in the manual
folder, then `tfds build ferjax/data/sources/tfds_builder.py --manual_dir=DIR` or, from Python,
`tfds.builder("fer2013/ferplus", data_dir=...).download_and_prepare(download_config=...)`.
`data.name=tfds` does the latter with `data.path` as the manual folder.

Rows are validated by ferjax's readers (any bad row stops the build with one line). The FER+
config keeps rows whose top vote is an emotion and stores the raw votes, so that either label
mode (majority or probability) can be applied when loading.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ferjax.data.dataset import FER2013_CLASSES, FerData, Split
from ferjax.data.sources.fer2013 import read_fer2013_rows
from ferjax.data.sources.ferplus import (
    FERPLUS_CLASSES,
    VOTE_COLUMNS,
    labels_from_votes,
    read_ferplus_votes,
)
from ferjax.runtime.errors import DataFormatError, DataNotFoundError

TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}


class Fer2013(tfds.core.GeneratorBasedBuilder):
    """FER2013 faces (48x48 grayscale), with the FER2013 or FER+ labels."""

    # TFDS derives this through importlib_resources, which etils does not always install; the
    # module's own file is the same answer without that dependency.
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: fer2013 and ferplus configs."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="fer2013", description="Kaggle FER2013 labels (7 classes)."),
        tfds.core.BuilderConfig(
            name="ferplus", description="FER+ labels (8 classes) with the 10 raw vote counts."
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download fer2013.tar.gz from https://www.kaggle.com/c/challenges-in-representation-learning-
    facial-expression-recognition-challenge/data and place the extracted fer2013.csv in
    manual_dir. For the ferplus config also place fer2013new.csv from
    https://github.com/microsoft/FERPlus in manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        ferplus = self.builder_config.name == "ferplus"
        features = {
            "image": tfds.features.Image(shape=(48, 48, 1)),
            "label": tfds.features.ClassLabel(
                names=FERPLUS_CLASSES if ferplus else FER2013_CLASSES
            ),
            "row": np.int64,
        }
        if ferplus:
            features["votes"] = tfds.features.Tensor(shape=(len(VOTE_COLUMNS),), dtype=np.int32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            homepage="https://github.com/microsoft/FERPlus" if ferplus else None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = os.fspath(dl_manager.manual_dir)
        files = ["fer2013.csv"] + (
            ["fer2013new.csv"] if self.builder_config.name == "ferplus" else []
        )
        for name in files:
            if not os.path.isfile(os.path.join(manual, name)):
                raise DataNotFoundError(
                    f"{os.path.join(manual, name)}: file not found; "
                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
                )
        images, labels, usage, rows, _ = read_fer2013_rows(os.path.join(manual, "fer2013.csv"))
        votes = None
        if self.builder_config.name == "ferplus":
            path = os.path.join(manual, "fer2013new.csv")
            votes, _, _, errors = read_ferplus_votes(path)
            errors.finish()
            if len(votes) != len(rows):
                raise DataFormatError(
                    f"{path}: has {len(votes)} data rows but fer2013.csv has {len(rows)}; "
                    "expected the same rows in the same order"
                )
            keep, labels, _, reason = labels_from_votes(votes, "probability")
            images, labels, rows, votes = images[keep], labels[keep], rows[keep], votes[keep]
            usage = [u for u, k in zip(usage, keep) if k]
        usage = np.asarray(usage)
        return {
            tfds_name: self._generate_examples(
                images[usage == split],
                labels[usage == split],
                rows[usage == split],
                None if votes is None else votes[usage == split],
            )
            for split, tfds_name in TFDS_SPLITS.items()
        }

    def _generate_examples(self, images, labels, rows, votes):
        for k in range(len(rows)):
            example = {"image": images[k][..., None], "label": int(labels[k]), "row": int(rows[k])}
            if votes is not None:
                example["votes"] = votes[k]
            yield int(rows[k]), example


def load_tfds(
    manual_dir: str, data_dir: str = "", config_name: str = "fer2013", mode: str = "majority"
) -> FerData:
    """Prepares (once) and loads the TFDS dataset into a FerData.

    manual_dir holds fer2013.csv (+ fer2013new.csv); data_dir is TFDS's data folder (empty =
    TFDS's default, ~/tensorflow_datasets). For ferplus, `mode` picks the label mode.
    """
    builder = Fer2013(config=config_name, data_dir=data_dir or None)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    splits, skipped = {}, Counter()
    for split, tfds_name in TFDS_SPLITS.items():
        arrays = tfds.as_numpy(builder.as_dataset(split=tfds_name, batch_size=-1))
        order = np.argsort(arrays["row"], kind="stable")
        images = arrays["image"][order, :, :, 0].astype(np.uint8)
        labels = arrays["label"][order].astype(np.int32)
        rows = arrays["row"][order].astype(np.int64)
        targets = None
        if config_name == "ferplus":
            keep, labels, targets, reason = labels_from_votes(arrays["votes"][order], mode)
            skipped.update(Counter(reason[~keep].tolist()))
            images, labels, rows = images[keep], labels[keep], rows[keep]
            targets = None if targets is None else targets[keep]
        splits[split] = Split(images=images, labels=labels, targets=targets, rows=rows)
    return FerData(
        class_names=tuple(builder.info.features["label"].names),
        splits=splits,
        source=f"tfds:{builder.name}/{config_name} ({builder.data_dir})",
        skipped=skipped,
    )

"""Cleaning: blank images, duplicates, cross-split leakage, near-duplicates, label-noise files."""

from __future__ import annotations

import json
import os
import runpy

import numpy as np
import pytest

from ferjax.data.cleaning import clean, near_duplicate_mask, perceptual_hashes, summary_line
from ferjax.data.dataset import FerData, Split
from ferjax.data.load import load_data
from ferjax.data.sources.fer2013 import write_fer2013_csv
from ferjax.data.sources.synthetic import make_synthetic
from ferjax.runtime.errors import DataFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config():
    return runpy.run_path(os.path.join(ROOT, "configs", "default.py"))["get_config"]()


def planted() -> FerData:
    """14/7/7 procedural faces (labels cycle 0..6) with planted defects:

    train 0 all black (angry), train 1 all white (disgust), val 2 near-constant (fear);
    train 5, 6 (surprise, neutral) are copies of train 3 (happy);
    test 4 == train 8 (leak; train 8 is disgust); val 3 (happy) == test 5 (val/test leak);
    train 10 (happy) is train 9 (fear) with 3 pixels changed by 1 (near duplicate).
    Indices are 0-based; Split.rows are 1-based.
    """
    data = make_synthetic(14, 7, 7, seed=5)
    for split in data.splits.values():
        split.labels = (np.arange(len(split)) % 7).astype(np.int32)
    tr, va, te = (data.splits[s].images for s in ("train", "val", "test"))
    tr[0], tr[1] = 0, 255
    va[2] = 100 + (np.arange(48 * 48).reshape(48, 48) % 2)  # std 0.5
    tr[5], tr[6] = tr[3], tr[3]
    te[4] = tr[8]
    va[3] = te[5]
    tr[10] = tr[9]
    tr[10, 0, :3] = np.minimum(tr[10, 0, :3].astype(int) + 1, 255)
    return data


def test_clean_counts_by_reason_split_and_class():
    cfg = default_config().data.clean
    data = planted()
    out = clean(data, cfg)
    assert out.cleaning == {
        "blank": {
            "total": 3,
            "by_split": {"train": 2, "val": 1},
            "by_class": {"angry": 1, "disgust": 1, "fear": 1},
            "rows": {"train": [1, 2], "val": [3]},
        },
        "duplicate": {
            "total": 2,
            "by_split": {"train": 2},
            "by_class": {"surprise": 1, "neutral": 1},
            "rows": {"train": [6, 7]},
        },
        "leak": {
            "total": 2,
            "by_split": {"train": 1, "val": 1},
            "by_class": {"disgust": 1, "happy": 1},
            "rows": {"train": [9], "val": [4]},
        },
    }
    assert [len(out.splits[s]) for s in ("train", "val", "test")] == [14 - 5, 7 - 2, 7]
    np.testing.assert_array_equal(out.splits["test"].images, data.splits["test"].images)
    assert out.splits["train"].rows.tolist() == [3, 4, 5, 8, 10, 11, 12, 13, 14]
    assert summary_line(out.cleaning) == "cleaning: removed 7 row(s) (blank 3, duplicate 2, leak 2)"


def test_clean_switches_off_and_near_duplicates_on():
    cfg = default_config().data.clean
    cfg.blank = cfg.duplicates = cfg.cross_split = False
    out = clean(planted(), cfg)
    assert out.cleaning == {} and len(out.splits["train"]) == 14
    cfg.near_duplicates = True
    out = clean(planted(), cfg)
    # Near duplicates include the exact ones: train rows 6, 7 (copies of row 4), 11 (3 pixels
    # off row 10), and row 9 (a copy of a test image); the black and white frames stay apart.
    assert out.cleaning["near duplicate"] == {
        "total": 4,
        "by_split": {"train": 4},
        "by_class": {"surprise": 1, "neutral": 1, "happy": 1, "disgust": 1},
        "rows": {"train": [6, 7, 11, 9]},
    }
    assert out.splits["train"].rows.tolist() == [1, 2, 3, 4, 5, 8, 10, 12, 13, 14]


def test_perceptual_hash_is_robust_and_discriminative():
    faces = make_synthetic(40, 0, 0, seed=2).splits["train"].images
    h = perceptual_hashes(faces)
    assert h.shape == (40, 32) and h.dtype == np.uint8
    changed = np.rint(faces * 0.9 + 10).astype(np.uint8)  # lower contrast, brighter
    hc = perceptual_hashes(changed)
    bits = lambda a, b: np.unpackbits(a ^ b, axis=-1).sum(-1)  # noqa: E731
    assert bits(h, hc).max() <= 8
    dist = bits(h[:, None], h[None, :])
    assert dist[~np.eye(40, dtype=bool)].min() > 30
    assert near_duplicate_mask(h, 20).sum() == 0
    assert near_duplicate_mask(h, 20, against=hc[3:4]).tolist() == [k == 3 for k in range(40)]
    dup = np.concatenate([h, hc[5:6], h[7:8]])
    assert np.flatnonzero(near_duplicate_mask(dup, 20)).tolist() == [40, 41]
    assert np.flatnonzero(near_duplicate_mask(dup, 0)).tolist() == [41]


def test_label_noise_file(tmp_path):
    cfg = default_config().data.clean
    data = planted()
    path = tmp_path / "noise.txt"
    path.write_text(
        "# drop, relabel, split-qualified, already blank, not in data\n"
        "12\n13,happiness\ntest:2,drop\nval:2,sad\ntrain:1\n999\n"
    )
    cfg.label_noise_file = str(path)
    out = clean(data, cfg)
    assert out.cleaning["label noise dropped"] == {
        "total": 2,
        "by_split": {"train": 1, "test": 1},
        "by_class": {"sad": 1, "disgust": 1},
        "rows": {"train": [12], "test": [2]},
    }
    # Relabelled rows are counted under their original class.
    assert out.cleaning["relabelled"] == {
        "total": 2,
        "by_split": {"train": 1, "val": 1},
        "by_class": {"surprise": 1, "disgust": 1},
        "rows": {"train": [13], "val": [2]},
    }
    assert out.cleaning["label noise id not found"]["total"] == 2
    train = out.splits["train"]
    assert train.labels[train.rows.tolist().index(13)] == 3
    assert out.splits["val"].labels[out.splits["val"].rows.tolist().index(2)] == 4
    path.write_text("12\nx7\n")
    with pytest.raises(DataFormatError) as e:
        clean(planted(), cfg)
    assert str(e.value) == (
        f"{path}: line 2: row id 'x7', expected a row number >= 1 as '[split:]row' or "
        "'[split:]row,class'"
    )
    path.write_text("12,happy\n3,elated\n")
    with pytest.raises(DataFormatError) as e:
        clean(planted(), cfg)
    assert str(e.value) == (
        f"{path}: line 2: class 'elated', expected 'drop' or one of angry, disgust, fear, "
        "happy, sad, surprise, neutral"
    )


def test_label_noise_relabels_soft_targets():
    data = planted()
    for split in data.splits.values():
        split.targets = np.eye(7, dtype=np.float32)[split.labels] * 0.5 + 0.5 / 7
    cfg = default_config().data.clean
    cfg.blank = cfg.duplicates = cfg.cross_split = False
    from ferjax.data.cleaning import CleaningLog, apply_label_noise

    splits = dict(data.splits)
    apply_label_noise(splits, [("train", 3, 0)], 7, CleaningLog(data.class_names))
    np.testing.assert_array_equal(splits["train"].targets[2], np.eye(7)[0])
    assert splits["train"].labels[2] == 0
    assert splits["val"].labels[2] == 2 and splits["val"].targets[2, 2] < 1


def test_load_data_cleans_before_class_selection(tmp_path):
    data = planted()
    path = str(tmp_path / "fer2013.csv")
    write_fer2013_csv(path, data, quote_pixels=True)
    cfg = default_config()
    cfg.data.name, cfg.data.path, cfg.data.cache_dir = "fer2013", path, str(tmp_path / "c")
    cfg.data.classes = "happiness,sad,fear"
    out = load_data(cfg)
    assert out.class_names == ("happy", "sad", "fear")
    assert out.cleaning["leak"]["by_class"] == {"disgust": 1, "happy": 1}
    train = out.splits["train"]
    # Kept train rows (1-based CSV rows) and their remapped labels.
    assert train.rows.tolist() == [3, 4, 5, 10, 11, 12]
    assert train.labels.tolist() == [2, 0, 1, 2, 0, 1]
    json.dumps(out.cleaning)  # goes into data_report.json as is


def test_main_writes_cleaning_into_data_report(tmp_path, monkeypatch):
    import ferjax.cli.train as main

    data = planted()
    path = str(tmp_path / "fer2013.csv")
    write_fer2013_csv(path, data)
    cfg = default_config()
    cfg.data.name, cfg.data.path, cfg.data.cache_dir = "fer2013", path, str(tmp_path / "c")
    monkeypatch.setattr(main, "train_and_evaluate", lambda config, workdir, data, clock: {})
    main.run_training(cfg, str(tmp_path / "work"))
    report = json.load(open(tmp_path / "work" / "data_report.json"))
    assert report["cleaning"]["blank"]["total"] == 3
    assert report["splits"]["train"]["examples"] == 9


def test_fer2013_skip_then_clean_round_trip(tmp_path):
    """Bad rows are skipped and counted, cleaning counts are separate and exact."""
    data = planted()
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(str(path), data)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",Training", ",Trainig")
    lines[4] = "9" + lines[4][1:]
    path.write_text("\n".join(lines) + "\n")
    cfg = default_config()
    cfg.data.name, cfg.data.path, cfg.data.cache_dir = "fer2013", str(path), str(tmp_path / "c")
    cfg.data.on_error = "skip"
    out = load_data(cfg)
    assert dict(out.skipped) == {"unknown Usage": 1, "label out of range": 1}
    # Rows 2 (white, blank) and 4 (the original of the duplicates) are gone before cleaning.
    assert out.cleaning["blank"]["total"] == 2
    assert out.cleaning["duplicate"]["total"] == 1
    assert isinstance(out, FerData) and isinstance(out.splits["val"], Split)

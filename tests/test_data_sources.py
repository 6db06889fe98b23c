"""Readers for every format, on small generated files in the exact real formats."""

from __future__ import annotations

import os
import runpy

import numpy as np
import pytest
from PIL import Image

from ferjax.config.validate import validate
from ferjax.data.classes import select_classes
from ferjax.data.dataset import FER2013_CLASSES
from ferjax.data.load import load_data, read_source
from ferjax.data.preprocess import equalize_histogram, median3x3
from ferjax.data.sources import synthetic
from ferjax.data.sources.fer2013 import load_fer2013, read_fer2013_rows, write_fer2013_csv
from ferjax.data.sources.ferplus import FERPLUS_CLASSES, load_ferplus
from ferjax.data.sources.folder import load_folder
from ferjax.data.sources.rows import BadRowsError
from ferjax.data.sources.synthetic import make_synthetic
from ferjax.runtime.errors import ConfigError, DataFormatError, DataNotFoundError

HEADER = "emotion,pixels,Usage\n"
PLUS_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config():
    return runpy.run_path(os.path.join(ROOT, "configs", "default.py"))["get_config"]()


@pytest.fixture(scope="module")
def faces():
    """Small procedural faces with every class in every split (labels cycle 0..6)."""
    data = make_synthetic(14, 7, 7, seed=3)
    for split in data.splits.values():
        split.labels = (np.arange(len(split)) % 7).astype(np.int32)
    return data


def pixels(value: int = 7, count: int = 2304) -> str:
    return " ".join([str(value)] * count)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- fer2013


def test_fer2013_quoted_pixels_round_trip(tmp_path, faces):
    path = str(tmp_path / "fer2013.csv")
    write_fer2013_csv(path, faces, quote_pixels=True)
    assert open(path).read().splitlines()[1].split(",")[1].startswith('"')
    data = load_fer2013(path, cache_dir="")
    assert data.class_names == FER2013_CLASSES
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(data.splits[name].images, faces.splits[name].images)
        np.testing.assert_array_equal(data.splits[name].labels, faces.splits[name].labels)
    np.testing.assert_array_equal(data.splits["val"].rows, np.arange(15, 22))


BAD_ROWS = [
    # (row text, reason, message after "row 2 (line 3): ")
    (f"3,{pixels()},Training,extra", "wrong number of fields",
     "expected 3 fields (emotion,pixels,Usage), got 4"),
    (f"3,{pixels()}", "wrong number of fields", "expected 3 fields (emotion,pixels,Usage), got 2"),
    (f"7,{pixels()},Training", "label out of range", "emotion is '7', expected an integer in 0..6"),
    (f"x,{pixels()},Training", "label out of range", "emotion is 'x', expected an integer in 0..6"),
    (f"-1,{pixels()},Training", "label out of range",
     "emotion is '-1', expected an integer in 0..6"),
    (f"3,{pixels()},Train", "unknown Usage",
     "Usage is 'Train', expected Training, PublicTest or PrivateTest"),
    (f"3,{pixels(count=2303)},Training", "wrong pixel count",
     "expected 2304 pixel values (48x48), got 2303"),
    (f"3,{pixels(count=2305)},Training", "wrong pixel count",
     "expected 2304 pixel values (48x48), got 2305"),
    ("3,,Training", "wrong pixel count", "expected 2304 pixel values (48x48), got 0"),
    (f"3,{pixels()[:-1]}256,Training", "bad pixel value",
     "pixel value 2304 is 256, expected an integer in 0..255"),
    (f"3,1 -4 {pixels(count=2302)},Training", "bad pixel value",
     "pixel value 2 is '-4', expected an integer in 0..255"),
    (f"3,1 2.5 {pixels(count=2302)},Training", "bad pixel value",
     "pixel value 2 is '2.5', expected an integer in 0..255"),
    (f"3,1 nan {pixels(count=2302)},Training", "bad pixel value",
     "pixel value 2 is 'nan', expected an integer in 0..255"),
    ("", "empty row", "empty row"),
]  # fmt: skip


SKIP_HINT = (
    "hint: --config.data.on_error=skip drops them and counts them by reason in data_report.json"
)


@pytest.mark.parametrize("row,reason,message", BAD_ROWS, ids=[r[1] for r in BAD_ROWS])
def test_fer2013_bad_row_is_named_exactly(tmp_path, row, reason, message):
    text = HEADER + f'0,"{pixels()}",Training\n' + row + "\n" + f"1,{pixels()},PublicTest\n"
    path = write(tmp_path / "fer2013.csv", text)
    with pytest.raises(BadRowsError) as e:
        read_fer2013_rows(path, "raise")
    assert str(e.value).splitlines() == [
        f"{path}: 1 bad row(s) ({reason}: 1)",
        f"  {path}: row 2 (line 3): {message}",
        SKIP_HINT,
    ]


def test_fer2013_raise_lists_every_bad_row_in_file_order(tmp_path):
    """Pixels are parsed after the fields; all bad rows are reported at once, in row order."""
    rows = [f"0,{pixels()},Training", f"0,{pixels(count=5)},Training", f"9,{pixels()},Training"]
    path = write(tmp_path / "fer2013.csv", HEADER + "\n".join(rows) + "\n")
    with pytest.raises(BadRowsError) as e:
        read_fer2013_rows(path)
    assert str(e.value).splitlines() == [
        f"{path}: 2 bad row(s) (label out of range: 1, wrong pixel count: 1)",
        f"  {path}: row 2 (line 3): expected 2304 pixel values (48x48), got 5",
        f"  {path}: row 3 (line 4): emotion is '9', expected an integer in 0..6",
        SKIP_HINT,
    ]


def test_fer2013_raise_shows_twenty_rows_and_counts_the_rest(tmp_path):
    rows = [f"0,{pixels()},Training"] + [f"8,{pixels()},Training"] * 25
    rows += [f"0,{pixels(count=3)},PublicTest"] * 5
    path = write(tmp_path / "fer2013.csv", HEADER + "\n".join(rows) + "\n")
    with pytest.raises(BadRowsError) as e:
        read_fer2013_rows(path)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{path}: 30 bad row(s) (label out of range: 25, wrong pixel count: 5)"
    assert len(lines) == 1 + 20 + 2
    assert lines[1] == f"  {path}: row 2 (line 3): emotion is '8', expected an integer in 0..6"
    assert lines[-2] == "  ... and 10 more" and lines[-1] == SKIP_HINT


@pytest.mark.parametrize("tail", ["", "\n", "\n\n\n", "\r\n\r\n"])
def test_fer2013_trailing_empty_lines_are_not_rows(tmp_path, tail):
    text = HEADER + f"3,{pixels()},Training\n5,{pixels(9)},PrivateTest" + tail
    path = write(tmp_path / "fer2013.csv", text)
    images, labels, usage, rows, errors = read_fer2013_rows(path, "raise")
    assert labels.tolist() == [3, 5] and usage == ["train", "test"] and len(errors) == 0


def test_fer2013_skip_counts_every_reason(tmp_path):
    good = [f"{k % 7},{pixels(k)},{u}" for k, u in enumerate(["Training"] * 3 + ["PublicTest",
            "PrivateTest"])]  # fmt: skip
    rows = good[:2] + [r for r, _, _ in BAD_ROWS if r] + good[2:]
    path = write(tmp_path / "fer2013.csv", HEADER + "\n".join(rows) + "\n")
    images, labels, usage, kept_rows, errors = read_fer2013_rows(path, "skip")
    expected = {}
    for r, reason, _ in BAD_ROWS:
        if r:
            expected[reason] = expected.get(reason, 0) + 1
    assert dict(errors.counts) == expected
    assert len(images) == 5 and usage == ["train"] * 3 + ["val", "test"]
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(kept_rows, [1, 2, len(rows) - 2, len(rows) - 1, len(rows)])
    data = load_fer2013(path, "skip", cache_dir="")
    assert dict(data.skipped) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty file, expected a header 'emotion,pixels,Usage'"),
        (HEADER, "no data rows after the header"),
        (
            "emotion,pixel,Usage\n0,1,Training\n",
            "line 1: header 'emotion,pixel,Usage' lacks column(s) pixels; "
            "expected 'emotion,pixels,Usage'",
        ),
    ],
)
def test_fer2013_file_level_errors(tmp_path, text, message):
    path = write(tmp_path / "fer2013.csv", text)
    with pytest.raises(DataFormatError) as e:
        read_fer2013_rows(path, "skip")
    assert str(e.value) == f"{path}: {message}"


def test_fer2013_missing_file_and_bom(tmp_path):
    with pytest.raises(DataNotFoundError, match="file not found"):
        load_fer2013(str(tmp_path / "nope.csv"), cache_dir="")
    path = write(tmp_path / "bom.csv", "\ufeff" + HEADER + f"5,{pixels(9)},PrivateTest\n")
    images, labels, usage, _, _ = read_fer2013_rows(path)
    assert usage == ["test"] and labels.tolist() == [5] and images.max() == 9


# ---------------------------------------------------------------- FER+

# (votes neutral..contempt,unknown,NF; majority label (FER+ order) or skip reason)
PLUS_ROWS = [
    ((0, 8, 1, 0, 0, 0, 0, 0, 1, 0), 1),  # happy, clear majority
    ((6, 0, 0, 0, 0, 0, 0, 4, 0, 0), 0),  # neutral
    ((0, 0, 0, 0, 0, 0, 0, 10, 0, 0), 7),  # contempt
    ((5, 5, 0, 0, 0, 0, 0, 0, 0, 0), "ferplus no majority"),  # tie
    ((4, 3, 3, 0, 0, 0, 0, 0, 0, 0), "ferplus no majority"),  # plurality only
    ((0, 0, 0, 0, 0, 0, 0, 0, 0, 10), "ferplus top vote NF"),
    ((0, 0, 0, 2, 6, 0, 0, 0, 1, 1), 4),  # angry (val)
    ((1, 1, 0, 0, 0, 0, 0, 0, 8, 0), "ferplus top vote unknown"),
    ((0, 0, 7, 0, 0, 0, 3, 0, 0, 0), 2),  # surprise (test)
    ((4, 0, 0, 0, 0, 0, 0, 0, 4, 2), "ferplus top vote unknown"),  # tie with unknown
]


def write_ferplus_pair(tmp_path, plus_rows=PLUS_ROWS, n_fer=None):
    usages = ["Training"] * 6 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    n_fer = len(plus_rows) if n_fer is None else n_fer
    fer = [f"{k % 7},{pixels(k + 10)},{usages[k % 10]}" for k in range(n_fer)]
    fer_path = write(tmp_path / "fer2013.csv", HEADER + "\n".join(fer) + "\n")
    plus = [
        f"{usages[k]},{'' if v[9] == 10 else f'fer{k:07d}.png'},{','.join(map(str, v))}"
        for k, (v, _) in enumerate(plus_rows)
    ]
    write(tmp_path / "fer2013new.csv", PLUS_HEADER + "\n".join(plus) + "\n")
    return fer_path


def test_ferplus_majority(tmp_path):
    path = write_ferplus_pair(tmp_path)
    data = load_ferplus(path, mode="majority", cache_dir="")
    assert data.class_names == FERPLUS_CLASSES
    assert FERPLUS_CLASSES == (
        "neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"
    )  # fmt: skip
    assert dict(data.skipped) == {
        "ferplus no majority": 2,
        "ferplus top vote NF": 1,
        "ferplus top vote unknown": 2,
    }
    train = data.splits["train"]
    assert train.rows.tolist() == [1, 2, 3] and train.labels.tolist() == [1, 0, 7]
    assert train.targets is None
    assert data.splits["val"].rows.tolist() == [7] and data.splits["val"].labels.tolist() == [4]
    assert data.splits["test"].rows.tolist() == [9] and data.splits["test"].labels.tolist() == [2]
    # Pixels of row r come from fer2013.csv's row r.
    assert data.splits["test"].images.min() == data.splits["test"].images.max() == 18


def test_ferplus_probability_soft_targets(tmp_path):
    path = write_ferplus_pair(tmp_path)
    data = load_ferplus(path, str(tmp_path / "fer2013new.csv"), "probability", cache_dir="")
    assert dict(data.skipped) == {"ferplus top vote NF": 1, "ferplus top vote unknown": 2}
    train = data.splits["train"]
    assert train.rows.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(train.targets[0], [0, 8 / 9, 1 / 9, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(train.targets[3], [0.5, 0.5, 0, 0, 0, 0, 0, 0])
    assert train.labels.tolist() == [1, 0, 7, 0, 0]
    np.testing.assert_allclose(data.splits["val"].targets[0], [0, 0, 0, 0.25, 0.75, 0, 0, 0])
    # Class subsets with FER+ spellings: renormalised targets, labels in the given order.
    sub = select_classes(data, ["happiness", "sadness", "neutral"])
    assert sub.class_names == ("happy", "sad", "neutral")
    assert sub.splits["train"].labels.tolist() == [0, 2, 2, 2]
    np.testing.assert_allclose(sub.splits["train"].targets[0], [1, 0, 0])
    np.testing.assert_allclose(sub.splits["train"].targets[2], [0.5, 0, 0.5])
    np.testing.assert_allclose(sub.splits["train"].targets[3], [3 / 7, 0, 4 / 7], rtol=1e-6)


def test_ferplus_row_count_mismatch(tmp_path):
    path = write_ferplus_pair(tmp_path, n_fer=11)
    plus = str(tmp_path / "fer2013new.csv")
    with pytest.raises(DataFormatError) as e:
        load_ferplus(path, cache_dir="")
    assert str(e.value) == (
        f"{plus}: has 10 data rows but {path} has 11; expected the same rows in the same order"
    )


def test_ferplus_bad_votes_and_missing_file(tmp_path):
    rows = list(PLUS_ROWS)
    path = write_ferplus_pair(tmp_path, rows)
    plus = tmp_path / "fer2013new.csv"
    lines = plus.read_text().splitlines()
    lines[2] = "Training,fer0000001.png,6,0,0,0,x,0,0,4,0,0"
    plus.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as e:
        load_ferplus(path, cache_dir="")
    assert str(e.value).splitlines()[1] == (
        f"  {plus}: row 2 (line 3): anger is 'x', expected a vote count >= 0"
    )
    data = load_ferplus(path, on_error="skip", cache_dir="")
    assert data.skipped == {"ferplus bad vote count": 1, "ferplus no majority": 2,
                            "ferplus top vote NF": 1, "ferplus top vote unknown": 2}  # fmt: skip
    assert data.splits["train"].rows.tolist() == [1, 3]
    os.remove(plus)
    with pytest.raises(DataNotFoundError, match="fer2013new.csv: file not found"):
        load_ferplus(path, cache_dir="")


# ---------------------------------------------------------------- image folders


def write_folder(root, data, names=None, val="PublicTest", test="PrivateTest", ext=".png"):
    """Writes a FerData as an image-folder tree; files named by 1-based split row."""
    names = names or data.class_names
    for split, folder in (("train", "train"), ("val", val), ("test", test)):
        if folder is None:
            continue
        s = data.splits[split]
        for k, (image, label) in enumerate(zip(s.images, s.labels), 1):
            d = root / folder / names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(d / f"{k:05d}{ext}")


def test_folder_matches_csv(tmp_path, faces):
    """Same images as CSV and as a folder tree: same arrays, same cleaning counts."""
    import copy

    faces = copy.deepcopy(faces)
    faces.splits["train"].images[0] = 0  # blank
    faces.splits["test"].images[1] = faces.splits["train"].images[2]  # leak
    csv_path = str(tmp_path / "fer2013.csv")
    write_fer2013_csv(csv_path, faces)
    # Alphabetical folder creation order must not matter: FER2013 order comes from the names.
    write_folder(tmp_path / "faces", faces)
    cfg = default_config()
    cfg.data.name, cfg.data.path, cfg.data.cache_dir = "fer2013", csv_path, str(tmp_path)
    from_csv = load_data(cfg)
    cfg.data.name, cfg.data.path = "folder", str(tmp_path / "faces")
    from_folder = load_data(cfg)
    assert from_folder.class_names == from_csv.class_names == FER2013_CLASSES
    for name in ("train", "val", "test"):
        a, b = from_csv.splits[name], from_folder.splits[name]
        order = np.lexsort((a.rows, a.labels))  # folder order: class, then file name
        np.testing.assert_array_equal(b.images, a.images[order])
        np.testing.assert_array_equal(b.labels, a.labels[order])
        assert b.paths[0].endswith(".png")
    summary = lambda c: {r: (e["total"], e["by_split"], e["by_class"]) for r, e in c.items()}  # noqa: E731
    assert summary(from_folder.cleaning) == summary(from_csv.cleaning)
    assert summary(from_csv.cleaning)["blank"] == (1, {"train": 1}, {"angry": 1})
    assert summary(from_csv.cleaning)["leak"] == (1, {"train": 1}, {"fear": 1})
    assert from_csv.cleaning["leak"]["rows"] == {"train": [3]}
    assert from_folder.cleaning["leak"]["paths"]["train"][0].endswith("train/fear/00003.png")


def test_folder_class_order(tmp_path):
    from ferjax.data.sources.folder import class_order

    assert class_order(["sad", "happy", "angry", "neutral"]) == ["angry", "happy", "sad", "neutral"]
    assert class_order(["Happiness", "contempt", "anger", "Surprised"]) == [
        "anger", "Happiness", "Surprised", "contempt"
    ]  # fmt: skip
    assert class_order(["dog", "cat", "happy"]) == ["cat", "dog", "happy"]


def test_folder_any_size_and_colour_and_carved_val(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("happiness", 20), ("sadness", 10), ("contempt", 10)):
        for split, count in (("train", n), ("test", 2)):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for k in range(count):
                rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
                Image.fromarray(rgb).save(d / f"{k}.jpg" if k % 2 else d / f"{k}.bmp")
    (tmp_path / "train" / "sadness" / "notes.txt").write_text("not an image")
    data = load_folder(str(tmp_path), image_size=32, val_fraction=0.2, seed=1)
    assert data.class_names == ("happy", "sad", "contempt")
    assert data.splits["train"].images.shape[1:] == (32, 32)
    assert data.splits["train"].images.dtype == np.uint8
    assert data.splits["val"].class_counts(3).tolist() == [4, 2, 2]
    assert data.splits["train"].class_counts(3).tolist() == [16, 8, 8]
    assert data.skipped == {"non-image file ignored": 1}
    again = load_folder(str(tmp_path), image_size=32, val_fraction=0.2, seed=1)
    np.testing.assert_array_equal(again.splits["val"].rows, data.splits["val"].rows)


def test_folder_errors(tmp_path, faces):
    root = tmp_path / "faces"
    write_folder(root, faces, val=None)  # val carved from train: 1 of 2 per class
    bad = sorted((root / "train" / "happy").iterdir())[0]
    bad.write_bytes(b"not a png")
    with pytest.raises(DataFormatError) as e:
        load_folder(str(root), val_fraction=0.5)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{root}: 1 bad file(s) (unreadable image: 1)"
    assert lines[1].startswith(f"  {bad}: unreadable image (") and len(lines) == 3
    data = load_folder(str(root), val_fraction=0.5, on_error="skip")
    assert data.skipped == {"unreadable image": 1}
    assert data.splits["train"].class_counts(7).tolist() == [1] * 7
    assert data.splits["val"].class_counts(7).tolist() == [1, 1, 1, 0, 1, 1, 1]

    empty = root / "PrivateTest" / "angry"
    for f in empty.iterdir():
        f.unlink()
    data = load_folder(str(root), on_error="skip")
    assert data.skipped == {"unreadable image": 1, "empty class folder": 1}
    bad.unlink()
    with pytest.raises(DataFormatError) as e:
        load_folder(str(root))
    assert str(e.value).splitlines()[1] == (
        f"  {empty}: empty class folder, expected at least one image (*.png, *.jpg, *.jpeg, *.bmp)"
    )

    (root / "train").rename(root / "other")
    with pytest.raises(DataFormatError) as e:
        load_folder(str(root))
    assert str(e.value) == (
        f"{root}: no train folder; expected {root}/train/<class>/*.png "
        "(folders found: PrivateTest, other)"
    )
    with pytest.raises(DataNotFoundError):
        load_folder(str(tmp_path / "missing"))


# ---------------------------------------------------------------- TFDS


def test_tfds_build_and_load(tmp_path, faces):
    from ferjax.data.sources.tfds_builder import load_tfds

    manual = tmp_path / "manual"
    manual.mkdir()
    write_fer2013_csv(str(manual / "fer2013.csv"), faces, quote_pixels=True)
    data = load_tfds(str(manual), str(tmp_path / "tfds"), "fer2013")
    assert data.class_names == FER2013_CLASSES
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(data.splits[name].images, faces.splits[name].images)
        np.testing.assert_array_equal(data.splits[name].labels, faces.splits[name].labels)
    plus_path = write_ferplus_pair(manual)
    assert plus_path == str(manual / "fer2013.csv")
    plus = load_tfds(str(manual), str(tmp_path / "tfds"), "ferplus", "majority")
    ref = load_ferplus(plus_path, mode="majority", cache_dir="")
    assert plus.class_names == FERPLUS_CLASSES
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(plus.splits[name].rows, ref.splits[name].rows)
        np.testing.assert_array_equal(plus.splits[name].labels, ref.splits[name].labels)
        np.testing.assert_array_equal(plus.splits[name].images, ref.splits[name].images)
    assert dict(plus.skipped) == {"ferplus no majority": 2}  # unknown/NF dropped at build


# ---------------------------------------------------------------- preprocessing and config


def test_median3x3_matches_scipy():
    from scipy import ndimage

    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 2)).astype(np.float32)
    x[0, :5, :5] = 7.0  # ties
    expected = ndimage.median_filter(x, size=(1, 3, 3, 1), mode="nearest")
    np.testing.assert_array_equal(np.asarray(median3x3(x)), expected)


def test_equalize_histogram_matches_reference():
    rng = np.random.default_rng(1)
    images = rng.integers(40, 120, (3, 48, 48)).astype(np.uint8)
    images[2] = 50  # constant image stays unchanged
    out = equalize_histogram(images)
    for im, eq in zip(images[:2], out[:2]):
        hist = np.bincount(im.ravel(), minlength=256)
        cdf = hist.cumsum()
        cdf_min = cdf[im.min()]
        lut = np.round((cdf - cdf_min) * 255.0 / (im.size - cdf_min)).clip(0, 255)
        np.testing.assert_array_equal(eq, lut[im].astype(np.uint8))
        assert eq.min() == 0 and eq.max() == 255
    np.testing.assert_array_equal(out[2], images[2])


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("ferplus_mode", "vote", "config.data.ferplus_mode: got 'vote', expected one of majority"),
        ("tfds_config", "x", "config.data.tfds_config: got 'x', expected one of fer2013, ferplus"),
        ("val_fraction", 1.0, "config.data.val_fraction: got 1.0, expected a number in (0, 1)"),
        ("image_size", 0, "config.data.image_size: got 0, expected a positive number"),
    ],
)
def test_config_rejects_bad_data_keys(key, value, message):
    cfg = default_config()
    cfg.data[key] = value
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value).startswith(message)


def test_read_source_ferplus_next_to_fer2013(tmp_path):
    path = write_ferplus_pair(tmp_path)
    cfg = default_config()
    cfg.data.name, cfg.data.path, cfg.data.cache_dir = "ferplus", path, str(tmp_path / "c")
    cfg.data.ferplus_mode = "probability"
    data = read_source(cfg.data)
    assert data.class_names == FERPLUS_CLASSES and data.splits["train"].targets is not None


def test_synthetic_faces_are_cached_and_read_back(tmp_path, monkeypatch):
    """A set large enough is rendered once into the cache; the second load reads exactly the
    same faces without rendering; other parameters are another entry; small sets bypass it."""
    params = dict(num_train=4000, num_val=50, num_test=50, seed=1)
    first = synthetic.load_synthetic(str(tmp_path), **params)
    entries = list(tmp_path.iterdir())
    assert [p.name for p in entries] == [synthetic.cache_key(**params)]

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(synthetic, "make_synthetic", no_rendering)
    second = synthetic.load_synthetic(str(tmp_path), **params)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first.splits[name].images, second.splits[name].images)
        np.testing.assert_array_equal(first.splits[name].labels, second.splits[name].labels)
    assert second.class_names == FER2013_CLASSES
    with pytest.raises(AssertionError, match="rendered again"):
        synthetic.load_synthetic(str(tmp_path), **{**params, "seed": 2})
    with pytest.raises(AssertionError, match="rendered again"):
        synthetic.load_synthetic("", **params)  # caching off
    monkeypatch.undo()
    small = synthetic.load_synthetic(str(tmp_path), num_train=40, num_val=5, num_test=5)
    assert len(small.splits["train"].images) == 40 and len(list(tmp_path.iterdir())) == 1

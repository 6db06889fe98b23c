"""RAF-DB and AffectNet readers, on small generated copies of the released layouts, and the
colour procedural faces they are drawn with."""

from __future__ import annotations

import csv
import hashlib
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from ferjax.data.classes import select_classes
from ferjax.data.sources import decode
from ferjax.data.sources.affectnet import HEADER as AFFECTNET_HEADER
from ferjax.data.sources.affectnet import index_affectnet, load_affectnet
from ferjax.data.sources.decode import FaceRecord, decode_face, decode_records
from ferjax.data.sources.rafdb import index_rafdb, load_rafdb
from ferjax.data.sources.rows import BadRowsError, RowErrors
from ferjax.data.sources.synthetic import make_synthetic, render_faces
from ferjax.runtime.errors import DataFormatError, DataNotFoundError
from tests.fake_releases import write_affectnet, write_rafdb


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- procedural faces


def test_grayscale_faces_are_pinned():
    """Hashes computed with the grayscale-only renderer, before colour rendering existed."""
    data = make_synthetic(200, 50, 50, seed=0)
    arrays = [a for s in ("train", "val", "test") for a in (data.splits[s].images,
              data.splits[s].labels)]  # fmt: skip
    assert data.splits["train"].images.shape == (200, 48, 48)
    assert digest(*arrays) == "112e86b04088ab5a29770a7a329341c4"
    faces = render_faces(np.arange(7).repeat(3), np.random.default_rng(5), size=64)
    assert faces.shape == (21, 64, 64)
    assert digest(faces) == "7530eef55bb7824d9921bc7b3661ff36"
    noisy = make_synthetic(30, 10, 10, seed=1, label_noise=0.2)
    arrays = [a for s in ("train", "val", "test") for a in (noisy.splits[s].images,
              noisy.splits[s].labels)]  # fmt: skip
    assert digest(*arrays) == "485c2c015d379b7e983cc83da14a38db"


@pytest.mark.parametrize("size", [48, 100, 224])
def test_colour_faces(size):
    labels = np.arange(14) % 7
    faces = render_faces(labels, np.random.default_rng(2), size=size, channels=3)
    again = render_faces(labels, np.random.default_rng(2), size=size, channels=3)
    assert faces.shape == (14, size, size, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces, again)
    # Colour, not gray replicated: channels differ, and skin (centre) is redder than it is blue.
    assert np.abs(faces[..., 0].astype(int) - faces[..., 2]).mean() > 10
    centre = faces[
        :, size // 2 - size // 10 : size // 2, size // 2 - size // 10 : size // 2 + size // 10
    ]
    assert (centre[..., 0].mean(axis=(1, 2)) > centre[..., 2].mean(axis=(1, 2))).mean() > 0.8
    # Variety: backgrounds (corner pixels) of different hues.
    corners = faces[:, 1, 1].astype(int)
    assert len({tuple(c // 32) for c in corners}) >= 8
    # The same geometry as the grayscale face drawn from the same generator state.
    gray = render_faces(labels, np.random.default_rng(2), size=size)
    assert gray.shape == (14, size, size)


def test_make_synthetic_sizes_and_channels():
    data = make_synthetic(21, 7, 7, seed=4, image_size=64, channels=3)
    assert data.splits["train"].images.shape == (21, 64, 64, 3)
    assert data.splits["test"].images.shape == (7, 64, 64, 3)
    gray = make_synthetic(21, 7, 7, seed=4, image_size=64)
    assert gray.splits["val"].images.shape == (7, 64, 64)
    np.testing.assert_array_equal(gray.splits["train"].labels, data.splits["train"].labels)
    empty = make_synthetic(7, 0, 0, seed=4, image_size=100, channels=3)
    assert empty.splits["val"].images.shape == (0, 100, 100, 3)


# ---------------------------------------------------------------- RAF-DB

SKIP_HINT = (
    "hint: --config.data.on_error=skip drops them and counts them by reason in data_report.json"
)
RAFDB_NUMBERING = {"1": "surprise", "2": "fear", "3": "disgust", "4": "happy", "5": "sad",
                   "6": "angry", "7": "neutral"}  # fmt: skip


@pytest.fixture(scope="module")
def rafdb(tmp_path_factory):
    """28 train and 14 test faces, aligned and original images, no bad lines."""
    root = str(tmp_path_factory.mktemp("rafdb") / "basic")
    return write_rafdb(root, 28, 14, seed=1, size=100, aligned=True, original=True)


def merged(data, *names):
    """(labels, rows, paths) of some splits, in list-file order."""
    labels = np.concatenate([data.splits[n].labels for n in names])
    rows = np.concatenate([data.splits[n].rows for n in names])
    paths = np.concatenate([data.splits[n].paths for n in names])
    order = np.argsort(rows)
    return labels[order], rows[order], paths[order].tolist()


def test_rafdb_classes_labels_rows_and_paths(rafdb):
    data = load_rafdb(rafdb.root, image_size=48, val_fraction=0.25, workers=1)
    assert data.class_names == ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")
    assert data.source == rafdb.root and dict(data.skipped) == {}
    for split in ("train", "test"):
        names = ("train", "val") if split == "train" else ("test",)
        labels, rows, paths = merged(data, *names)
        np.testing.assert_array_equal(labels, rafdb.labels[split])
        np.testing.assert_array_equal(rows, rafdb.rows[split])
        assert paths == rafdb.paths[split]
    # The label of each list line, read straight from the file, in RAF-DB's numbering.
    lines = open(rafdb.lists["list"]).read().splitlines()
    for name in ("train", "val", "test"):
        split = data.splits[name]
        assert split.images.shape == (len(split), 48, 48, 3) and split.images.dtype == np.uint8
        for label, row, path in zip(split.labels, split.rows, split.paths):
            list_name, number = lines[row - 1].split()
            assert data.class_names[label] == RAFDB_NUMBERING[number]
            assert path.endswith(f"Image/aligned/{list_name[:-4]}_aligned.jpg")
            assert list_name.startswith("train_" if name != "test" else "test_")
    first = data.splits["test"]
    np.testing.assert_array_equal(first.images[0], decode_face(first.paths[0], None, 48, 3))
    assert len(data.splits["test"]) == 14 and len(data.splits["val"]) >= 5
    # root may also be the folder holding basic/.
    parent = load_rafdb(os.path.dirname(rafdb.root), image_size=48, val_fraction=0.25, workers=1)
    np.testing.assert_array_equal(parent.splits["val"].rows, data.splits["val"].rows)


def test_rafdb_aligned_vs_original(rafdb):
    aligned = load_rafdb(rafdb.root, image_size=64, val_fraction=0, workers=1)
    original = load_rafdb(rafdb.root, image_size=64, aligned=False, val_fraction=0, workers=1)
    for name in ("train", "test"):
        a, o = aligned.splits[name], original.splits[name]
        np.testing.assert_array_equal(a.labels, o.labels)
        np.testing.assert_array_equal(a.rows, o.rows)
        for pa, po in zip(a.paths, o.paths):
            stem = os.path.basename(po)[:-4]
            assert po == os.path.join(rafdb.root, "Image", "original", f"{stem}.jpg")
            assert pa == os.path.join(rafdb.root, "Image", "aligned", f"{stem}_aligned.jpg")
        np.testing.assert_array_equal(o.images[3], decode_face(o.paths[3], None, 64, 3))
        # An original is a larger photo with the face pasted in: not the aligned face.
        assert np.abs(a.images.astype(int) - o.images).mean() > 20
    assert Image.open(original.splits["test"].paths[0]).size != (100, 100)


def rafdb_expected_lines(release) -> tuple[list[str], dict[str, int]]:
    """The exact BadRowsError lines (and counts) for write_rafdb(malformed=True)."""
    list_path, root = release.lists["list"], release.root
    lines = open(list_path).read().splitlines()
    first_line: dict[str, int] = {}
    for k, line in enumerate(lines, 1):
        if line:
            first_line.setdefault(line.split()[0], k)
    reasons = {"fields": "wrong number of fields", "label": "label out of range",
               "empty line": "empty line", "prefix": "unknown split prefix",
               "duplicate": "duplicate image name", "missing image": "missing image file",
               "unreadable image": "unreadable image"}  # fmt: skip
    out, counts = [], {}
    for _, row, line, kind, text in release.bad:
        fields = text.split()
        name, last = (fields[0], fields[-1]) if fields else ("", "")
        message = {
            "fields": f"expected 2 fields (image name and label 1..7), got {len(fields)}",
            "label": f"label is {last!r}, expected an integer in 1..7",
            "empty line": "empty line, expected 'train_00001.jpg 5'",
            "prefix": f"image name {name!r} starts with neither train_ nor test_",
            "duplicate": f"image name {name!r} is already on line {first_line.get(name)}",
            "missing image": f"image file {root}/Image/aligned/{name[:-4]}_aligned.jpg not found",
            "unreadable image": f"{root}/Image/aligned/{name[:-4]}_aligned.jpg: unreadable image (",
        }[kind]
        out.append(f"  {list_path}: row {row} (line {line}): {message}")
        counts[reasons[kind]] = counts.get(reasons[kind], 0) + 1
    return out, counts


def test_rafdb_every_bad_line_is_reported(tmp_path):
    release = write_rafdb(str(tmp_path), 9, 7, seed=2, size=48, malformed=True)
    assert sorted({b[3] for b in release.bad}) == [
        "duplicate", "empty line", "fields", "label", "missing image", "prefix",
        "unreadable image",
    ]  # fmt: skip
    expected, counts = rafdb_expected_lines(release)
    with pytest.raises(BadRowsError) as e:
        load_rafdb(release.root, image_size=48, workers=1)
    lines = str(e.value).splitlines()
    summary = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items()))
    assert lines[0] == f"{release.lists['list']}: {len(expected)} bad row(s) ({summary})"
    assert lines[1:-2] == expected[:-1] and lines[-1] == SKIP_HINT
    assert lines[-2].startswith(expected[-1])  # Pillow's words for a broken JPEG follow
    data = load_rafdb(release.root, image_size=48, val_fraction=0, on_error="skip", workers=1)
    assert dict(data.skipped) == counts
    for split in ("train", "test"):
        np.testing.assert_array_equal(data.splits[split].rows, release.rows[split])
        np.testing.assert_array_equal(data.splits[split].labels, release.labels[split])
    assert data.splits["train"].rows[-1] == release.bad[-1][1] + 1  # the good line after them


@pytest.mark.parametrize("tail", ["", "\n", "\n\n\n", "\n  \n\t\n"])
def test_rafdb_trailing_empty_lines_are_not_entries(tmp_path, tail):
    release = write_rafdb(str(tmp_path), 7, 3, seed=3, size=48, trailing=tail)
    data = load_rafdb(release.root, image_size=48, val_fraction=0, workers=1)
    assert dict(data.skipped) == {}
    assert data.splits["test"].rows.tolist() == [1, 2, 3]
    assert data.splits["train"].rows.tolist() == list(range(4, 11))


def test_rafdb_missing_data(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"folder not found\. RAF-DB is released"):
        load_rafdb(str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError) as e:
        load_rafdb(str(tmp_path))
    assert str(e.value).startswith(
        f"{tmp_path}/EmoLabel/list_patition_label.txt: file not found (nor under basic/)."
    )
    release = write_rafdb(str(tmp_path / "r"), 7, 2, seed=0, size=48)
    with pytest.raises(DataNotFoundError) as e:
        load_rafdb(release.root, aligned=False)
    assert str(e.value) == (
        f"{release.root}/Image/original: folder not found; unpack RAF-DB's Image/original "
        "there, or read Image/aligned/ with aligned=True"
    )


# ---------------------------------------------------------------- AffectNet

AFFECTNET_DROPS = {7: "affectnet contempt (7-class)", 8: "affectnet none",
                   9: "affectnet uncertain", 10: "affectnet no-face"}  # fmt: skip
AFFECTNET_8 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")


@pytest.fixture(scope="module")
def affectnet(tmp_path_factory):
    """44 training and 22 validation rows (every code 0..10 in both), no bad rows."""
    return write_affectnet(str(tmp_path_factory.mktemp("affectnet")), 44, 22, seed=2)


@pytest.mark.parametrize("num_classes", [7, 8])
def test_affectnet_classes_labels_and_drops(affectnet, num_classes):
    data = load_affectnet(affectnet.root, 40, 3, num_classes, val_fraction=0.2, workers=1)
    assert data.class_names == AFFECTNET_8[:num_classes]
    for split, names in (("train", ("train", "val")), ("test", ("test",))):
        codes = affectnet.labels[split]
        keep = codes < num_classes
        labels, rows, paths = merged(data, *names)
        np.testing.assert_array_equal(labels, codes[keep])
        np.testing.assert_array_equal(rows, affectnet.rows[split][keep])
        assert paths == [p for p, k in zip(affectnet.paths[split], keep) if k]
    all_codes = np.concatenate([affectnet.labels["train"], affectnet.labels["test"]])
    expected = {AFFECTNET_DROPS[c]: int((all_codes == c).sum()) for c in range(num_classes, 11)}
    assert dict(data.skipped) == expected and all(v > 0 for v in expected.values())
    assert data.splits["test"].class_counts(num_classes).min() >= 1
    if num_classes == 8:
        assert "affectnet contempt (7-class)" not in data.skipped


def test_affectnet_crop_is_the_box_of_the_photo(affectnet):
    """Decoding a box at its own size gives exactly the photo's pixels inside the box."""
    checked = 0
    for path, (x, y, w, h) in zip(affectnet.paths["train"], affectnet.boxes["train"]):
        with Image.open(path) as im:
            photo = np.asarray(im.convert("RGB"))
        if x < 0 or y < 0 or x + w > photo.shape[1] or y + h > photo.shape[0]:
            continue
        np.testing.assert_array_equal(
            decode_face(path, (x, y, w, h), w, 3), photo[y : y + h, x : x + w]
        )
        checked += 1
    assert checked >= 20


def write_pattern_release(root) -> list[np.ndarray]:
    """Two PNG photos, red outside the box and a checkerboard inside it; the second box sticks
    out of the photo. Returns the expected 16x16 faces."""
    rng = np.random.default_rng(0)
    faces, rows = [], []
    for k, (box, region) in enumerate([((10, 6, 16, 16), (10, 6, 26, 22)),
                                       ((44, -4, 20, 20), (44, 0, 60, 16))]):  # fmt: skip
        photo = np.zeros((40, 60, 3), np.uint8)
        photo[...] = (255, 0, 0)
        x0, y0, x1, y1 = region
        pattern = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        pattern[(np.arange(16)[:, None] // 2 + np.arange(16) // 2) % 2 == 0] = (0, 0, 255)
        photo[y0:y1, x0:x1] = pattern
        faces.append(pattern)
        (root / "Manually_Annotated_Images" / "7").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(root / "Manually_Annotated_Images" / "7" / f"p{k}.png")
        rows.append(f'7/p{k}.png,{",".join(map(str, box))},"1.0;2.0",{3 + k},0.5,0.1')
    header = ",".join(AFFECTNET_HEADER)
    (root / "training.csv").write_text("\n".join([header, *rows, rows[0]]) + "\n")
    (root / "validation.csv").write_text("\n".join([header, rows[1]]) + "\n")
    return faces


def test_affectnet_crop_uses_the_box_and_clips_it(tmp_path):
    faces = write_pattern_release(tmp_path)
    data = load_affectnet(str(tmp_path), 16, 3, val_fraction=0, workers=1)
    train, test = data.splits["train"], data.splits["test"]
    assert train.labels.tolist() == [3, 4, 3] and test.labels.tolist() == [4]
    np.testing.assert_array_equal(train.images[0], faces[0])
    np.testing.assert_array_equal(train.images[1], faces[1])
    np.testing.assert_array_equal(test.images[0], faces[1])
    red = (train.images[..., 0] == 255) & (train.images[..., 1] == 0)
    assert not red.any()
    # At another size the crop is resized (no red creeps in from outside the box either).
    small = load_affectnet(str(tmp_path), 8, 3, val_fraction=0, workers=1).splits["train"]
    assert small.images.shape == (3, 8, 8, 3) and (small.images[..., 0] < 200).all()


@pytest.mark.parametrize(
    "images,in_subfolder",
    [("Manually_Annotated_Images", True),
     ("Manually_Annotated_compressed/Manually_Annotated_Images", False), ("", False)],
)  # fmt: skip
def test_affectnet_layouts(tmp_path, images, in_subfolder):
    release = write_affectnet(str(tmp_path), 11, 11, seed=4, size_range=(60, 90), images=images,
                              lists_in_subfolder=in_subfolder)  # fmt: skip
    data = load_affectnet(str(tmp_path), 32, 3, val_fraction=0, workers=1)
    image_dir = os.path.join(str(tmp_path), images) if images else str(tmp_path)
    assert all(p.startswith(image_dir + "/") for p in data.splits["train"].paths)
    assert len(data.splits["train"]) == 7 and len(data.splits["test"]) == 7
    assert data.splits["test"].paths.tolist() == release.paths["test"][:7]


def affectnet_expected_lines(release) -> tuple[list[str], dict[str, int]]:
    """The exact BadRowsError lines (and counts) for write_affectnet(malformed=True)."""
    reasons = {"fields": "wrong number of fields", "expression": "expression out of range",
               "empty line": "empty row", "empty path": "empty image path",
               "box value": "bad face box", "box size": "bad face box",
               "box outside": "face box outside image",
               "box outside image": "face box outside image",
               "missing image": "missing image file",
               "unreadable image": "unreadable image"}  # fmt: skip
    image_dir = os.path.join(release.root, "Manually_Annotated_Images")
    listed, decoded, counts = [], [], {}
    for list_path, row, line, kind, text in release.bad:
        fields = next(csv.reader([text])) if text else []
        f = dict(zip(AFFECTNET_HEADER, fields))
        image = os.path.join(image_dir, f.get("subDirectory_filePath", ""))
        box = "(x={face_x}, y={face_y}, w={face_width}, h={face_height})".format(**f) if f else ""
        if kind == "box value":
            name = "face_x" if f["face_x"] == "abc" else "face_height"
            message = f"{name} is {f[name]!r}, expected a number"
        elif kind == "box size":
            name = "face_width" if f["face_width"] == "0" else "face_height"
            message = f"{name} is {f[name]}, expected a positive number"
        elif kind == "box outside image":
            width, height = Image.open(image).size
            message = (f"{image}: face box {box} lies outside the {width}x{height} image, "
                       "expected it to overlap the image")  # fmt: skip
        else:
            message = {
                "fields": f"expected 9 fields ({','.join(AFFECTNET_HEADER)}), got {len(fields)}",
                "expression": f"expression is {f.get('expression')!r}, expected an integer "
                "in 0..10",
                "empty line": "empty row",
                "empty path": "subDirectory_filePath is empty, expected e.g. '689/737db2.jpg'",
                "box outside": f"face box {box} lies left of or above the image, expected it to "
                "overlap the image",
                "missing image": f"image file {image} not found",
                "unreadable image": f"{image}: unreadable image (",
            }[kind]
        entry = f"  {list_path}: row {row} (line {line}): {message}"
        (decoded if kind in ("box outside image", "unreadable image") else listed).append(entry)
        counts[reasons[kind]] = counts.get(reasons[kind], 0) + 1
    return listed + decoded, counts


def test_affectnet_every_bad_row_is_reported(tmp_path):
    release = write_affectnet(str(tmp_path), 11, 11, seed=5, size_range=(60, 90), malformed=True)
    assert len({b[3] for b in release.bad}) == 10
    assert {os.path.basename(b[0]) for b in release.bad} == {"training.csv", "validation.csv"}
    expected, counts = affectnet_expected_lines(release)
    # In file order whichever of the two decode-time failures the validation carve takes.
    for seed in range(4):
        with pytest.raises(BadRowsError) as e:
            load_affectnet(release.root, 32, 3, val_fraction=0.5, split_seed=seed, workers=1)
        lines = str(e.value).splitlines()
        summary = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items()))
        assert lines[0] == f"{release.root}: {len(expected)} bad row(s) ({summary})"
        assert lines[1:-2] == expected[:-1] and lines[-1] == SKIP_HINT
        assert lines[-2].startswith(expected[-1])
    data = load_affectnet(release.root, 32, 3, val_fraction=0, on_error="skip", workers=1)
    drops = np.concatenate([release.labels["train"], release.labels["test"]])
    expected_skips = dict(counts)
    for code, reason in AFFECTNET_DROPS.items():
        expected_skips[reason] = int((drops == code).sum())
    assert dict(data.skipped) == expected_skips
    for split in ("train", "test"):
        keep = release.labels[split] < 7
        np.testing.assert_array_equal(data.splits[split].rows, release.rows[split][keep])


@pytest.mark.parametrize("tail", ["", "\n\n\n", "\r\n,,,\n"])
def test_affectnet_trailing_empty_lines_are_not_rows(tmp_path, tail):
    release = write_affectnet(str(tmp_path), 11, 11, seed=6, size_range=(60, 90), trailing=tail)
    data = load_affectnet(release.root, 32, 3, num_classes=8, val_fraction=0, workers=1)
    assert set(data.skipped) == {"affectnet none", "affectnet uncertain", "affectnet no-face"}
    assert data.splits["test"].rows.tolist() == list(range(1, 9))


def test_affectnet_missing_and_malformed_files(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"folder not found\. AffectNet is released"):
        load_affectnet(str(tmp_path / "nope"))
    release = write_affectnet(str(tmp_path), 11, 11, seed=7, size_range=(60, 90))
    os.remove(release.lists["test"])
    with pytest.raises(DataNotFoundError) as e:
        load_affectnet(str(tmp_path))
    assert str(e.value).startswith(
        f"{tmp_path}/validation.csv: file not found "
        f"(nor {tmp_path}/Manually_Annotated_file_lists/validation.csv)."
    )
    with open(release.lists["test"], "w") as f:
        f.write("subDirectory_filePath,face_x,face_y,face_width,face_height,expression\n")
    with pytest.raises(DataFormatError) as e:
        load_affectnet(str(tmp_path))
    assert str(e.value) == (
        f"{release.lists['test']}: line 1: header is 'subDirectory_filePath,face_x,face_y,"
        f"face_width,face_height,expression', expected '{','.join(AFFECTNET_HEADER)}'"
    )
    with pytest.raises(ValueError, match="num_classes must be 7 or 8"):
        load_affectnet(str(tmp_path), num_classes=11)


# ---------------------------------------------------------------- both readers


def test_validation_is_carved_by_seed_and_stratified(rafdb, affectnet):
    for index, counts in (
        (lambda seed: index_rafdb(rafdb.root, val_fraction=0.25, split_seed=seed),
         np.bincount(rafdb.labels["train"], minlength=7)),
        (lambda seed: index_affectnet(affectnet.root, 7, val_fraction=0.25, split_seed=seed),
         np.bincount(affectnet.labels["train"], minlength=11)[:7]),
    ):  # fmt: skip
        a, b, c = index(0), index(0), index(1)
        val_rows = lambda i: [r.row for r in i.splits["val"]]  # noqa: E731
        assert val_rows(a) == val_rows(b) and val_rows(a) != val_rows(c)
        for i in (a, c):
            train_rows = [r.row for r in i.splits["train"]]
            assert sorted(train_rows + val_rows(i)) == sorted(set(train_rows + val_rows(i)))
            val_counts = np.bincount([r.label for r in i.splits["val"]], minlength=7)
            want = [min(int(round(n * 0.25)), n - 1) for n in counts]
            assert val_counts.tolist() == want
            assert len(train_rows) + len(val_rows(i)) == counts.sum()


@pytest.mark.parametrize("reader", ["rafdb", "affectnet"])
def test_colour_and_grayscale_outputs(rafdb, affectnet, reader):
    def load(channels):
        if reader == "rafdb":
            return load_rafdb(rafdb.root, 56, channels, val_fraction=0.2, workers=1)
        return load_affectnet(affectnet.root, 56, channels, val_fraction=0.2, workers=1)

    colour, gray = load(3), load(1)
    for name in ("train", "val", "test"):
        c, g = colour.splits[name].images, gray.splits[name].images
        assert c.shape == (len(c), 56, 56, 3) and g.shape == (len(c), 56, 56, 1)
        assert c.dtype == g.dtype == np.uint8
        luma = c @ np.array([0.299, 0.587, 0.114])
        assert np.abs(luma - g[..., 0]).mean() < 2.0  # the same faces, in gray
        assert np.abs(c[..., 0].astype(int) - c[..., 2]).mean() > 5


def test_select_classes_on_both(rafdb, affectnet):
    for data in (
        load_rafdb(rafdb.root, 32, 3, val_fraction=0.2, workers=1),
        load_affectnet(affectnet.root, 32, 3, 8, val_fraction=0.2, workers=1),
    ):
        sub = select_classes(data, ["happy", "sad", "neutral"])
        assert sub.class_names == ("happy", "sad", "neutral")
        old = [data.class_names.index(n) for n in sub.class_names]
        for name in ("train", "val", "test"):
            before, after = data.splits[name], sub.splits[name]
            assert (
                after.class_counts(3).tolist()
                == before.class_counts(data.num_classes)[old].tolist()
            )
            assert after.images.shape[1:] == (32, 32, 3)
            np.testing.assert_array_equal(
                after.labels, [old.index(k) for k in before.labels[np.isin(before.labels, old)]]
            )


def test_parallel_decode_equals_serial(affectnet, tmp_path, monkeypatch):
    pools = []

    class CountedPool(decode.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(decode, "ProcessPoolExecutor", CountedPool)
    index = index_affectnet(affectnet.root, 8, val_fraction=0.2)
    records = [r for n in ("train", "val", "test") for r in index.splits[n]]
    assert isinstance(records[0], FaceRecord) and len(records[0].box) == 4
    assert pickle.loads(pickle.dumps(records)) == records
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    records.insert(7, records[7]._replace(path=str(broken)))
    outcomes = []
    for workers, chunk, pool in ((1, None, "process"), (2, 5, "process"), (3, 4, "process"),
                                 (2, 3, "thread")):  # fmt: skip
        errors = RowErrors(affectnet.root, "skip")
        images, kept = decode_records(records, 40, 3, errors, workers, chunk, 0, pool)
        outcomes.append((images, kept, errors.lines))
    for images, kept, lines in outcomes[1:]:
        np.testing.assert_array_equal(images, outcomes[0][0])
        np.testing.assert_array_equal(kept, outcomes[0][1])
        assert lines == outcomes[0][2]
    assert [p[0] for p in pools] == [2, 3]  # workers=1 decoded in this process
    assert len(outcomes[0][1]) == len(records) - 1 and 7 not in outcomes[0][1]
    assert outcomes[0][2][0].startswith(f"{records[7].source}: {records[7].where}: {broken}: ")


def test_decode_face_modes(tmp_path):
    """16-bit, transparency, palette and EXIF orientation, as folder.py reads them."""
    ramp = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    deep = decode_face(str(tmp_path / "deep.png"), None, 16, 3)
    assert deep.shape == (16, 16, 3) and (deep[..., 0] == deep[..., 2]).all()
    assert deep[0, 0, 0] < 10 and deep[-1, -1, 0] > 240

    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:10] = (0, 128, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    alpha = decode_face(str(tmp_path / "alpha.png"), None, 20, 3)
    assert alpha[0, 0].tolist() == [0, 128, 0] and alpha[-1, -1].tolist() == [255, 255, 255]
    assert decode_face(str(tmp_path / "alpha.png"), (0, 10, 20, 10), 4, 1).min() == 255

    palette = Image.fromarray((np.arange(20)[:, None] >= 10).repeat(20, 1).astype(np.uint8), "P")
    palette.putpalette([0, 128, 0, 200, 0, 0])
    palette.save(tmp_path / "palette.png", transparency=1)  # the red half is transparent
    np.testing.assert_array_equal(decode_face(str(tmp_path / "palette.png"), None, 20, 3), alpha)

    # EXIF orientation 6 (rotate 90 clockwise to display); the box is in displayed pixels.
    stored = np.zeros((30, 50, 3), np.uint8)
    stored[:, :10] = 255  # the left band of the stored image is the top band once displayed
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = decode_face(str(tmp_path / "rotated.jpg"), None, 30, 1)[..., 0]
    assert shown[:5].mean() > 240 and shown[8:].mean() < 15  # 10 of 50 rows -> 6 of 30
    top = decode_face(str(tmp_path / "rotated.jpg"), (0, 0, 30, 10), 10, 1)
    assert top.min() > 230


def test_decode_large_jpeg_at_reduced_scale(tmp_path):
    """Large JPEGs are decoded at 1/2..1/8 scale; the result matches a full decode closely."""
    rng = np.random.default_rng(0)
    photo = render_faces(np.array([3]), rng, size=640, channels=3)[0]
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95)
    box = (100, 80, 400, 400)
    fast = decode_face(str(tmp_path / "big.jpg"), box, 48, 3).astype(int)
    with Image.open(tmp_path / "big.jpg") as im:
        full = im.convert("RGB").resize(
            (48, 48), Image.Resampling.BILINEAR, box=(100, 80, 500, 480)
        )
    assert np.abs(fast - np.asarray(full)).mean() < 3

"""The FER2013 CSV reader on small files in the exact Kaggle format."""

import os

import numpy as np
import pytest

from ferjax.data.dataset import FER2013_CLASSES
from ferjax.data.sources.fer2013 import (
    file_digest,
    load_fer2013,
    parse_regular,
    read_fer2013_rows,
    read_rows_csv,
    write_fer2013_csv,
)
from ferjax.data.sources.rows import RowErrors
from ferjax.data.sources.synthetic import make_synthetic
from ferjax.runtime.errors import DataFormatError, DataNotFoundError


@pytest.fixture(scope="module")
def small():
    return make_synthetic(num_train=20, num_val=6, num_test=5, seed=3)


@pytest.mark.parametrize("quote", [False, True])
def test_reads_arrays_labels_and_splits(tmp_path, small, quote):
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(str(path), small, quote_pixels=quote)
    text = path.read_text().splitlines()
    assert text[0] == "emotion,pixels,Usage"
    assert text[1].endswith(",Training") and text[-1].endswith(",PrivateTest")
    assert ('"' in text[1]) == quote
    data = load_fer2013(str(path), cache_dir="")
    assert data.class_names == FER2013_CLASSES
    for name in ("train", "val", "test"):
        got, want = data.splits[name], small.splits[name]
        assert got.images.dtype == np.uint8 and got.images.shape == want.images.shape
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.labels, want.labels)
    # 1-based data rows, in file order: train rows first, then PublicTest, then PrivateTest.
    np.testing.assert_array_equal(data.splits["val"].rows, np.arange(21, 27))


def test_known_pixels_and_cache(tmp_path):
    pixels = np.arange(2304) % 256
    rows = ["emotion,pixels,Usage"]
    rows.append("3," + " ".join(map(str, pixels)) + ",Training")
    rows.append('6,"' + " ".join(map(str, pixels[::-1])) + '",PublicTest')
    rows.append("0," + " ".join(["7"] * 2304) + ",PrivateTest")
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    for _ in range(2):  # parse, then read back from the cache
        data = load_fer2013(str(path), cache_dir=str(cache))
        np.testing.assert_array_equal(data.splits["train"].images[0], pixels.reshape(48, 48))
        np.testing.assert_array_equal(data.splits["val"].images[0].ravel(), pixels[::-1])
        assert data.splits["test"].images[0, 47, 47] == 7
        assert [data.splits[s].labels.tolist() for s in ("train", "val", "test")] == [[3], [6], [0]]
    assert len(list(cache.glob("*.npz"))) == 1


def test_cache_finds_the_digest_without_reading_and_sees_an_edit(tmp_path, monkeypatch):
    """A second load takes the file's digest from digests.json (no read of the file); an edit
    (same size, even the same modification time) is hashed afresh and parsed again."""
    from ferjax.data.sources import fer2013

    path = tmp_path / "fer2013.csv"
    row = lambda label: f"{label}," + " ".join(["9"] * 2304) + ",Training"  # noqa: E731
    path.write_text("emotion,pixels,Usage\n" + row(3) + "\n")
    cache = str(tmp_path / "cache")
    reads = []
    real = fer2013.bytes_digest
    monkeypatch.setattr(fer2013, "bytes_digest", lambda b: reads.append(str(path)) or real(b))
    assert load_fer2013(str(path), cache_dir=cache).splits["train"].labels.tolist() == [3]
    assert load_fer2013(str(path), cache_dir=cache).splits["train"].labels.tolist() == [3]
    assert reads == [str(path)]  # hashed once, found by its stamps the second time
    stat = path.stat()
    path.write_text("emotion,pixels,Usage\n" + row(5) + "\n")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert load_fer2013(str(path), cache_dir=cache).splits["train"].labels.tolist() == [5]
    assert len(reads) == 2


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_fer2013(str(tmp_path / "nope.csv"), cache_dir="")
    assert "file not found" in str(e.value) and "kaggle" in str(e.value).lower()
    assert "\n" not in str(e.value)


def test_bad_row_raise_and_skip(tmp_path, small):
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(str(path), small)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + "," + lines[3].rsplit(",", 1)[1]  # drop one pixel
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as e:
        load_fer2013(str(path), cache_dir="")
    assert str(e.value).splitlines()[1] == (
        f"  {path}: row 3 (line 4): expected 2304 pixel values (48x48), got 2303"
    )
    data = load_fer2013(str(path), on_error="skip", cache_dir="")
    assert data.skipped == {"wrong pixel count": 1}
    assert len(data.splits["train"]) == 19


def _variants(small, tmp_path):
    """The same faces written in every layout a FER2013 file is met in."""
    path = tmp_path / "base.csv"
    write_fer2013_csv(str(path), small)
    text = path.read_text()
    lines = text.splitlines()

    def reorder(line, order):  # fields in the order of `order` (a permutation of 0, 1, 2)
        fields = line.split(",")
        return ",".join(fields[k] for k in order)

    usage_first = "\n".join(reorder(line, (2, 0, 1)) for line in lines) + "\n"
    spaced = "\n".join(
        [lines[0]]
        + [line.replace(",", " , ", 1) if k % 2 else line for k, line in enumerate(lines[1:])]
    )
    return {
        "kaggle": (text, True),
        "no final newline": (text.rstrip("\n"), True),
        "blank lines after the last row": (text + "\n\n", True),
        "crlf": (text.replace("\n", "\r\n"), True),
        "crlf, pixels last": (usage_first.replace("\n", "\r\n"), True),
        "bom": ("\ufeff" + text, True),
        "columns reordered": (usage_first, True),
        "blanks around label and usage": (spaced + "\n", True),
        "quoted pixels": (text.replace(",", ',"', 1).replace(",Training", '",Training', 1), False),
        "a blank line between rows": (text.replace("\n", "\n\n", 2), False),
        "bare carriage returns": (text.replace("\n", "\r"), False),
        "extra column": ("\n".join(line + ",x" for line in lines) + "\n", False),
        "label with a leading zero": (text.replace("\n0,", "\n00,", 1), False),
        "a pixel of 256": (text.replace(" ", " 256 ", 1), False),
        "double blanks": (text.replace(" ", "  ", 3), True),  # fromstring's rule in both
    }


def test_regular_files_are_read_in_one_pass_and_equal_the_csv_path(tmp_path, small):
    """parse_regular accepts exactly the regular layouts (premise: the Kaggle layout and its
    usual variants take the fast path) and gives what the csv module's path gives; anything
    else is left to the csv path (None), which reads or names it."""
    for name, (text, regular) in _variants(small, tmp_path).items():
        path = tmp_path / "v.csv"
        path.write_bytes(text.encode("utf-8"))
        fast = parse_regular(path.read_bytes())
        assert (fast is not None) == regular, name
        try:
            slow = read_rows_csv(str(path), RowErrors(str(path), "skip"))
        except DataFormatError:
            assert not regular, name
            continue
        got = read_fer2013_rows(str(path), "skip")
        for a, b in zip(got[:4], slow[:4], strict=True):  # images, labels, usage, rows
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
        assert got[4].counts == slow[4].counts, name
        if regular:
            for a, b in zip(fast, slow[:4], strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
            assert not slow[4].counts, name


def test_a_file_cut_into_parts_parses_to_the_same_arrays(tmp_path, small, monkeypatch):
    """parse_regular on 2-4 threads (a large file's path, forced here on small files) gives
    what one thread gives, for every layout; an irregular row in the last part still sends the
    whole file to the csv path. Premise: the file was cut into as many parts as workers."""
    from ferjax.data.sources import fer2013_rows as fer2013

    monkeypatch.setattr(fer2013, "_PARALLEL_FROM_BYTES", 0)
    for name, (text, regular) in _variants(small, tmp_path).items():
        data = text.encode("utf-8")
        one = parse_regular(data, workers=1)
        assert (one is not None) == regular, name
        for workers in (2, 3, 4):
            many = parse_regular(data, workers=workers)
            if one is None:
                assert many is None, (name, workers)
                continue
            for a, b in zip(many, one, strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    text = _variants(small, tmp_path)["kaggle"][0]
    data = text.encode("utf-8")
    header_end = data.index(b"\n") + 1
    parts = fer2013._line_ranges(data, header_end, len(data.rstrip(b"\n")), 4)
    assert len(parts) == 4 and all(b > a for a, b in parts)
    assert sum(data[a:b].count(b"\n") + 1 for a, b in parts) == len(small.splits["train"]) + 11
    bad = text.rstrip("\n").rsplit("\n", 1)
    bad = bad[0] + "\n" + bad[1].replace(" ", " 300 ", 1) + "\n"  # the last row, last part
    assert parse_regular(bad.encode("utf-8"), workers=1) is None
    assert parse_regular(bad.encode("utf-8"), workers=4) is None


def test_a_new_file_is_hashed_beside_the_parse_to_the_same_digest(tmp_path, small):
    """The digest taken from the bytes already read (on a helper thread) is the file's 128-bit
    blake2b, as file_digest gives it: the cache entry of a parsed file is found by the next
    run."""
    import hashlib
    import json

    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(str(path), small)
    cache = tmp_path / "cache"
    load_fer2013(str(path), cache_dir=str(cache))
    expected = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    index = json.loads((cache / "digests.json").read_text())
    assert index[str(path)]["digest"] == expected == file_digest(str(path))
    (entry,) = cache.glob("*.npz")
    assert expected in entry.name

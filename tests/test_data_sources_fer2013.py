"""The FER2013 CSV reader on small files in the exact Kaggle format."""

import os

import numpy as np
import pytest

from ferjax.data.dataset import FER2013_CLASSES
from ferjax.data.sources.fer2013 import load_fer2013, write_fer2013_csv
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
    real = fer2013.file_digest
    monkeypatch.setattr(fer2013, "file_digest", lambda p: reads.append(p) or real(p))
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

"""Sharded stores (ferjax.data.store): exact round trip, deterministic and resumable
conversion, change detection, bounded host memory while streaming."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferjax.data.store import manifest, writer
from ferjax.data.store.manifest import FaceRecord
from ferjax.data.store.reader import ShardedImages, prefetch_batches
from ferjax.runtime.errors import DataFormatError

TESTS = Path(__file__).resolve().parent
SIZE = 16
SHAPE = (SIZE, SIZE, 3)
SETTINGS = {"image_size": SIZE, "channels": 3, "crop": "box"}


def decode_png(path: str, box, size: int, channels: int) -> np.ndarray:
    """A reader's decode_face in miniature: crop the box, resize; fails on a marked image."""
    if os.path.exists(path + ".broken"):
        raise OSError("marked broken by the test")
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if box is not None:
            im = im.crop(tuple(box))
        face = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
    return face.reshape(size, size, channels)


def decode_slow(path: str, box, size: int, channels: int) -> np.ndarray:
    time.sleep(0.02)
    return decode_png(path, box, size, channels)


def decode_pattern(path: str, box, size: int, channels: int) -> np.ndarray:
    """No file: face k is filled with k % 251 and starts with k as 4 little-endian bytes."""
    k = int(Path(path).stem)
    face = np.full(size * size * channels, k % 251, np.uint8)
    face[:4] = np.frombuffer(np.uint32(k).tobytes(), np.uint8)
    return face.reshape(size, size, channels)


def make_source(root: Path, sizes=(("train", 200), ("val", 60), ("test", 40)), seed=0):
    """PNGs of 20-40 px with a random box each; returns (records by split, list file)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records, lines, row = {}, ["path,x0,y0,x1,y1,label,split"], 0
    for split, n in sizes:
        records[split] = []
        for _ in range(n):
            row += 1
            h, w = rng.integers(20, 41, size=2)
            path = str(root / f"{row:05d}.png")
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            x0, y0 = rng.integers(0, w // 3), rng.integers(0, h // 3)
            box = (int(x0), int(y0), int(x0 + w // 2), int(y0 + h // 2))
            label = int(rng.integers(0, 7))
            records[split].append(FaceRecord(path, box, label, row))
            lines.append(f"{path},{','.join(map(str, box))},{label},{split}")
    list_file = root / "list.csv"
    list_file.write_text("\n".join(lines) + "\n")
    return records, str(list_file)


def run_convert(records, out, workers=1, decode=decode_png, shard_size=32, fingerprint="fp"):
    return writer.convert(
        records,
        decode,
        out,
        image_shape=SHAPE,
        source_fingerprint=fingerprint,
        settings=SETTINGS,
        shard_size=shard_size,
        workers=workers,
    )


def store_files(directory: Path) -> dict[str, bytes]:
    """Every file that makes up a store's content (not the conversion log or the lock)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if not p.name.startswith(".") and p.name != "conversion.json"
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """An uninterrupted conversion with one worker."""
    out = tmp_path_factory.mktemp("ref") / "store"
    run_convert(source[0], out)
    return out


def expected_faces(records) -> np.ndarray:
    return np.stack([decode_png(r.path, r.box, SIZE, 3) for r in records])


def test_round_trip_gather(source, reference):
    records, _ = source
    everything = [r for s in ("train", "val", "test") for r in records[s]]
    want = expected_faces(everything)
    store = ShardedImages(reference)
    assert len(store) == 300 and store.shape == SHAPE
    assert store.splits == {"train": 200, "val": 60, "test": 40}
    m = store.manifest
    assert [sh.records for sh in m.splits["train"]] == [32] * 6 + [8]
    rng = np.random.default_rng(1)
    perm = rng.permutation(300)
    np.testing.assert_array_equal(store.gather(perm), want[perm])
    # repeats, and neighbours across the shard boundaries 31|32 (train) and 199|200 (train|val)
    idx = np.array([31, 32, 31, 199, 200, 5, 5, 5, 299, 0, 33, 32])
    np.testing.assert_array_equal(store.gather(idx), want[idx])
    assert store.gather(np.zeros(0, np.int64)).shape == (0, *SHAPE)
    with pytest.raises(IndexError):
        store.gather(np.array([300]))
    # a split view: local indices, its labels, rows and embeddings
    val = ShardedImages(reference, "val", threads=1)
    local = rng.integers(0, 60, 100)
    np.testing.assert_array_equal(val.gather(local), want[200 + local])
    np.testing.assert_array_equal(val.labels(), [r.label for r in records["val"]])
    np.testing.assert_array_equal(store.labels("test"), [r.label for r in records["test"]])
    np.testing.assert_array_equal(val.rows(), [r.row for r in records["val"]])
    emb = np.stack([writer.face_embedding(f) for f in want[200:260]])
    np.testing.assert_array_equal(val.embeddings(), emb)
    assert emb.dtype == np.float16 and emb.shape == (60, 256)
    assert abs(float(emb.astype(np.float32).mean(axis=1).max())) < 1e-2
    xi, xj = val.gather_pairs(np.array([1, 2, 3]), np.array([1, 59, 3]))
    np.testing.assert_array_equal(xi, want[[201, 202, 203]])
    np.testing.assert_array_equal(xj, want[[201, 259, 203]])
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["image_shape"] == list(SHAPE) and manifest["dtype"] == "uint8"
    assert manifest["splits"]["val"]["offset"] == 200
    assert manifest["settings"] == SETTINGS and manifest["source_fingerprint"] == "fp"
    assert not list(reference.glob("*.emb.npy")) and not (reference / "plan.json").exists()


def test_concurrent_gathers_and_pickling(source, reference):
    import pickle

    want = expected_faces([r for s in ("train", "val", "test") for r in source[0][s]])
    store = pickle.loads(pickle.dumps(ShardedImages(reference, threads=3)))
    failures = []

    def hammer(seed):
        rng = np.random.default_rng(seed)
        for _ in range(30):
            idx = rng.integers(0, 300, 64)
            if not np.array_equal(store.gather(idx), want[idx]):
                failures.append(seed)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_prefetch_batches_in_order_and_tf_data(reference):
    store = ShardedImages(reference, "train")
    batches = [np.random.default_rng(s).integers(0, 200, 16) for s in range(12)]

    def slow_gather(b):
        time.sleep(0.03 * (int(b[0]) % 3))  # later batches may finish first
        return store.gather(b)

    got = list(prefetch_batches(batches, slow_gather, depth=3))
    assert len(got) == 12
    for b, x in zip(batches, got, strict=True):
        np.testing.assert_array_equal(x, store.gather(b))
    from ferjax.runtime.tensorflow import import_tensorflow

    tf = import_tensorflow()
    ds = tf.data.Dataset.from_tensor_slices(np.stack(batches[:4])).map(store.tf_gather)
    for b, x in zip(batches, ds.as_numpy_iterator()):
        assert x.shape == (16, *SHAPE)
        np.testing.assert_array_equal(x, store.gather(b))


def test_conversion_is_deterministic_across_workers(source, reference, tmp_path):
    m2 = run_convert(source[0], tmp_path / "two", workers=2)
    assert m2.conversion["workers"] == 2 and len(m2.conversion["converted_shards"]) == 11
    assert store_files(tmp_path / "two") == store_files(reference)
    # converting again into a finished store does nothing
    again = run_convert(source[0], tmp_path / "two", workers=2)
    assert again.key == m2.key and again.conversion["converted_shards"] == []


def test_decode_errors_are_reported_then_resume_converts_only_missing(source, reference, tmp_path):
    records, _ = source
    broken = [records["train"][40].path, records["val"][10].path]  # shards train 1 and val 0
    for p in broken:
        Path(p + ".broken").touch()
    out = tmp_path / "store"
    try:
        with pytest.raises(DataFormatError) as e:
            run_convert(records, out, workers=2)
    finally:
        for p in broken:
            os.remove(p + ".broken")
    message = str(e.value)
    assert "2 image(s) failed to decode" in message
    assert all(p in message for p in broken) and "OSError" in message
    assert not (out / "manifest.json").exists()
    missing = {"train-00001-of-00007.array_record", "val-00000-of-00002.array_record"}
    done = {p.name: p.stat() for p in out.glob("*.array_record")}
    assert len(done) == 9 and not missing & set(done)
    m = run_convert(records, out, workers=2)
    assert set(m.conversion["converted_shards"]) == missing
    assert len(m.conversion["reused_shards"]) == 9
    for name, st in done.items():  # kept, not rewritten
        now = (out / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert store_files(out) == store_files(reference)


KILL_SCRIPT = """
import json, sys
sys.path[:0] = [{tests!r}, {root!r}]
from test_data_store import decode_slow, run_convert
from ferjax.data.store.manifest import FaceRecord
records = {{s: [FaceRecord(*r) for r in v] for s, v in json.load(open({records!r})).items()}}
run_convert(records, {out!r}, workers=2, decode=decode_slow)
"""


def test_sigkill_mid_conversion_then_resume(source, reference, tmp_path):
    records, _ = source
    out = tmp_path / "store"
    listing = tmp_path / "records.json"
    listing.write_text(json.dumps({s: [list(r) for r in v] for s, v in records.items()}))
    script = KILL_SCRIPT.format(
        tests=str(TESTS), root=str(TESTS.parent), records=str(listing), out=str(out)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while len(list(out.glob("*.array_record"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "conversion did not start"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # let the killed workers' files settle
    assert not (out / "manifest.json").exists()
    done = {p.name for p in out.glob("*.array_record")}
    assert 3 <= len(done) < 11
    m = run_convert(records, out, workers=2)
    assert set(m.conversion["converted_shards"]).isdisjoint(done)
    assert len(m.conversion["converted_shards"]) + len(done) == 11
    assert store_files(out) == store_files(reference)


def test_changed_source_or_settings_is_detected(tmp_path):
    records, list_file = make_source(tmp_path / "src", sizes=(("train", 40), ("test", 10)))
    root = tmp_path / "stores"

    def open_store(settings=SETTINGS, allow=True, log=None):
        return writer.open_or_convert(
            records,
            decode_png,
            root,
            image_shape=SHAPE,
            source_fingerprint=manifest.source_fingerprint(records, [list_file]),
            settings=settings,
            shard_size=16,
            workers=1,
            allow_reconvert=allow,
            stream=log,
        )

    first = open_store()
    stamp = (first.directory / "manifest.json").stat().st_mtime_ns
    same = open_store(allow=False)
    assert same.directory == first.directory
    assert (same.directory / "manifest.json").stat().st_mtime_ns == stamp  # not reconverted

    image = records["train"][3].path
    st = os.stat(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    with pytest.raises(DataFormatError, match="stale.*source files changed"):
        open_store(allow=False)
    import io

    log = io.StringIO()
    second = open_store(log=log)
    assert second.directory != first.directory and first.directory.exists()
    assert "stale store" in log.getvalue() and str(first.directory) in log.getvalue()
    np.testing.assert_array_equal(second.gather(np.arange(50)), first.gather(np.arange(50)))

    with open(list_file, "a") as f:  # the list file changes
        f.write("# edited\n")
    with pytest.raises(DataFormatError, match="source files changed"):
        open_store(allow=False)
    with pytest.raises(DataFormatError, match="setting crop 'box' -> 'none'"):
        open_store(settings={**SETTINGS, "crop": "none"}, allow=False)
    relabelled = dict(records)
    relabelled["test"] = [r._replace(label=(r.label + 1) % 7) for r in records["test"]]
    fingerprint = manifest.source_fingerprint(records, [list_file])
    assert manifest.records_digest(relabelled) != manifest.records_digest(records)
    # a finished store is never overwritten by another conversion
    with pytest.raises(DataFormatError, match="another source"):
        run_convert(relabelled, second.directory, fingerprint=fingerprint)


MEMORY_SCRIPT = """
import sys
sys.path[:0] = [{root!r}]
import numpy as np
from ferjax.data.store.reader import ShardedImages, prefetch_batches

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

store = ShardedImages({out!r}, "train", threads=4)
order = np.random.default_rng(0).permutation(len(store))
batches = [order[s : s + 256] for s in range(0, len(order), 256)]
base = status("VmRSS")  # before any read: shard caches would count
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
seen = np.zeros(len(store), np.int64)
for b, x in zip(batches, prefetch_batches(batches, store.gather, depth=3)):
    ids = x.reshape(len(x), -1)[:, :4].copy().view(np.uint32)[:, 0]
    assert np.array_equal(ids, b), "a gathered face is not the one asked for"
    rest = x.reshape(len(x), -1)[:, 4:]
    assert np.array_equal(rest.min(axis=1), b % 251) and np.array_equal(rest.max(axis=1), b % 251)
    seen[b] += 1
print(base, status("VmHWM"), int(seen.sum()), int((seen == 1).sum()))
"""


def test_streaming_keeps_host_memory_bounded(tmp_path):
    limit = 150 * 2**20
    n, shape = 8192, (128, 128, 3)  # 8192 x 48 KiB = 384 MiB of faces
    records = {"train": [FaceRecord(f"/nonexistent/{k}.png", None, k % 7, k) for k in range(n)]}
    out = tmp_path / "big"
    writer.convert(
        records,
        decode_pattern,
        out,
        image_shape=shape,
        source_fingerprint="pattern",
        settings={"image_size": 128},
        shard_size=512,
        workers=1,
    )
    data_bytes = n * int(np.prod(shape))
    on_disk = sum(p.stat().st_size for p in out.glob("*.array_record"))
    assert data_bytes > 2.5 * limit and on_disk >= data_bytes  # the premise
    script = MEMORY_SCRIPT.format(root=str(TESTS.parent), out=str(out))
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
        )
    finally:
        shutil.rmtree(out)  # 384 MiB: not left behind in pytest's kept temporary folders
    assert done.returncode == 0, done.stderr
    base, peak, reads, once = map(int, done.stdout.split())
    assert reads == n and once == n  # the pass read every face exactly once, each verified
    growth = peak - base
    assert growth < limit, f"peak RSS grew by {growth / 2**20:.0f} MiB streaming"
    assert growth > 0


def decode_wrong_size(path: str, box, size: int, channels: int) -> np.ndarray:
    return np.zeros((size + 1, size, channels), np.uint8)


def test_bad_decode_is_an_error_naming_the_file(source, tmp_path):
    records = {"train": source[0]["train"][:5]}
    with pytest.raises(DataFormatError) as e:
        run_convert(records, tmp_path / "a", decode=decode_wrong_size)
    first = records["train"][0].path
    assert f"{first}: cannot decode (ValueError: decode returned uint8[17, 16, 3]" in str(e.value)
    assert "expected uint8[16, 16, 3]" in str(e.value)
    with pytest.raises(TypeError, match="top-level function"):
        run_convert(source[0], tmp_path / "b", workers=2, decode=lambda p, b, s, c: None)

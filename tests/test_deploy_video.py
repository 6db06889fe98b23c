"""`ferjax predict` on videos and a (mocked) webcam: a procedural face moving across a noisy
background, written as an mp4v video, followed by one track; smoothing checked against the
per-frame classification; the one-line errors; and the tracker itself (pure NumPy)."""

import json

import cv2
import numpy as np
import pytest
from conftest import call_tool
from PIL import Image

from ferjax.deploy.tracking import Smoother, Tracker, greedy_match, iou_matrix

FRAMES, FPS, SIDE = 30, 25.0, 160
H, W = 360, 480


def _truth(t: int) -> tuple[int, int, int, int]:
    """Where the face is in frame t: left to right and a little down."""
    return (20 + 8 * t, 60 + 3 * t, SIDE, SIDE)


def _write(path, frames) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    for gray in frames:
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()


def _read(path) -> list[np.ndarray]:
    """The video's frames as predict sees them (grayscale)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames


def _moving_face_frames(face: np.ndarray, rng) -> list[np.ndarray]:
    up = np.asarray(Image.fromarray(face).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    frames = []
    for t in range(FRAMES):
        frame = rng.normal(128, 30, (H, W)).clip(0, 255).astype(np.uint8)
        x, y, _, _ = _truth(t)
        frame[y : y + SIDE, x : x + SIDE] = up
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """An mp4v video of a procedural face the Haar cascade finds, once and only there, in every
    decoded frame (it finds about half of the candidates)."""
    from ferjax.data.sources.synthetic import render_faces
    from ferjax.deploy.faces import detect_faces, face_detector
    from ferjax.deploy.video import VideoOptions

    side = VideoOptions().detect_side  # as predict detects by default
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    rng = np.random.default_rng(0)
    detector = face_detector()
    for face in render_faces(np.full(12, 3), rng):
        _write(path, _moving_face_frames(face, rng))
        frames = _read(path)
        if len(frames) == FRAMES and all(
            len(boxes := detect_faces(g, detector, max_side=side)) == 1
            and _iou(boxes[0], _truth(t)) > 0.5
            for t, g in enumerate(frames)
        ):
            return path
    pytest.fail("the Haar cascade missed the moving face in some frame for all 12 faces")


def _iou(a, b) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def _predict(capsys, *argv) -> tuple[int, list[dict], str]:
    from ferjax.cli.predict import main

    code = call_tool(main, list(argv))
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


# ---------------------------------------------------------------------------------- predict


def test_video_one_track_follows_the_face(trained, fresh_run, video, tmp_path, capsys):
    out = tmp_path / "ann" / "out.mp4"
    code, records, err = _predict(
        capsys, "--workdir", fresh_run, str(video), "--annotate_video", str(out)
    )
    assert code == 0, err
    assert [r["frame"] for r in records] == list(range(FRAMES))  # one face per frame, in order
    assert {r["track"] for r in records} == {1}
    names = list(trained.class_names)
    for r in records:
        assert set(r) == {"file", "time", "frame", "track", "box", "label", "confidence",
                          "probabilities"}  # fmt: skip
        assert r["file"] == str(video)
        assert isinstance(r["time"], float) and r["time"] == pytest.approx(r["frame"] / FPS)
        assert isinstance(r["frame"], int) and isinstance(r["track"], int)
        assert len(r["box"]) == 4 and all(isinstance(v, int) for v in r["box"])
        assert _iou(r["box"], _truth(r["frame"])) > 0.5
        probs = r["probabilities"]
        assert list(probs) == names and all(isinstance(v, float) for v in probs.values())
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == max(probs, key=probs.get)
        assert r["confidence"] == probs[r["label"]]
    xs = [r["box"][0] for r in records]
    assert xs[-1] - xs[0] > 0.8 * (_truth(FRAMES - 1)[0] - _truth(0)[0])  # follows the motion
    timing = [line for line in err.splitlines() if "frames/s" in line]
    assert len(timing) == 1 and f"{FRAMES} frames, {FRAMES} faces, 1 tracks" in timing[0]
    for stage in ("decode", "detect", "classify", "other"):
        assert f" {stage} " in timing[0]
    annotated = _read(out)
    assert len(annotated) == FRAMES and annotated[0].shape == (H, W)


def test_smoothing_zero_is_per_frame_and_smoothing_is_its_average(
    trained, fresh_run, video, capsys
):
    from ferjax.deploy.faces import crop_face

    base = ("--workdir", fresh_run, str(video))
    code, raw, _ = _predict(capsys, *base, "--smooth", "0", "--frames_per_batch", "4")
    assert code == 0
    frames = _read(video)
    crops = np.stack([crop_face(frames[r["frame"]], r["box"], 0.1, 48) for r in raw])
    expected = trained.classify(crops)
    names = list(trained.class_names)
    got = np.array([[r["probabilities"][n] for n in names] for r in raw])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [r["label"] for r in raw] == [names[int(p.argmax())] for p in expected]

    code, smooth, _ = _predict(capsys, *base, "--smooth", "0.5", "--frames_per_batch", "7")
    assert code == 0
    assert [r["box"] for r in smooth] == [r["box"] for r in raw]
    s = expected[0].astype(np.float64)
    for r, p in zip(smooth, expected):
        s = 0.5 * s + 0.5 * p
        assert [r["probabilities"][n] for n in names] == pytest.approx(s.tolist(), abs=2e-6)
        assert r["label"] == names[int(s.argmax())]


def test_detect_every_reuses_boxes(fresh_run, video, capsys):
    code, records, _ = _predict(capsys, "--workdir", fresh_run, str(video), "--detect_every", "3")
    assert code == 0 and len(records) == FRAMES
    for r in records:
        assert r["box"] == records[r["frame"] // 3 * 3]["box"]
    assert records[3]["box"] != records[0]["box"]


def test_a_video_without_a_video_extension(fresh_run, video, tmp_path, capsys):
    clip = tmp_path / "clip.bin"  # not an image, so predict tries OpenCV's video reader
    clip.write_bytes(video.read_bytes())
    code, records, err = _predict(capsys, "--workdir", fresh_run, str(clip), "--max_frames", "6")
    assert code == 0, err
    assert [(r["file"], r["frame"]) for r in records] == [(str(clip), t) for t in range(6)]


def test_corrupt_missing_and_faceless_videos(fresh_run, video, tmp_path, capfd):
    data = video.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.avi").write_bytes(b"not a video" * 100)
    rng = np.random.default_rng(1)
    _write(tmp_path / "noise.mp4", [rng.integers(0, 256, (H, W), np.uint8) for _ in range(10)])
    cases = {
        "truncated.mp4": "cannot open as a video (corrupt, truncated, or a codec OpenCV lacks)",
        "junk.avi": "cannot open as a video",
        "missing.mp4": "no such file",
        "noise.mp4": "no face found in any of 10 frames",
    }
    for name, message in cases.items():
        path = str(tmp_path / name)
        code, records, err = _predict(capfd, "--workdir", fresh_run, path)
        assert code == 1, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {message}"), (name, err)
        assert len(records) == 1 and records[0]["file"] == path
        assert records[0]["error"].endswith(lines[0][len(f"error: {path}: ") :])
    # a good video next to a bad one: exit 0, the bad one's line, the good one's faces
    code, records, err = _predict(
        capfd, "--workdir", fresh_run, str(tmp_path / "truncated.mp4"), str(video)
    )
    assert code == 0 and sum("frame" in r for r in records) == FRAMES
    assert "truncated.mp4: cannot open as a video" in err


class _FakeCamera:
    """cv2.VideoCapture of a webcam: the given frames, then nothing."""

    frames: list = []
    interrupt_at: int | None = None  # Ctrl-C while reading this frame

    def __init__(self, source):
        self.source, self.k = source, 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.source != 1

    def read(self):
        if self.k == self.interrupt_at:
            raise KeyboardInterrupt
        if self.k >= len(self.frames):
            return False, None
        self.k += 1
        return True, cv2.cvtColor(self.frames[self.k - 1], cv2.COLOR_GRAY2BGR)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_camera_uses_the_same_loop(fresh_run, video, monkeypatch, capsys):
    _FakeCamera.frames = _read(video)
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCamera)
    code, records, err = _predict(capsys, "--workdir", fresh_run, "--camera", "0",
                                  "--max_frames", "12")  # fmt: skip
    assert code == 0, err
    assert [r["frame"] for r in records] == list(range(12))
    assert {r["file"] for r in records} == {"camera:0"} and {r["track"] for r in records} == {1}
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] >= 0
    assert all(_iou(r["box"], _truth(r["frame"])) > 0.5 for r in records)
    code, records, err = _predict(capsys, "--workdir", fresh_run, "--camera", "1")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: camera 1: cannot be opened (no such device, or busy)"
    ]


def test_photos_and_bad_flags(fresh_run, capsys):
    from ferjax.cli.predict import main

    assert call_tool(main, ["--workdir", fresh_run]) == 2
    assert "give photos or videos, or --camera N" in capsys.readouterr().err
    assert call_tool(main, ["--workdir", fresh_run, "--camera", "0", "--smooth", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --smooth must be in [0, 1), got 1.0"


# ---------------------------------------------------------------------------------- tracker


def test_iou_and_greedy_match():
    iou = iou_matrix([(0, 0, 10, 10), (100, 100, 10, 10)], [(5, 0, 10, 10), (0, 0, 10, 10)])
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.0, 0.0]])
    assert iou_matrix([], [(0, 0, 1, 1)]).shape == (0, 1)
    # the best pair first, even when the first row prefers the taken column
    assert greedy_match(np.array([[0.6, 0.5], [0.9, 0.0]]), 0.3) == [(1, 0), (0, 1)]
    assert greedy_match(np.array([[0.2]]), 0.3) == []


def test_two_faces_crossing_keep_their_ids():
    tracker = Tracker(min_iou=0.3, max_missed=2)
    history = []
    for t in range(21):
        a, b = (10 * t, 0, 100, 100), (200 - 10 * t, 50, 100, 100)
        order = [b, a] if t % 2 else [a, b]  # the detector's order says nothing
        ids = dict(zip(order, tracker.update(order)))
        history.append((ids[a], ids[b]))
    assert set(history) == {(1, 2)}


def test_a_face_that_comes_back_keeps_its_id_only_within_the_drop_limit():
    face = (50, 50, 80, 80)
    tracker = Tracker(max_missed=3)
    assert [tracker.update([face]) for _ in range(3)] == [[1]] * 3
    for _ in range(3):
        assert tracker.update([]) == []
    assert tracker.update([face]) == [1]  # missed 3 frames: still track 1
    for _ in range(4):
        tracker.update([])
    assert tracker.live_ids == set()  # missed 4 > 3: dropped
    assert tracker.update([face]) == [2]
    assert tracker.update([face, (300, 300, 80, 80)]) == [2, 3]


def test_smoother():
    s = Smoother(0.0)
    assert s(1, [0.2, 0.8]).tolist() == [0.2, 0.8]
    assert s(1, [0.6, 0.4]).tolist() == [0.6, 0.4]  # 0: no smoothing
    s = Smoother(0.75)
    assert s(1, [1.0, 0.0]).tolist() == [1.0, 0.0]  # starts from the first frame
    assert s(1, [0.0, 1.0]).tolist() == [0.75, 0.25]
    assert s(2, [0.0, 1.0]).tolist() == [0.0, 1.0]  # per track
    s.keep_only({2})
    assert s(1, [0.0, 1.0]).tolist() == [0.0, 1.0]  # forgotten: starts again
    with pytest.raises(ValueError):
        Smoother(1.0)


def test_ctrl_c_stops_a_camera_cleanly_and_a_file_with_130(fresh_run, video, tmp_path,
                                                            monkeypatch, capsys):  # fmt: skip
    _FakeCamera.frames = _read(video)
    monkeypatch.setattr(_FakeCamera, "interrupt_at", 10)
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCamera)
    out = tmp_path / "cam.mp4"
    code, records, err = _predict(capsys, "--workdir", fresh_run, "--camera", "0",
                                  "--annotate_video", str(out))  # fmt: skip
    assert code == 0, err
    assert [r["frame"] for r in records] == list(range(10))  # the pending frames emitted
    assert "10 frames, 10 faces, 1 tracks" in err
    monkeypatch.undo()
    assert len(_read(out)) == 10  # and the annotated video closed: readable
    monkeypatch.setattr(_FakeCamera, "interrupt_at", 5)
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCamera)
    code, records, err = _predict(capsys, "--workdir", fresh_run, str(video))
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted"
    assert [r["frame"] for r in records] == list(range(5))

"""Facial expressions of the faces in a video file or a webcam stream.

Each frame is decoded with OpenCV (BGR -> grayscale, or RGB for a colour model), faces are found
with the photos' Haar cascade on a copy scaled down to `detect_side` pixels (every
`detect_every`-th frame; the frames between reuse the last detection's boxes), matched to the
faces of the previous frames (`tracking.Tracker`: greedy IoU, a track id per face, a track
dropped after `max_missed` frames without its face) and cropped as in photos. The crops of
`frames_per_batch` frames are classified together in one jitted call of a fixed, padded batch
(compiled once, before the clock starts; more faces than the batch: more calls of the same
shape), then the frames are emitted in order: each track's probabilities smoothed
(`tracking.Smoother`, an exponential moving average; 0 = none), one JSON line per face
per frame, and the frame, annotated, to an mp4v video when asked.

At the end one line on stderr says how fast the whole path ran (frames per second of wall time
from the first read to the last line) and where the time went: decode (reading and converting
frames), detect (the cascade), classify (the jitted calls, transfers included) and other
(cropping, tracking, smoothing, output, writing the annotated video).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable

import cv2
import jax
import numpy as np

from ferjax.deploy.faces import crop_face, detect_faces, draw_box
from ferjax.deploy.tracking import Smoother, Tracker
from ferjax.runtime.errors import ConfigError, DataFormatError, DataNotFoundError

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .flv .3gp .ts .mts .ogv".split()
)
STAGES = ("decode", "detect", "classify", "other")
MIN_IOU = 0.3


@dataclasses.dataclass
class VideoOptions:
    """What `ferjax predict` was asked for videos (see its --help)."""

    margin: float = 0.1
    detect: bool = True
    detect_every: int = 1
    detect_side: int = 320
    smooth: float = 0.8
    frames_per_batch: int = 8
    max_missed: int = 5
    max_frames: int = 0  # 0: all of a file; a camera runs until Ctrl-C
    annotate_video: str | None = None
    tta: str | None = None

    def check(self) -> None:
        if self.detect_every < 1:
            raise ConfigError(f"--detect_every must be >= 1, got {self.detect_every}")
        if not 0 <= self.smooth < 1:
            raise ConfigError(f"--smooth must be in [0, 1), got {self.smooth}")
        if self.frames_per_batch < 1:
            raise ConfigError(f"--frames_per_batch must be >= 1, got {self.frames_per_batch}")
        if self.max_missed < 0 or self.max_frames < 0 or self.detect_side < 0:
            raise ConfigError("--detect_side, --max_missed and --max_frames must be >= 0")


def is_video_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def can_decode(path: str) -> bool:
    """Whether OpenCV opens `path` as a video and decodes a frame (for files whose extension
    says nothing and that are not images)."""
    cap = _capture(path)
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()


def _capture(source):
    """cv2.VideoCapture with OpenCV's warnings off while it opens (they are not errors ours)."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(source)
    finally:
        logging.setLogLevel(previous)


def open_source(source: str | int):
    """(capture, name, frames per second or 0) of a video file or a camera index; raises a
    one-line error when it cannot be opened."""
    if isinstance(source, int):
        cap = _capture(source)
        if not cap.isOpened():
            raise DataFormatError(f"camera {source}: cannot be opened (no such device, or busy)")
        return cap, f"camera:{source}", 0.0
    if not os.path.isfile(source):
        raise DataNotFoundError(f"{source}: no such file")
    cap = _capture(source)
    if not cap.isOpened():
        raise DataFormatError(
            f"{source}: cannot open as a video (corrupt, truncated, or a codec OpenCV lacks)"
        )
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, source, fps if math.isfinite(fps) and fps > 0 else 0.0


class FaceClassifier:
    """Probabilities float32[N, K] of uint8[N, H, W, C] crops, in calls of exactly `batch`
    (zero-padded) crops to one jitted function: one compilation, done on construction."""

    def __init__(self, trained, tta: str | None, batch: int):
        self.trained, self.batch = trained, batch
        self.fn = jax.jit(trained.classify_fn(tta))
        start = time.perf_counter()
        self._call(np.zeros((batch, *trained.input_shape), np.uint8))
        self.compile_s = time.perf_counter() - start

    def _call(self, padded: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(self.trained.variables, padded))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start : start + self.batch]
            padded = np.zeros((self.batch, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            out.append(self._call(padded)[: len(chunk)])
        if not out:
            return np.zeros((0, len(self.trained.class_names)), np.float32)
        return np.concatenate(out)


@dataclasses.dataclass
class _Frame:
    index: int
    time: float
    bgr: np.ndarray | None  # kept only for the annotated video
    boxes: list[tuple[int, int, int, int]]
    ids: list[int]
    crops: list[np.ndarray]


@dataclasses.dataclass
class VideoSummary:
    name: str
    frames: int = 0
    faces: int = 0  # JSON lines written
    tracks: int = 0
    seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0
    expected_frames: int = 0  # the container's frame count (0: unknown)

    def line(self, compile_s: float) -> str:
        """The timing line: frames/s of the whole path and the split by stage."""
        wall = max(self.wall, 1e-9)
        split = ", ".join(
            f"{k} {self.seconds[k]:.2f} s ({100 * self.seconds[k] / wall:.0f}%, "
            f"{1000 * self.seconds[k] / max(self.frames, 1):.1f} ms/frame)"
            for k in STAGES
        )
        return (
            f"{self.name}: {self.frames} frames, {self.faces} faces, {self.tracks} tracks in "
            f"{self.wall:.2f} s = {self.frames / wall:.1f} frames/s | {split} | classifier "
            f"compiled in {compile_s:.1f} s (not counted)"
        )


class _Run:
    """One source's loop state: the tracker, the smoother, the pending frames, the writer."""

    def __init__(self, summary, trained, classify, opts: VideoOptions, emit, writer_path, fps):
        self.summary, self.trained, self.classify, self.opts = summary, trained, classify, opts
        self.emit, self.writer_path, self.fps = emit, writer_path, fps
        self.tracker = Tracker(MIN_IOU, opts.max_missed)
        self.smoother = Smoother(opts.smooth)
        self.pending: list[_Frame] = []
        self.writer = None

    def flush(self) -> None:
        """Classifies the pending frames' faces in one batch, then emits the frames in order."""
        if not self.pending:
            return
        crops = [c for f in self.pending for c in f.crops]
        start = time.perf_counter()
        probs = self.classify(np.stack(crops)) if crops else np.zeros((0, 1), np.float32)
        self.summary.seconds["classify"] += time.perf_counter() - start
        names = self.trained.class_names
        k = 0
        for frame in self.pending:
            texts = []
            for box, track, p in zip(frame.boxes, frame.ids, probs[k : k + len(frame.crops)]):
                s = self.smoother(track, p)
                top = int(np.argmax(s))
                record = {
                    "file": self.summary.name,
                    "time": round(frame.time, 4),
                    "frame": frame.index,
                    "track": track,
                    "box": [int(v) for v in box],
                    "label": names[top],
                    "confidence": round(float(s[top]), 6),
                    "probabilities": {n: round(float(v), 6) for n, v in zip(names, s)},
                }
                self.emit(json.dumps(record))
                texts.append(f"[{track}] {names[top]} {s[top]:.2f}")
            k += len(frame.crops)
            self.summary.faces += len(frame.crops)
            if frame.bgr is not None:
                self.write(frame.bgr, frame.boxes, texts)
        self.smoother.keep_only(self.tracker.live_ids)
        self.pending.clear()

    def write(self, bgr: np.ndarray, boxes, texts) -> None:
        if self.writer is None:
            path = self.writer_path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            h, w = bgr.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(path, fourcc, self.fps or 30.0, (w, h))
            if not self.writer.isOpened():
                raise DataFormatError(f"{path}: cannot write an mp4v video there")
        thick = max(1, round(max(bgr.shape[:2]) / 400))
        for box, text in zip(boxes, texts):
            draw_box(bgr, box, text, thick)
        self.writer.write(bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def predict_video(
    source: str | int,
    trained,
    detector,
    opts: VideoOptions,
    classify: Callable[[np.ndarray], np.ndarray],
    emit: Callable[[str], None],
    writer_path: str | None = None,
) -> VideoSummary:
    """Runs the loop of the module's docstring over one file or camera; `emit` gets each JSON
    line. detector None: every frame is one face. Ctrl-C stops a camera cleanly (the pending
    frames are emitted and the annotated video closed); in a file it does the same, then
    raises KeyboardInterrupt."""
    cap, name, fps = open_source(source)
    camera = isinstance(source, int)
    summary = VideoSummary(name)
    if not camera:
        summary.expected_frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    run = _Run(summary, trained, classify, opts, emit, writer_path, fps)
    size, channels = trained.input_shape[0], trained.input_shape[2]
    seconds = summary.seconds
    boxes, ids = [], []
    interrupted = False
    start = time.perf_counter()
    try:
        try:
            while not opts.max_frames or summary.frames < opts.max_frames:
                t0 = time.perf_counter()
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
                pixels = gray if channels == 1 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                t1 = time.perf_counter()
                seconds["decode"] += t1 - t0
                index = summary.frames
                if camera:
                    stamp = t0 - start
                elif fps:
                    stamp = index / fps
                else:
                    stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if detector is None:
                    boxes = [(0, 0, gray.shape[1], gray.shape[0])]
                    ids = run.tracker.update(boxes)
                elif index % opts.detect_every == 0:
                    boxes = detect_faces(gray, detector, max_side=opts.detect_side)
                    seconds["detect"] += time.perf_counter() - t1
                    ids = run.tracker.update(boxes)
                crops = [crop_face(pixels, b, opts.margin, size) for b in boxes]
                keep = bgr if writer_path else None
                run.pending.append(_Frame(index, stamp, keep, list(boxes), list(ids), crops))
                summary.frames += 1
                if len(run.pending) >= opts.frames_per_batch:
                    run.flush()
        except KeyboardInterrupt:
            interrupted = True
        run.flush()  # not after any other error: some of its frames may be out already
    finally:
        run.close()
        cap.release()
        summary.wall = time.perf_counter() - start
        summary.tracks = run.tracker.next_id - 1
        seconds["other"] = max(0.0, summary.wall - sum(seconds[k] for k in STAGES[:-1]))
    if interrupted and not camera:
        raise KeyboardInterrupt
    if summary.frames == 0:
        raise DataFormatError(f"{name}: no frame could be decoded (corrupt, or a codec missing)")
    return summary


def annotated_path(out: str, source: str | int, several: bool) -> str:
    """OUT as given for one source; OUT_<source> (stem and extension of OUT) for several."""
    if not several:
        return out
    stem, ext = os.path.splitext(out)
    tag = (
        f"camera{source}"
        if isinstance(source, int)
        else os.path.splitext(os.path.basename(source))[0]
    )
    return f"{stem}_{tag}{ext or '.mp4'}"


def predict_videos(sources, trained, detector, opts: VideoOptions, out=None, err=None) -> int:
    """Runs every source (paths, camera indices) in turn: JSON lines to `out`, each one's
    timing line or error line to `err`. Returns how many failed (unreadable, or no face in any
    frame)."""
    out, err = out or sys.stdout, err or sys.stderr
    opts.check()
    if not sources:
        return 0
    classify = FaceClassifier(trained, opts.tta, opts.frames_per_batch)

    def emit(line: str) -> None:
        print(line, file=out, flush=True)

    failed = 0
    for source in sources:
        writer = None
        if opts.annotate_video:
            writer = annotated_path(opts.annotate_video, source, len(sources) > 1)
        try:
            summary = predict_video(source, trained, detector, opts, classify, emit, writer)
        except (DataFormatError, DataNotFoundError) as e:
            failed += 1
            print(f"error: {e}", file=err, flush=True)
            emit(json.dumps({"file": _name(source), "error": str(e)}))
            continue
        if summary.expected_frames and summary.frames < summary.expected_frames - 1:
            if not opts.max_frames or summary.frames < opts.max_frames:
                print(
                    f"note: {summary.name}: decoding stopped after {summary.frames} of "
                    f"{summary.expected_frames} frames (the rest is unreadable)",
                    file=err,
                )
        if summary.faces == 0:
            failed += 1
            message = f"no face found in any of {summary.frames} frames"
            print(f"error: {summary.name}: {message}", file=err, flush=True)
            emit(json.dumps({"file": summary.name, "error": message}))
            continue
        print(summary.line(classify.compile_s), file=err, flush=True)
    return failed


def _name(source: str | int) -> str:
    return f"camera:{source}" if isinstance(source, int) else source

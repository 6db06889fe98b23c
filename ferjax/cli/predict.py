"""Facial expressions of the faces in photos, videos and a webcam.

Each photo (any size, colour or grayscale) is read as training images were (grayscale or RGB,
the run's channels), faces are found with OpenCV's bundled Haar cascade (no download), each face
is cropped as a square around the detection with a margin and resized to the model's input, and
all faces are classified in one batched, jitted pass. One line per face: file, box (x,y,w,h in
the photo's pixels), top label, probabilities. --no-detect treats every image as an
already-cropped face. Exit status 1 only if every input failed (unreadable, or no face found).

Videos (.mp4, .avi, .mov, .mkv, ...; any other file OpenCV decodes and PIL does not) and
--camera N are read frame by frame: faces detected (every --detect_every frames), tracked
across frames (a track id per face, kept through up to --max_missed frames without it), the
faces of --frames_per_batch frames classified in one jitted call, each track's probabilities
smoothed over time (--smooth A: p' = A p'_prev + (1 - A) p, 0 = none), and one JSON line per
face per frame printed: file, time (s), frame (from 0), track, box, label (the top smoothed
class), confidence, probabilities. --annotate_video OUT.mp4 writes the frames with boxes, track
ids and labels (mp4v). A line on stderr gives frames/s and the time split at the end. Ctrl-C
stops a camera (or --max_frames N).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ferjax.cli.flags import Parser, run
from ferjax.deploy.faces import Face, annotate, face_detector, face_line, find_faces, load_photo
from ferjax.deploy.inference import CHECKPOINTS, load_run
from ferjax.deploy.video import VideoOptions, can_decode, is_video_path, predict_videos
from ferjax.evaluation.tta import TTA_MODES
from ferjax.runtime.errors import DataFormatError


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax predict", __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("photos", nargs="*", metavar="PHOTO_OR_VIDEO")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write annotated copies here")
    p.add_argument("--no-detect", dest="detect", action="store_false", help="inputs are faces")
    p.add_argument("--margin", type=float, default=0.1, help="crop margin, fraction of the box")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    p.add_argument("--tta", default=None, choices=TTA_MODES.names(), help="default: the run's")
    v = p.add_argument_group("videos and webcam")
    v.add_argument("--camera", type=int, metavar="N", help="read webcam N (0: the first)")
    v.add_argument(
        "--detect_every",
        type=int,
        default=1,
        metavar="K",
        help="detect faces every K frames; those between reuse the boxes (default 1)",
    )
    v.add_argument(
        "--detect_side",
        type=int,
        default=320,
        metavar="PX",
        help="detect on frames scaled down to this longest side (default 320: faces from "
        "~48 px in a 640x480 frame; 0: full size, slower, finds smaller faces)",
    )
    v.add_argument(
        "--smooth",
        type=float,
        default=0.8,
        metavar="A",
        help="per-track moving average of the probabilities, weight of the past in "
        "[0, 1) per frame (default 0.8: half-life ~3 frames; 0: none)",
    )
    v.add_argument(
        "--frames_per_batch",
        type=int,
        default=8,
        metavar="F",
        help="classify the faces of F frames in one call (default 8; 1: least delay)",
    )
    v.add_argument(
        "--max_missed",
        type=int,
        default=5,
        metavar="M",
        help="frames a track survives without its face (default 5)",
    )
    v.add_argument(
        "--max_frames",
        type=int,
        default=0,
        metavar="N",
        help="stop after N frames of each video or the camera (default 0: all)",
    )
    v.add_argument(
        "--annotate_video",
        metavar="OUT.mp4",
        help="write the annotated frames here (OUT_<name>.mp4 for several)",
    )
    args = p.parse(argv)
    if not args.photos and args.camera is None:
        p.error("give photos or videos, or --camera N")
    videos = [path for path in args.photos if is_video_path(path)]
    photos = [path for path in args.photos if not is_video_path(path)]
    opts = VideoOptions(
        **{k: getattr(args, k) for k in ("margin", "detect", "tta", "annotate_video")},
        **{k: getattr(args, k) for k in ("detect_every", "detect_side", "smooth")},
        **{k: getattr(args, k) for k in ("frames_per_batch", "max_missed", "max_frames")},
    )
    opts.check()

    trained = load_run(args.workdir, args.checkpoint)
    size, channels = trained.info.image_shape[0], trained.info.channels
    detector = face_detector() if args.detect else None
    faces: list[Face] = []
    per_photo: dict[str, list[Face]] = {}
    failed = 0
    for path in photos:
        try:
            photo = load_photo(path, channels)
        except DataFormatError as e:
            if can_decode(path):
                videos.append(path)
                continue
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": path, "error": str(e)}), flush=True)
            continue
        found = find_faces(path, photo, detector, args.margin, size)
        per_photo[path] = found
        faces.extend(found)
    probs = trained.classify(np.stack([f.crop for f in faces]), args.tta) if faces else np.zeros(0)
    by_face = {id(f): p for f, p in zip(faces, probs)}
    for path, found in per_photo.items():
        if not found:
            failed += 1
            line = {"file": path, "error": "no face found"}
            print(json.dumps(line) if args.json else f"{path}: no face found", flush=True)
            continue
        for face in found:
            print(face_line(face, by_face[id(face)], trained.class_names, args.json), flush=True)
        if args.annotate:
            probs_here = [by_face[id(f)] for f in found]
            annotate(path, found, probs_here, trained.class_names, args.annotate)
    sources = videos + ([] if args.camera is None else [args.camera])
    failed += predict_videos(sources, trained, detector, opts)
    return 1 if failed == len(args.photos) + (args.camera is not None) else 0


if __name__ == "__main__":
    run(main)

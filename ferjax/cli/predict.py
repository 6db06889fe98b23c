"""Facial expressions of the faces in photos.

Each photo (any size, colour or grayscale) is read as training images were (grayscale or RGB,
the run's channels), faces are found with OpenCV's bundled Haar cascade (no download), each face
is cropped as a square around the detection with a margin and resized to the model's input, and
all faces are classified in one batched, jitted pass. One line per face: file, box (x,y,w,h in
the photo's pixels), top label, probabilities. --no-detect treats every image as an
already-cropped face. Exit status 1 only if every input failed (unreadable, or no face found).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ferjax.cli.flags import Parser, run
from ferjax.deploy.faces import Face, annotate, face_detector, face_line, find_faces, load_photo
from ferjax.deploy.inference import CHECKPOINTS, load_run
from ferjax.evaluation.tta import TTA_MODES
from ferjax.runtime.errors import DataFormatError


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax predict", __doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write annotated copies here")
    p.add_argument("--no-detect", dest="detect", action="store_false", help="inputs are faces")
    p.add_argument("--margin", type=float, default=0.1, help="crop margin, fraction of the box")
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    p.add_argument("--tta", default=None, choices=TTA_MODES.names(), help="default: the run's")
    args = p.parse(argv)

    trained = load_run(args.workdir, args.checkpoint)
    size, channels = trained.info.image_shape[0], trained.info.channels
    detector = face_detector() if args.detect else None
    faces: list[Face] = []
    per_photo: dict[str, list[Face]] = {}
    failed = 0
    for path in args.photos:
        try:
            photo = load_photo(path, channels)
        except DataFormatError as e:
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
    return 1 if failed == len(args.photos) else 0


if __name__ == "__main__":
    run(main)

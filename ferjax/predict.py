"""Facial expressions of the faces in photos.

    python -m ferjax.predict --workdir=DIR PHOTO... [--json] [--annotate=OUT_DIR] [--no-detect]

Each photo (any size, colour or grayscale) is turned to grayscale as the folder reader does,
faces are found with OpenCV's bundled Haar cascade (no download), each face is cropped as a
square around the detection with a margin and resized to the model's input (uint8 48x48,
bilinear) exactly as training images are, and all faces are classified in one batched, jitted
pass. One line per face: file, box (x,y,w,h in the photo's pixels), top label, probabilities.
--no-detect treats every image as an already-cropped face. Exit status 1 only if every input
failed (unreadable, or no face found).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from ferjax import cli  # noqa: F401 - quiets TensorFlow before it is imported
from ferjax.errors import DataFormatError

CASCADE = "haarcascade_frontalface_default.xml"
# Photos are scaled down to this longest side for detection (speed); boxes are scaled back.
DETECT_MAX_SIDE = 1280


@dataclasses.dataclass
class Face:
    file: str
    index: int
    box: tuple[int, int, int, int]  # x, y, w, h in the photo's pixels
    crop: np.ndarray  # uint8[H, W], the model's input


def load_photo(path: str) -> np.ndarray:
    """A photo file -> uint8[H, W] grayscale (EXIF orientation applied). Raises DataFormatError."""
    from PIL import Image, ImageOps

    from ferjax.data.folder import to_grayscale

    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return np.asarray(to_grayscale(im), np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataFormatError(f"{path}: cannot read image ({reason})") from None


def face_detector():
    import cv2

    path = os.path.join(cv2.data.haarcascades, CASCADE)
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise DataFormatError(f"{path}: OpenCV's Haar cascade is missing (opencv-python<5)")
    return detector


def detect_faces(gray: np.ndarray, detector, min_neighbors: int = 5) -> list[tuple[int, ...]]:
    """Face boxes (x, y, w, h) in `gray`'s pixels, left to right."""
    import cv2

    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)))
    small = cv2.equalizeHist(small)
    side = min(small.shape)
    boxes = detector.detectMultiScale(
        small, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(max(24, side // 20),) * 2
    )
    out = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(boxes).reshape(-1, 4)]
    return sorted(out)


def crop_face(gray: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """The square around `box` grown by `margin` of its side on each side (edge pixels repeat
    outside the photo), resized to uint8[size, size] as the folder reader resizes."""
    from PIL import Image

    from ferjax.data.folder import resize_face

    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    pad = max(0, -x0, -y0, x0 + side - gray.shape[1], y0 + side - gray.shape[0])
    padded = np.pad(gray, pad, mode="edge") if pad else gray
    square = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    return resize_face(Image.fromarray(square), size)


def find_faces(path: str, gray: np.ndarray, detector, margin: float, size: int) -> list[Face]:
    if detector is None:  # --no-detect: the whole image is the face
        h, w = gray.shape
        from PIL import Image

        from ferjax.data.folder import resize_face

        return [Face(path, 1, (0, 0, w, h), resize_face(Image.fromarray(gray), size))]
    return [
        Face(path, i + 1, box, crop_face(gray, box, margin, size))
        for i, box in enumerate(detect_faces(gray, detector))
    ]


def face_line(face: Face, probs: np.ndarray, class_names, as_json: bool) -> str:
    top = int(np.argmax(probs))
    if as_json:
        return json.dumps(
            {
                "file": face.file,
                "face": face.index,
                "box": list(face.box),
                "label": class_names[top],
                "confidence": round(float(probs[top]), 6),
                "probabilities": {n: round(float(p), 6) for n, p in zip(class_names, probs)},
            }
        )
    ranked = " ".join(f"{class_names[c]}={probs[c]:.2f}" for c in np.argsort(-probs))
    box = ",".join(str(v) for v in face.box)
    return (
        f"{face.file}: face {face.index} box={box} {class_names[top]} {probs[top]:.2f} | {ranked}"
    )


def annotate(path: str, faces: list[Face], probs: np.ndarray, class_names, out_dir: str) -> str:
    """The photo with a box and `label confidence` per face, as OUT_DIR/<name>_annotated.png."""
    import cv2
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    bgr = rgb[..., ::-1].copy()
    thick = max(1, round(max(bgr.shape[:2]) / 400))
    for face, p in zip(faces, probs):
        x, y, w, h = face.box
        top = int(np.argmax(p))
        cv2.rectangle(bgr, (x, y), (x + w, y + h), (0, 200, 0), thick)
        text = f"{class_names[top]} {p[top]:.2f}"
        scale = max(0.4, w / 250)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - base - 4 > 0 else y + h + th + 4
        cv2.rectangle(bgr, (x, ty - th - base), (x + tw, ty + base), (0, 200, 0), -1)
        cv2.putText(bgr, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(out_dir, f"{stem}_annotated.png")
    cv2.imwrite(out, bgr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferjax.predict", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write annotated copies here")
    p.add_argument("--no-detect", dest="detect", action="store_false", help="inputs are faces")
    p.add_argument("--margin", type=float, default=0.1, help="crop margin, fraction of the box")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument(
        "--tta", default=None, choices=("none", "flip", "ten_crop"), help="default: the run's"
    )
    args = p.parse_args(argv)

    from ferjax.inference import load_run

    run = load_run(args.workdir, args.checkpoint)
    size = run.image_shape[0]
    detector = face_detector() if args.detect else None
    faces: list[Face] = []
    per_photo: dict[str, list[Face]] = {}
    failed = 0
    for path in args.photos:
        try:
            gray = load_photo(path)
        except DataFormatError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": path, "error": str(e)}), flush=True)
            continue
        found = find_faces(path, gray, detector, args.margin, size)
        per_photo[path] = found
        faces.extend(found)
    probs = run.classify(np.stack([f.crop for f in faces]), args.tta) if faces else np.zeros((0, 0))
    by_face = {id(f): p for f, p in zip(faces, probs)}
    for path, found in per_photo.items():
        if not found:
            failed += 1
            line = {"file": path, "error": "no face found"}
            print(json.dumps(line) if args.json else f"{path}: no face found", flush=True)
            continue
        for face in found:
            print(face_line(face, by_face[id(face)], run.class_names, args.json), flush=True)
        if args.annotate:
            annotate(path, found, [by_face[id(f)] for f in found], run.class_names, args.annotate)
    return 1 if failed == len(args.photos) else 0


if __name__ == "__main__":
    cli.run_main(main)

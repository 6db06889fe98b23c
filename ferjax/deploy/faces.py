"""Faces in photos: reading a photo, finding faces (OpenCV's bundled Haar cascade, no
download), cropping them as the model's training images were made, and the output lines of
`ferjax predict`.

Detection runs on the grayscale photo; the crop is a square around the detection grown by a
margin, taken from the grayscale or the RGB photo (the model's channels) and resized to the
model's input (uint8, bilinear) exactly as the folder reader resizes training images.
"""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
from PIL import Image, ImageOps

from ferjax.data.sources.folder import resize_face, to_grayscale
from ferjax.runtime.errors import DataFormatError

CASCADE = "haarcascade_frontalface_default.xml"
# Photos are scaled down to this longest side for detection (speed); boxes are scaled back.
DETECT_MAX_SIDE = 1280


@dataclasses.dataclass
class Face:
    file: str
    index: int
    box: tuple[int, int, int, int]  # x, y, w, h in the photo's pixels
    crop: np.ndarray  # uint8[H, W, C], the model's input


@dataclasses.dataclass
class Photo:
    """A photo as the detector sees it (gray) and as the model's crops are cut (pixels: gray
    uint8[H, W] or RGB uint8[H, W, 3])."""

    gray: np.ndarray
    pixels: np.ndarray


def load_photo(path: str, channels: int = 1) -> Photo:
    """A photo file (EXIF orientation applied). Raises DataFormatError if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            gray = np.asarray(to_grayscale(im), np.uint8)
            pixels = gray if channels == 1 else np.asarray(im.convert("RGB"), np.uint8)
            return Photo(gray, pixels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataFormatError(f"{path}: cannot read image ({reason})") from None


def face_detector():
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise DataFormatError(f"{path}: OpenCV's Haar cascade is missing (opencv-python<5)")
    return detector


def detect_faces(
    gray: np.ndarray, detector, min_neighbors: int = 5, max_side: int = DETECT_MAX_SIDE
) -> list[tuple[int, ...]]:
    """Face boxes (x, y, w, h) in `gray`'s pixels, left to right. Detection runs on a copy
    scaled down to `max_side` pixels at most (0: full size): the cascade's smallest face is 24
    pixels there."""
    h, w = gray.shape
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)))
    small = cv2.equalizeHist(small)
    side = min(small.shape)
    boxes = detector.detectMultiScale(
        small, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(max(24, side // 20),) * 2
    )
    out = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(boxes).reshape(-1, 4)]
    return sorted(out)


def _as_face(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8[h, w] or [h, w, 3] -> uint8[size, size, C], resized as training images are."""
    return resize_face(Image.fromarray(pixels), size).reshape(size, size, -1)


def crop_face(pixels: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """The square around `box` grown by `margin` of its side on each side (edge pixels repeat
    outside the photo), resized to uint8[size, size, C]."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    pad = max(0, -x0, -y0, x0 + side - pixels.shape[1], y0 + side - pixels.shape[0])
    if pad:
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (pixels.ndim - 2)
        pixels = np.pad(pixels, widths, mode="edge")
    square = pixels[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    return _as_face(square, size)


def find_faces(path: str, photo: Photo, detector, margin: float, size: int) -> list[Face]:
    """The faces of a photo; detector None (--no-detect): the whole image is the face."""
    if detector is None:
        h, w = photo.gray.shape
        return [Face(path, 1, (0, 0, w, h), _as_face(photo.pixels, size))]
    return [
        Face(path, i + 1, box, crop_face(photo.pixels, box, margin, size))
        for i, box in enumerate(detect_faces(photo.gray, detector))
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


def draw_box(bgr: np.ndarray, box, text: str, thick: int) -> None:
    """A green box with `text` on a filled label above it (below when there is no room), in
    place on a BGR uint8 image."""
    x, y, w, h = box
    cv2.rectangle(bgr, (x, y), (x + w, y + h), (0, 200, 0), thick)
    scale = max(0.4, w / 250)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y - 4 if y - th - base - 4 > 0 else y + h + th + 4
    cv2.rectangle(bgr, (x, ty - th - base), (x + tw, ty + base), (0, 200, 0), -1)
    cv2.putText(bgr, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick)


def annotate(path: str, faces: list[Face], probs: np.ndarray, class_names, out_dir: str) -> str:
    """The photo with a box and `label confidence` per face, as OUT_DIR/<name>_annotated.png."""
    with Image.open(path) as im:
        rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    bgr = rgb[..., ::-1].copy()
    thick = max(1, round(max(bgr.shape[:2]) / 400))
    for face, p in zip(faces, probs):
        top = int(np.argmax(p))
        draw_box(bgr, face.box, f"{class_names[top]} {p[top]:.2f}", thick)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(out_dir, f"{stem}_annotated.png")
    cv2.imwrite(out, bgr)
    return out

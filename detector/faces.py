"""Face finding for ``detector predict``: every face of an image as an aligned crop.

mediapipe full-range face detection gives the boxes, the face mesh of :mod:`synth.face` gives
landmarks inside each box, and :func:`synth.face.crop_face` crops each face exactly as the
training crops are made (square, ``crop_scale`` times the face, resized to ``size`` x ``size``).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from synth._checks import check_image
from synth.log import mediapipe_output_to_log

log = logging.getLogger(__name__)


@dataclass
class FaceCrop:
    """One face: ``box`` (x0, y0, x1, y1) in image pixels, the aligned ``crop``
    (uint8 size x size x 3 RGB) and the 2x3 ``matrix`` mapping image to crop coordinates."""

    box: tuple[float, float, float, float]
    crop: np.ndarray
    matrix: np.ndarray


@functools.lru_cache(maxsize=None)
def _box_detector(min_confidence: float):
    """Per-process mediapipe full-range face detector (bundled in the wheel, no download).

    Built and run once on a blank image with MediaPipe's native start-up lines (XNNPACK,
    absl) sent to the log (:func:`synth.log.mediapipe_output_to_log`), not to the terminal."""
    with mediapipe_output_to_log(log):
        import mediapipe as mp

        detector = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                             min_detection_confidence=min_confidence)
        detector.process(np.zeros((64, 64, 3), np.uint8))  # the first inference prints the rest
    return detector


def _face_boxes(image: np.ndarray, min_confidence: float) -> list[tuple[float, float, float, float]]:
    h, w = image.shape[:2]
    result = _box_detector(min_confidence).process(np.ascontiguousarray(image))
    boxes = []
    for det in result.detections or []:
        b = det.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
    return boxes


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def find_faces(image: np.ndarray, crop_scale: float = 1.3, size: int = 256,
               min_confidence: float = 0.5) -> list[FaceCrop]:
    """All faces of ``image`` (uint8 HxWx3 RGB), largest first, as aligned crops.

    The face detector proposes boxes (it finds small and several faces, where the
    face mesh alone only sees one large face); the mesh then places landmarks inside
    a region twice the box, which also rejects detector false alarms on textures.
    When the detector finds nothing the mesh gets the whole image.
    """
    from synth.face import crop_face, get_detector

    check_image(image)
    mesh = get_detector()
    found = []  # (landmarks in image coordinates, landmark box)
    boxes = _face_boxes(image, min_confidence)
    for box in boxes or [None]:
        lms = _landmarks_in(mesh, image, box)
        if lms is None:
            continue
        lbox = tuple(float(v) for v in (*lms.min(axis=0), *lms.max(axis=0)))
        # Two detector boxes on one face give the same landmarks: keep one.
        if any(_iou(lbox, other) > 0.5 for _, other in found):
            continue
        found.append((lms, lbox))
    found.sort(key=lambda f: -(f[1][2] - f[1][0]) * (f[1][3] - f[1][1]))
    faces = []
    for lms, lbox in found:
        crop, _, matrix = crop_face(image, lms, scale=crop_scale, size=size)
        faces.append(FaceCrop(box=lbox, crop=crop, matrix=np.asarray(matrix)))
    return faces


def _landmarks_in(mesh, image: np.ndarray, box) -> np.ndarray | None:
    """Landmarks (468, 2) of the face in detector ``box`` (None: whole image), or None.

    The mesh returns the largest face of what it is given, so it gets a region twice
    the box; when that lands on a bigger neighbour (its centre outside ``box``) the
    search is repeated on a region 1.25 x the box.
    """
    h, w = image.shape[:2]
    if box is None:
        res = mesh.detect(image)
        return None if res is None else np.asarray(res.landmarks, dtype=np.float64)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for factor in (2.0, 1.25):
        half = factor * max(x1 - x0, y1 - y0) / 2
        rx0, ry0 = max(0, int(cx - half)), max(0, int(cy - half))
        rx1, ry1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:
            return None
        res = mesh.detect(np.ascontiguousarray(image[ry0:ry1, rx0:rx1]))
        if res is None:
            continue
        lms = np.asarray(res.landmarks, dtype=np.float64) + (rx0, ry0)
        mx, my = (lms.min(axis=0) + lms.max(axis=0)) / 2
        if x0 <= mx <= x1 and y0 <= my <= y1:
            return lms
    return None

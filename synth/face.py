"""Face landmarks (MediaPipe Face Mesh, 468 points), alignment and crops.

Coordinates: pixel coordinates (x, y) float32 with pixel *centres* at integers, the
OpenCV convention, so ``cv2.warpAffine`` with a matrix from this module moves image
content and points alike (``transform_points``).

Detection (:class:`LandmarkDetector`): MediaPipe's Face Mesh in static-image mode. Its
face detector (BlazeFace short range) misses some faces that fill the whole frame (tight
crops such as UTKFace), so when nothing is found the image is padded with a constant
border (``pad`` x the longer side on each side) and searched again; coordinates are mapped
back. Large images are downscaled to ``max_side`` before detection (the mesh model works
on a 192x192 face crop, so nothing is lost) and the points scaled back. The face box is
derived from the landmarks (min/max of the 468 points), not from the detector, so it is
the same box for every consumer; ``score`` is NaN because the legacy Face Mesh graph does
not expose a confidence.

Landmark groups (``FACE_OVAL``, ``LEFT_EYE`` ...) are index arrays computed once from
MediaPipe's ``FACEMESH_*`` connection sets; the module file holding them is loaded
directly, so importing this module (and ``synth.mask``) does not import mediapipe.
"""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ._checks import check_image
from .log import mediapipe_output_to_log, native_stderr_to_log

log = logging.getLogger(__name__)

__all__ = [
    "N_LANDMARKS", "FaceResult", "LandmarkDetector", "get_detector", "GROUPS", "CONTOURS",
    "FACE_OVAL", "LEFT_EYE", "RIGHT_EYE", "LEFT_BROW", "RIGHT_BROW", "NOSE", "LIPS", "MOUTH",
    "similarity_transform", "affine_transform", "transform_points", "warp_image", "crop_face",
    "face_box", "face_size", "check_landmarks",
]

N_LANDMARKS = 468


# ---------------------------------------------------------------- landmark groups
def _load_connections():
    """Import mediapipe's pure-python ``face_mesh_connections`` without importing mediapipe."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or spec.origin is None:
        raise ImportError("mediapipe is not installed (pip install mediapipe==0.10.21)")
    path = Path(spec.origin).parent / "python" / "solutions" / "face_mesh_connections.py"
    mspec = importlib.util.spec_from_file_location("_synth_face_mesh_connections", path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def _ordered_loops(edges) -> list[np.ndarray]:
    """Walk an undirected edge set made of disjoint cycles (or paths) into ordered index loops."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    # Start paths at their ends (degree 1) first, then cycles at their smallest index.
    starts = sorted(adj, key=lambda v: (len(adj[v]) != 1, v))
    for start in starts:
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in sorted(adj[cur]) if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


_conn = _load_connections()
_GROUP_EDGES = {
    "face_oval": _conn.FACEMESH_FACE_OVAL,
    "left_eye": _conn.FACEMESH_LEFT_EYE,
    "right_eye": _conn.FACEMESH_RIGHT_EYE,
    "left_brow": _conn.FACEMESH_LEFT_EYEBROW,
    "right_brow": _conn.FACEMESH_RIGHT_EYEBROW,
    "nose": _conn.FACEMESH_NOSE,
    "lips": _conn.FACEMESH_LIPS,
}
del _conn
#: group name -> list of ordered index loops (e.g. lips: outer and inner contour).
CONTOURS: dict[str, list[np.ndarray]] = {k: _ordered_loops(v) for k, v in _GROUP_EDGES.items()}
#: group name -> sorted unique landmark indices.
GROUPS: dict[str, np.ndarray] = {k: np.unique(np.array(sorted(v)).ravel()) for k, v in _GROUP_EDGES.items()}
for _v in [*(a for loops in CONTOURS.values() for a in loops), *GROUPS.values()]:
    _v.setflags(write=False)
FACE_OVAL = CONTOURS["face_oval"][0]  # ordered around the face
LEFT_EYE = GROUPS["left_eye"]  # the subject's left (image right for a frontal face)
RIGHT_EYE = GROUPS["right_eye"]
LEFT_BROW = GROUPS["left_brow"]
RIGHT_BROW = GROUPS["right_brow"]
NOSE = GROUPS["nose"]
LIPS = GROUPS["lips"]
MOUTH = LIPS


def check_landmarks(landmarks, name: str = "landmarks") -> np.ndarray:
    """Validate landmarks and return them as float32.

    Parameters
    ----------
    landmarks : array_like, (468, 2)
        (x, y) pixel coordinates.  The dtype must be numeric (kind ``i``, ``u``, ``f``, ``c``
        or ``m``: bool, object and string arrays are refused); all values finite after the
        conversion to float32.
    name : str, optional
        Argument name used in the error message.  Default ``"landmarks"``.

    Returns
    -------
    landmarks : numpy.ndarray, float32 (468, 2)
        The input itself when it already is a float32 array (no copy), else a converted copy.

    Raises
    ------
    ValueError
        The shape is not (468, 2), the dtype is not numeric, or a value is NaN or inf (e.g. a
        failed detection).
    """
    lm = np.asarray(landmarks)
    if lm.shape != (N_LANDMARKS, 2):
        raise ValueError(f"{name}: expected shape ({N_LANDMARKS}, 2), got {lm.shape}")
    if lm.dtype.kind not in "iufcm":  # = np.issubdtype(dtype, np.number), ~10x cheaper
        raise ValueError(f"{name}: expected numbers, got dtype {lm.dtype}")
    lm = lm.astype(np.float32, copy=False)
    if not np.isfinite(lm).all():
        raise ValueError(f"{name}: contains NaN or inf (failed detection?)")
    return lm


def face_box(landmarks) -> tuple[float, float, float, float]:
    """Bounding box of the landmarks.

    Parameters
    ----------
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite.

    Returns
    -------
    box : tuple of 4 float
        ``(x0, y0, x1, y1)``: min and max of the x and y coordinates over all 468 points.

    Raises
    ------
    ValueError
        ``landmarks`` is not of shape (468, 2), not numeric or contains NaN or inf.
    """
    lm = check_landmarks(landmarks)
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def face_size(landmarks) -> float:
    """Face size in pixels: the longer side of the landmark box (:func:`face_box`).

    Parameters
    ----------
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite.

    Returns
    -------
    size : float
        ``max(x1 - x0, y1 - y0)``, >= 0.

    Raises
    ------
    ValueError
        ``landmarks`` is not of shape (468, 2), not numeric or contains NaN or inf.
    """
    x0, y0, x1, y1 = face_box(landmarks)
    return float(max(x1 - x0, y1 - y0))


# ---------------------------------------------------------------- detection
@dataclass(frozen=True)
class FaceResult:
    """One detected face.

    landmarks: float32 (468, 2) pixel coordinates in the input image.
    box: (x0, y0, x1, y1) float, min/max of the landmarks.
    n_faces: number of faces found (the largest one is returned).
    score: detector confidence; NaN (Face Mesh does not report one).
    padded: True if the face was only found after padding the image.
    """

    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    n_faces: int
    score: float = float("nan")
    padded: bool = False


class LandmarkDetector:
    """MediaPipe Face Mesh wrapper; use as a context manager or call :meth:`close`.

    max_num_faces: faces searched for (``n_faces`` saturates at this number).
    pad: border (fraction of the longer side) added for the second attempt; 0 disables it.
    max_side: images whose longer side exceeds this are downscaled for detection.
    min_detection_confidence: passed to Face Mesh.
    """

    def __init__(self, max_num_faces: int = 4, pad: float = 0.25, max_side: int = 1024,
                 min_detection_confidence: float = 0.5):
        if not 1 <= int(max_num_faces) <= 32:
            raise ValueError(f"max_num_faces: expected 1..32, got {max_num_faces}")
        if not 0.0 <= pad <= 2.0:
            raise ValueError(f"pad: expected 0..2, got {pad}")
        if int(max_side) < 64:
            raise ValueError(f"max_side: expected >= 64, got {max_side}")
        self.max_num_faces = int(max_num_faces)
        self.pad = float(pad)
        self.max_side = int(max_side)
        # MediaPipe's native start-up lines (XNNPACK, absl) go to the log, not the terminal: while
        # the graph is built and until the first face is found (the last of them comes then)
        with mediapipe_output_to_log(log):
            import mediapipe as mp  # heavy import (~1 s): only when a detector is built

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=self.max_num_faces, refine_landmarks=False,
                min_detection_confidence=min_detection_confidence)
            # The graph opens its models on its own threads after the constructor returns, and
            # they write their lines then; a first frame waits until the graph is idle, so those
            # lines land inside this block even when a busy machine delays the threads.
            self._mesh.process(np.zeros((32, 32, 3), np.uint8))
        self._starting = True

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _faces(self, image: np.ndarray) -> list[np.ndarray]:
        """All faces in ``image`` as (468, 2) float32 arrays in its pixel coordinates."""
        if self._mesh is None:
            raise ValueError("LandmarkDetector is closed")
        h, w = image.shape[:2]
        if self._starting:
            with native_stderr_to_log(log):
                res = self._mesh.process(image)
            self._starting = not res.multi_face_landmarks
        else:
            res = self._mesh.process(image)
        if not res.multi_face_landmarks:
            return []
        out = []
        for face in res.multi_face_landmarks:
            xy = np.array([(p.x, p.y) for p in face.landmark[:N_LANDMARKS]], dtype=np.float32)
            # normalised [0,1] edge-to-edge -> pixel centres at integers
            out.append(xy * np.array([w, h], np.float32) - 0.5)
        return out

    def detect(self, image: np.ndarray) -> FaceResult | None:
        """Landmarks of the largest face in ``image`` (uint8 HxWx3 RGB), or None."""
        check_image(image)
        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        work = image
        if s < 1.0:
            work = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            # exact scale of the resize (rounding) per axis, for mapping back
            sx, sy = work.shape[1] / w, work.shape[0] / h
        else:
            sx = sy = 1.0
        work = np.ascontiguousarray(work)
        faces, padded = self._faces(work), False
        if not faces and self.pad > 0:
            p = int(round(self.pad * max(work.shape[:2])))
            border = cv2.copyMakeBorder(work, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            faces = [f - p for f in self._faces(border)]
            padded = True
        if not faces:
            return None
        areas = [np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]
        lm = faces[int(np.argmax(areas))]
        if s < 1.0:  # half-pixel-centre mapping of cv2.resize
            lm = (lm + 0.5) / np.array([sx, sy], np.float32) - 0.5
        lm = lm.astype(np.float32)
        return FaceResult(landmarks=lm, box=face_box(lm), n_faces=len(faces), padded=padded)

    __call__ = detect


_DETECTORS: dict[int, LandmarkDetector] = {}  # per-process cache (pid -> detector), see get_detector


def get_detector() -> LandmarkDetector:
    """The per-process :class:`LandmarkDetector`, built on first use.

    Returns
    -------
    detector : LandmarkDetector
        With the default settings (``max_num_faces=4``, ``pad=0.25``, ``max_side=1024``,
        ``min_detection_confidence=0.5``).

    Notes
    -----
    The first call in a process imports mediapipe and builds its graph (about a second).
    Detectors are cached by process id, so a forked worker never reuses its parent's
    MediaPipe graph; each is closed at interpreter exit (``atexit``).
    """
    pid = os.getpid()
    det = _DETECTORS.get(pid)
    if det is None:
        det = _DETECTORS[pid] = LandmarkDetector()
        atexit.register(det.close)
    return det


# ---------------------------------------------------------------- geometry
def _check_pts(pts, name: str) -> np.ndarray:
    p = np.asarray(pts, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (N, 2), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return p


def similarity_transform(src_pts, dst_pts) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``src_pts`` onto ``dst_pts``.

    Umeyama (1991), without reflection: the rotation has determinant +1.

    Parameters
    ----------
    src_pts : array_like, (N, 2)
        Source (x, y) points, N >= 2, finite, not all identical.
    dst_pts : array_like, (N, 2)
        Destination points, same shape, finite.

    Returns
    -------
    matrix : numpy.ndarray, float64 (2, 3)
        ``[s R | t]``: a point p maps to ``matrix[:, :2] @ p + matrix[:, 2]`` (usable with
        :func:`transform_points` and :func:`warp_image`).

    Raises
    ------
    ValueError
        A point array is not (N, 2) or contains NaN or inf; the shapes differ; N < 2; the
        source points are all identical (variance <= 1e-12).
    """
    src, dst = _check_pts(src_pts, "src_pts"), _check_pts(dst_pts, "dst_pts")
    if src.shape != dst.shape:
        raise ValueError(f"src_pts {src.shape} and dst_pts {dst.shape} must have the same shape")
    if len(src) < 2:
        raise ValueError("src_pts: need at least 2 points")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("src_pts: points are all identical")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def affine_transform(src_pts, dst_pts) -> np.ndarray:
    """Least-squares affine map of ``src_pts`` onto ``dst_pts``.

    Parameters
    ----------
    src_pts : array_like, (N, 2)
        Source (x, y) points, N >= 3, finite, not collinear.
    dst_pts : array_like, (N, 2)
        Destination points, same shape, finite.

    Returns
    -------
    matrix : numpy.ndarray, float64 (2, 3)
        A point p maps to ``matrix[:, :2] @ p + matrix[:, 2]``.

    Raises
    ------
    ValueError
        A point array is not (N, 2) or contains NaN or inf; the shapes differ; N < 3; the
        source points are collinear (least-squares rank < 3).
    """
    src, dst = _check_pts(src_pts, "src_pts"), _check_pts(dst_pts, "dst_pts")
    if src.shape != dst.shape:
        raise ValueError(f"src_pts {src.shape} and dst_pts {dst.shape} must have the same shape")
    if len(src) < 3:
        raise ValueError("src_pts: need at least 3 points")
    a = np.hstack([src, np.ones((len(src), 1))])
    sol, _, rank, _ = np.linalg.lstsq(a, dst, rcond=None)
    if rank < 3:
        raise ValueError("src_pts: points are collinear")
    return sol.T.copy()


def _check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix: expected shape (2, 3), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrix: contains NaN or inf")
    return m


def transform_points(pts, matrix) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points.

    Parameters
    ----------
    pts : array_like, (N, 2)
        (x, y) points, any real dtype (computed in float64; finiteness not checked).
    matrix : array_like, (2, 3)
        Affine matrix, finite: p maps to ``matrix[:, :2] @ p + matrix[:, 2]``.

    Returns
    -------
    out : numpy.ndarray, float32 (N, 2)
        The transformed points.

    Raises
    ------
    ValueError
        ``pts`` is not (N, 2); ``matrix`` is not (2, 3) or contains NaN or inf.
    """
    p = np.asarray(pts, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pts: expected shape (N, 2), got {p.shape}")
    m = _check_matrix(matrix)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT,
            "reflect": cv2.BORDER_REFLECT_101}


def _border(border: str) -> int:
    if border not in _BORDERS:
        raise ValueError(f"border: expected one of {sorted(_BORDERS)}, got {border!r}")
    return _BORDERS[border]


def warp_image(image: np.ndarray, matrix, size: tuple[int, int], border: str = "replicate",
               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp an image by an affine matrix.

    Parameters
    ----------
    image : numpy.ndarray, (H, W) or (H, W, C)
        Any dtype ``cv2.warpAffine`` supports (e.g. uint8, float32).  Not modified.
    matrix : array_like, (2, 3)
        Affine matrix mapping source pixel coordinates to output pixel coordinates (the
        forward map; OpenCV inverts it), finite.
    size : tuple of int
        ``(width, height)`` of the output (note the order), both >= 1.
    border : {"replicate", "constant", "reflect"}, optional
        Fill of the output pixels that map outside the image: edge replication, 0 (black),
        or mirror without repeating the edge (reflect-101).  Default ``"replicate"``.
    interpolation : int, optional
        OpenCV interpolation flag, passed as is.  Default ``cv2.INTER_LINEAR``.

    Returns
    -------
    out : numpy.ndarray, (height, width) or (height, width, C)
        ``image``'s dtype; a (H, W, 1) input comes back as (height, width), as OpenCV
        returns it.

    Raises
    ------
    ValueError
        ``image`` is not a 2-D or 3-D numpy array; ``size`` is not two integers >= 1;
        ``matrix`` is not (2, 3) or contains NaN or inf; unknown ``border``.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image: expected an HxW or HxWxC array, got {getattr(image, 'shape', type(image))}")
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"size: expected positive (width, height), got {size}")
    return cv2.warpAffine(image, _check_matrix(matrix), (w, h), flags=interpolation, borderMode=_border(border))


def crop_face(image: np.ndarray, landmarks, scale: float = 1.3, size: int = 256, border: str = "replicate"):
    """Square face crop centred on the landmark box.

    Parameters
    ----------
    image : numpy.ndarray, uint8 (H, W, 3), RGB
        Not modified.
    landmarks : array_like, (468, 2)
        Face-mesh landmarks, (x, y) pixel coordinates; any integer or floating dtype, all
        finite.
    scale : float, optional
        Side of the crop in units of the longer side of the landmark box (at least 1 px),
        in [1, 3]; 1.2-2.0 is typical.  Default 1.3.
    size : int, optional
        Output side in pixels, in [8, 8192] (converted with ``int``).  Default 256.
    border : {"replicate", "constant", "reflect"}, optional
        Fill of the parts of the crop outside the image: edge replication, black, or
        reflect-101.  Default ``"replicate"``.

    Returns
    -------
    crop : numpy.ndarray, uint8 (size, size, 3), RGB
        The resampled crop (bilinear).
    landmarks_in_crop : numpy.ndarray, float32 (468, 2)
        ``transform_points(landmarks, matrix)``.
    matrix : numpy.ndarray, float64 (2, 3)
        Maps original pixel coordinates into the crop (scale and shift only).

    Raises
    ------
    ValueError
        ``image`` is not a numpy uint8 (H, W, 3) array with H, W >= 1; invalid
        ``landmarks``; ``scale`` outside [1, 3]; ``size`` outside [8, 8192]; unknown
        ``border``.

    Notes
    -----
    Downscaling by more than 4/3 (output scale < 0.75) is anti-aliased: an integer-aligned
    region is first area-resampled, then the residual sub-pixel warp is applied.
    """
    check_image(image)
    lm = check_landmarks(landmarks)
    if not 1.0 <= float(scale) <= 3.0:
        raise ValueError(f"scale: expected a value in [1, 3], got {scale}")
    if not 8 <= int(size) <= 8192:
        raise ValueError(f"size: expected 8..8192, got {size}")
    size = int(size)
    x0, y0, x1, y1 = face_box(lm)
    side = float(scale) * max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    s = size / side
    # The crop spans [left, left + side] in original coordinates; crop pixel j spans
    # [j - 0.5, j + 0.5], hence x' = (x - left) * s - 0.5.
    left, top = cx - side / 2, cy - side / 2
    m = np.array([[s, 0.0, -left * s - 0.5], [0.0, s, -top * s - 0.5]])
    bmode = _border(border)
    if s < 0.75:
        # Area-resample an integer-aligned region first (anti-aliasing), then warp the residue.
        rx0, ry0 = int(np.floor(left)) - 1, int(np.floor(top)) - 1
        rside = int(np.ceil(side)) + 3
        H, W = image.shape[:2]
        pad = (max(0, -ry0), max(0, ry0 + rside - H), max(0, -rx0), max(0, rx0 + rside - W))
        region = image[max(ry0, 0):min(ry0 + rside, H), max(rx0, 0):min(rx0 + rside, W)]
        if any(pad):
            region = cv2.copyMakeBorder(region, *pad, bmode, value=(0, 0, 0))
        n = max(size, int(np.ceil(rside * s)))
        small = cv2.resize(region, (n, n), interpolation=cv2.INTER_AREA)
        r = n / rside  # region pixel x_r -> small: (x_r + 0.5) * r - 0.5; x_r = x - rx0
        m_small = np.array([[r, 0.0, (0.5 - rx0) * r - 0.5], [0.0, r, (0.5 - ry0) * r - 0.5]])
        m_res = _compose(m, _invert(m_small))
        crop = cv2.warpAffine(small, m_res, (size, size), flags=cv2.INTER_LINEAR, borderMode=bmode)
    else:
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=bmode)
    return crop, transform_points(lm, m), m


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix of ``a`` after ``b`` (apply b first)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]

"""Pose-to-reference alignment: one scale and one offset, fitted on the first driving frame.

As UniAnimate / MimicMotion do, the driving skeleton is scaled and shifted so that its first frame covers
the same region as the reference person; the same transform then applies to every frame, so the motion
itself is kept. Points are (x, y) in pixels.
"""

from __future__ import annotations

import numpy as np

from animlcm.errors import AnimlcmError


def fit_scale_offset(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray]:
    """Scale s and offset o with ``s * src + o ~ dst``: centroids match exactly and the RMS spread of the
    points about their centroid gives the scale (a similarity transform without rotation)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise AnimlcmError("alignment needs the same >= 2 points on the driving pose and on the reference")
    sc, dc = src.mean(0), dst.mean(0)
    spread_src = np.sqrt(((src - sc) ** 2).sum(1).mean())
    spread_dst = np.sqrt(((dst - dc) ** 2).sum(1).mean())
    if spread_src < 1e-6:
        raise AnimlcmError(
            "alignment: the driving pose's first frame has no extent (all points in one place)"
        )
    scale = float(spread_dst / spread_src)
    return scale, dc - scale * sc


def skeleton_bbox(image: np.ndarray, threshold: int = 16) -> np.ndarray | None:
    """The box (x0, y0, x1, y1) of the drawn (non-black) pixels of a skeleton image, or None if blank."""
    mask = np.asarray(image).max(-1) > threshold
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def box_corners(box: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) -> the two corners as points, the input to ``fit_scale_offset``."""
    return np.array([[box[0], box[1]], [box[2], box[3]]], np.float64)


def apply_to_points(points: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """(..., 2+) keypoints: x, y mapped; extra columns (confidence) kept."""
    out = np.array(points, np.float32, copy=True)
    out[..., :2] = out[..., :2] * scale + offset
    return out


def apply_to_images(images: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """Warp uint8 (F, H, W, 3) skeleton images by the transform; uncovered pixels stay black."""
    import cv2

    m = np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]], np.float64)
    h, w = images.shape[1:3]
    return np.stack([cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0) for im in images])

"""Faces: MediaPipe FaceDetection (embedded, full-range model), square crops with margin at 256x256.

Detection and cropping run on the source frames (a face in a 128 px output frame is a few pixels wide);
boxes are then mapped into the output frame by the caller. For ``--pose groundtruth`` (synthetic
dancers) the box comes from the head keypoints instead.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 256
HEAD_POINTS = (0, 14, 15, 16, 17)  # nose, eyes, ears (COCO-18)


class FaceDetector:
    """One detector per run (no tracking state): the most confident face per frame."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        from animlcm.stages.extract.pose import import_mediapipe, quiet_native_stderr

        mp = import_mediapipe()
        self._quiet = quiet_native_stderr
        # model_selection=1: the full-range model, for people a few metres away (full-body dance videos)
        with quiet_native_stderr():
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence
            )

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (b, h, w, 3) -> boxes float32 (b, 4) x0, y0, x1, y1 in frame pixels, found bool (b,)."""
        boxes = np.zeros((len(frames), 4), np.float32)
        found = np.zeros(len(frames), bool)
        with self._quiet():
            results = [self._det.process(np.ascontiguousarray(frame)) for frame in frames]
        for i, (frame, res) in enumerate(zip(frames, results, strict=True)):
            h, w = frame.shape[:2]
            if not res.detections:
                continue
            best = max(res.detections, key=lambda d: d.score[0])
            rb = best.location_data.relative_bounding_box
            boxes[i] = (rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h)
            found[i] = True
        return boxes, found

    def close(self) -> None:
        self._det.close()


def boxes_from_keypoints(keypoints: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(F, K, 3) openpose134 -> face boxes from the head points (nose, eyes, ears; neck for scale)."""
    boxes = np.zeros((len(keypoints), 4), np.float32)
    found = np.zeros(len(keypoints), bool)
    for i, kp in enumerate(keypoints):
        head = kp[list(HEAD_POINTS)]
        head = head[head[:, 2] >= threshold]
        if len(head) < 2:
            continue
        center = head[:, :2].mean(axis=0)
        extent = float(np.ptp(head[:, :2], axis=0).max())
        if kp[1, 2] >= threshold and kp[0, 2] >= threshold:  # nose-neck distance ~ head height
            extent = max(extent, 0.8 * float(np.linalg.norm(kp[0, :2] - kp[1, :2])))
        if extent < 2:
            continue
        half = extent / 2
        boxes[i] = (center[0] - half, center[1] - half, center[0] + half, center[1] + half)
        found[i] = True
    return boxes, found


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes around each box's centre, side (1 + margin) x its longer side."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + margin) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def crop_faces(
    frames: np.ndarray, squares: np.ndarray, found: np.ndarray, size: int = FACE_SIZE
) -> np.ndarray:
    """Crop each found square (padding with black outside the frame) and resize to size x size."""
    out = np.zeros((len(frames), size, size, 3), np.uint8)
    for i in np.flatnonzero(found):
        x0, y0, x1, y1 = squares[i]
        side = max(x1 - x0, 1.0)
        # affine map of the square onto the output crop; borders outside the frame stay black
        s = size / side
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out[i] = cv2.warpAffine(frames[i], m, (size, size), flags=interp, borderValue=(0, 0, 0))
    return out

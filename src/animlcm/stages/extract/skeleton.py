"""The keypoint layout and the ONE skeleton drawing routine (OpenPose / DWPose colour convention).

Layout ``openpose134`` (what rtmlib's ``to_openpose=True`` gives for DWPose): 0-17 body in OpenPose
COCO-18 order (nose, neck, r_shoulder, r_elbow, r_wrist, l_shoulder, l_elbow, l_wrist, r_hip, r_knee,
r_ankle, l_hip, l_knee, l_ankle, r_eye, l_eye, r_ear, l_ear), 18-23 feet (l_big_toe, l_small_toe, l_heel,
r_big_toe, r_small_toe, r_heel), 24-91 face (68 points, iBUG order), 92-112 left hand, 113-133 right hand
(21 points each, OpenPose hand order). Missing points have confidence 0.

Drawing follows DWPose's ``draw_pose`` (the maps Animate Anyone / Champ / UniAnimate were trained on):
17 body limbs as filled ellipses in the 18 OpenPose colours (the two shoulder-ear limbs of the 19-entry
limb list are never drawn, as in DWPose and ControlNet), limbs dimmed to 60%, then joints as dots; hand
bones in HSV rainbow colours with blue joints; face points as white dots; feet are not drawn. Line
widths scale with the frame (DWPose's 4 px sticks at 512 px).
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

LAYOUT = "openpose134"
NUM_KEYPOINTS = 134
BODY = slice(0, 18)
FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)

# OpenPose limb list (1-based, as in OpenPose/DWPose); the first 17 are drawn.
LIMBS = [
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
    (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18),
]  # fmt: skip
BODY_COLORS = [
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
]  # fmt: skip  (RGB)
HAND_EDGES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
]  # fmt: skip
HAND_COLORS = [
    tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
    for i in range(len(HAND_EDGES))
]


def _scale(height: int, width: int) -> float:
    return min(height, width) / 512.0


def draw_pose(keypoints: np.ndarray, height: int, width: int, threshold: float = 0.3) -> np.ndarray:
    """keypoints (K, 3) in output pixels (openpose134 or its first 18 body points) -> uint8 (H, W, 3) RGB."""
    s = _scale(height, width)
    stick = max(1, round(4 * s))
    joint_r = max(1, round(4 * s))
    face_r = max(1, round(3 * s))
    line = max(1, round(2 * s))
    canvas = np.zeros((height, width, 3), np.uint8)
    ok = keypoints[:, 2] >= threshold
    pts = keypoints[:, :2]

    body = pts[BODY]
    for i, (a, b) in enumerate(LIMBS[:17]):
        a, b = a - 1, b - 1
        if not (ok[a] and ok[b]):
            continue
        (x0, y0), (x1, y1) = body[a], body[b]
        length = math.hypot(x0 - x1, y0 - y1)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        poly = cv2.ellipse2Poly(
            (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), stick), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, poly, BODY_COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        if ok[i]:
            cv2.circle(canvas, (int(body[i, 0]), int(body[i, 1])), joint_r, BODY_COLORS[i], thickness=-1)

    if len(keypoints) >= NUM_KEYPOINTS:
        for hand in (LEFT_HAND, RIGHT_HAND):
            hp, hok = pts[hand], ok[hand]
            for (a, b), color in zip(HAND_EDGES, HAND_COLORS, strict=True):
                if hok[a] and hok[b]:
                    p0, p1 = hp[a].astype(int), hp[b].astype(int)
                    cv2.line(
                        canvas, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), color, thickness=line
                    )
            for p, good in zip(hp, hok, strict=True):
                if good:
                    cv2.circle(canvas, (int(p[0]), int(p[1])), joint_r, (0, 0, 255), thickness=-1)
        for p, good in zip(pts[FACE], ok[FACE], strict=True):
            if good:
                cv2.circle(canvas, (int(p[0]), int(p[1])), face_r, (255, 255, 255), thickness=-1)
    return canvas


def draw_skeletons(keypoints: np.ndarray, height: int, width: int, threshold: float = 0.3) -> np.ndarray:
    """(F, K, 3) -> uint8 (F, H, W, 3): one ``draw_pose`` per frame."""
    out = np.zeros((len(keypoints), height, width, 3), np.uint8)
    for i, kp in enumerate(keypoints):
        out[i] = draw_pose(kp, height, width, threshold)
    return out


def body_found(keypoints: np.ndarray, threshold: float = 0.3, min_points: int = 4) -> np.ndarray:
    """(F, K, 3) -> bool (F,): found when at least ``min_points`` of the 18 body points are confident."""
    return (keypoints[:, BODY, 2] >= threshold).sum(axis=1) >= min_points


def person_box(keypoints: np.ndarray, threshold: float = 0.3) -> np.ndarray | None:
    """Union box (x0, y0, x1, y1) of all confident keypoints over all frames, or None when there are none."""
    flat = keypoints.reshape(-1, 3)
    good = flat[flat[:, 2] >= threshold]
    if len(good) == 0:
        return None
    return np.array([good[:, 0].min(), good[:, 1].min(), good[:, 0].max(), good[:, 1].max()], np.float32)


def pad_layout(body18: np.ndarray) -> np.ndarray:
    """(F, 18, 3) body points -> (F, 134, 3) openpose134 with the rest at confidence 0."""
    out = np.zeros((len(body18), NUM_KEYPOINTS, 3), np.float32)
    out[:, BODY] = body18
    return out

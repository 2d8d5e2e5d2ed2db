"""The one skeleton drawing routine (OpenPose / DWPose colours) and the keypoint layout helpers."""

from __future__ import annotations

import numpy as np

from animlcm.stages.extract import skeleton
from animlcm.stages.extract.pose import MP_FACE_68


def _kp(points: dict[int, tuple[float, float]]) -> np.ndarray:
    kp = np.zeros((skeleton.NUM_KEYPOINTS, 3), np.float32)
    for i, (x, y) in points.items():
        kp[i] = (x, y, 1.0)
    return kp


def test_layout_slices_cover_134_points():
    parts = [skeleton.BODY, skeleton.FEET, skeleton.FACE, skeleton.LEFT_HAND, skeleton.RIGHT_HAND]
    idx = np.concatenate([np.arange(skeleton.NUM_KEYPOINTS)[p] for p in parts])
    np.testing.assert_array_equal(idx, np.arange(134))
    assert len(MP_FACE_68) == 68 and len(set(MP_FACE_68)) == 68 and max(MP_FACE_68) < 468


def test_limb_and_joint_colours_follow_openpose():
    # neck (1) -> right shoulder (2): the first limb, OpenPose colour (255, 0, 0) dimmed to 60%
    img = skeleton.draw_pose(_kp({1: (100, 256), 2: (400, 256)}), 512, 512)
    assert tuple(img[256, 250]) == (153, 0, 0)
    # joints are drawn on top at full strength in their own colours
    assert tuple(img[256, 100]) == skeleton.BODY_COLORS[1]
    assert tuple(img[256, 400]) == skeleton.BODY_COLORS[2]
    assert img[100, 100].sum() == 0  # background stays black


def test_missing_points_are_not_drawn():
    kp = _kp({1: (100, 256), 2: (400, 256)})
    kp[2, 2] = 0.1  # below the threshold: neither the limb nor the joint
    img = skeleton.draw_pose(kp, 512, 512, threshold=0.3)
    assert tuple(img[256, 250]) == (0, 0, 0)
    assert tuple(img[256, 400]) == (0, 0, 0)
    assert tuple(img[256, 100]) == skeleton.BODY_COLORS[1]


def test_hands_and_face_points():
    kp = _kp({92: (50, 50), 93: (150, 50), 30: (300, 300)})  # left hand wrist -> thumb1, one face point
    img = skeleton.draw_pose(kp, 512, 512)
    assert tuple(img[50, 100]) == skeleton.HAND_COLORS[0]  # first hand bone: HSV hue 0 = red
    assert tuple(img[50, 50]) == (0, 0, 255)  # hand joints are blue
    assert tuple(img[300, 300]) == (255, 255, 255)  # face points are white


def test_body18_draws_the_same_as_padded_layout():
    body = np.zeros((18, 3), np.float32)
    body[[0, 1, 2, 5]] = [[64, 20, 1], [64, 40, 1], [44, 40, 1], [84, 40, 1]]
    a = skeleton.draw_pose(body, 128, 128)
    b = skeleton.draw_pose(skeleton.pad_layout(body[None])[0], 128, 128)
    np.testing.assert_array_equal(a, b)
    assert a.any()


def test_body_found_and_person_box():
    kp = np.zeros((2, skeleton.NUM_KEYPOINTS, 3), np.float32)
    kp[0, :5] = [[10, 20, 1], [30, 40, 1], [5, 60, 1], [50, 70, 1], [20, 90, 0.9]]
    kp[1, :3] = [[1, 1, 1], [2, 2, 1], [3, 3, 0.1]]  # two confident points: not a body
    np.testing.assert_array_equal(skeleton.body_found(kp), [True, False])
    np.testing.assert_allclose(skeleton.person_box(kp[:1]), [5, 20, 50, 90])
    assert skeleton.person_box(np.zeros((3, 134, 3))) is None

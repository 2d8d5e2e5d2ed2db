"""The SMPLify-style fit recovers a known pose of the synthetic SMPL from its own keypoints.

Bounds tested (8 frames, 256 px frames, 150 px per metre, exact keypoints):
- 2D only: mean reprojection error < 1.5 px, camera scale within 3 %, translation within 3 px; 3D pose is
  ambiguous from 2D alone (limbs can flip towards / away from the camera), so it is not checked there.
- with mediapipe-style world landmarks: root-relative joint error (MPJPE) < 2 cm, limb bone directions within
  3 degrees on average and 8 degrees at worst, elbow and knee flexion within 6 degrees (the pose prior pulls
  bent joints slightly towards rest: about 4 degrees at a 57 degree elbow bend).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animlcm.stages.extract.smpl.fit import (
    _MP_TO_SMPL,
    FitConfig,
    JointModel,
    body_present,
    coco_from_smpl,
    fit_smpl,
    project,
)
from animlcm.stages.extract.smpl.model import load_body_model
from animlcm.stages.extract.smpl.synthetic import write_synthetic_smpl

FRAMES = 8
BONES = [(16, 18), (18, 20), (17, 19), (19, 21), (1, 4), (4, 7), (2, 5), (5, 8)]  # upper/lower arms and legs


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl_model")
    write_synthetic_smpl(folder)
    return load_body_model(folder)


def _true_motion():
    """A short dance: arms lowering and bending, one knee bending, body turning, fixed shape."""
    t = np.linspace(0, 1, FRAMES)
    pose = np.zeros((FRAMES, 23, 3))
    pose[:, 15, 2] = -0.9 + 0.6 * t  # left shoulder (joint 16) down -> up
    pose[:, 16, 2] = 0.9 - 0.4 * t  # right shoulder
    pose[:, 17, 1] = -0.2 - 0.8 * t  # left elbow flexion
    pose[:, 18, 1] = 0.6  # right elbow flexion
    pose[:, 3, 0] = 0.5 * t  # left knee flexion
    pose[:, 4, 0] = 0.3
    pose[:, 0, 0] = -0.3  # left hip forward
    orient = np.stack([np.zeros(FRAMES), np.linspace(-0.3, 0.3, FRAMES), np.zeros(FRAMES)], 1)
    betas = np.random.default_rng(0).normal(size=(1, 10)) * 0.5
    camera = np.tile([150.0, 128.0, 120.0], (FRAMES, 1))
    camera[:, 1] += np.linspace(-10, 10, FRAMES)
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(betas), as_t(pose.reshape(FRAMES, 69)), as_t(orient), as_t(camera)


def _keypoints(body, betas, pose, orient, camera):
    joints, landmarks = JointModel(body)(betas, pose, orient)
    xy = project(coco_from_smpl(joints, landmarks), camera)
    return torch.cat([xy, torch.ones(FRAMES, 18, 1)], -1).numpy(), joints


def _bone_angles(a, b):
    def dirs(j):
        return torch.nn.functional.normalize(
            j[:, [c for _, c in BONES]] - j[:, [p for p, _ in BONES]], dim=-1
        )

    return torch.rad2deg(torch.acos((dirs(a) * dirs(b)).sum(-1).clamp(-1, 1)))


def _flexion(j, a, b, c):
    u = torch.nn.functional.normalize(j[:, a] - j[:, b], dim=-1)
    v = torch.nn.functional.normalize(j[:, c] - j[:, b], dim=-1)
    return torch.rad2deg(torch.acos((u * v).sum(-1).clamp(-1, 1)))


def test_fast_joints_match_smplx(body):
    gen = torch.Generator().manual_seed(0)
    betas = torch.randn(1, 10, generator=gen) * 0.5
    pose, orient = torch.randn(4, 69, generator=gen) * 0.3, torch.randn(4, 3, generator=gen) * 0.3
    verts, joints = body.forward(betas, pose, orient)
    fast_joints, landmarks = JointModel(body)(betas, pose, orient)
    torch.testing.assert_close(fast_joints, joints, atol=1e-5, rtol=0)
    torch.testing.assert_close(landmarks, verts[:, body.landmarks], atol=1e-5, rtol=0)


def test_fit_from_2d_keypoints_reprojects_and_finds_the_camera(body):
    betas, pose, orient, camera = _true_motion()
    kp, _ = _keypoints(body, betas, pose, orient, camera)
    fit = fit_smpl(body, kp)
    assert fit.body_pose.shape == (FRAMES, 69) and fit.betas.shape == (10,)
    assert fit.error_px.mean() < 1.5
    np.testing.assert_allclose(fit.camera[:, 0], camera[:, 0].numpy(), rtol=0.03)
    np.testing.assert_allclose(fit.camera[:, 1:], camera[:, 1:].numpy(), atol=3.0)


def test_fit_with_world_landmarks_recovers_the_pose(body):
    betas, pose, orient, camera = _true_motion()
    kp, joints = _keypoints(body, betas, pose, orient, camera)
    world = np.zeros((FRAMES, 33, 3))
    for mp, smpl in _MP_TO_SMPL.items():  # mediapipe axes: y down, z away from the camera
        world[:, mp] = joints[:, smpl].numpy() * np.array([1.0, -1.0, -1.0])
    fit = fit_smpl(body, kp, world)
    fitted, _ = JointModel(body)(
        torch.tensor(fit.betas)[None], torch.tensor(fit.body_pose), torch.tensor(fit.global_orient)
    )

    def root_relative(j):
        return j - j[:, :1]

    mpjpe = (root_relative(fitted) - root_relative(joints)).norm(dim=-1).mean()
    assert mpjpe < 0.02
    angles = _bone_angles(fitted, joints)
    assert angles.mean() < 3 and angles.max() < 8
    for a, b, c in ((16, 18, 20), (17, 19, 21), (1, 4, 7), (2, 5, 8)):  # elbows and knees
        err = (_flexion(fitted, a, b, c) - _flexion(joints, a, b, c)).abs()
        assert err.max() < 6, (a, b, c, err)


def test_person_seen_from_behind_is_fitted_turned_around(body):
    # A person seen from behind: their left shoulder is on the image's left. The fit must not end up
    # facing the camera (that would mirror left and right limbs).
    betas, pose, orient, camera = _true_motion()
    orient = orient + torch.tensor([0.0, np.pi, 0.0])
    kp, _ = _keypoints(body, betas, pose, orient, camera)
    kp[:, [0, 14, 15], 2] = 0  # face not visible from behind
    fit = fit_smpl(body, kp, cfg=FitConfig(iters_full=40))
    rot = torch.linalg.matrix_exp(_skew(torch.tensor(fit.global_orient)))
    forward = rot[:, :, 2]  # the body's +z (its front) in camera space
    assert (forward[:, 2] < -0.5).all()  # points away from the viewer


def _skew(v):
    zero = torch.zeros_like(v[:, 0])
    return torch.stack(
        [zero, -v[:, 2], v[:, 1], v[:, 2], zero, -v[:, 0], -v[:, 1], v[:, 0], zero], dim=1
    ).view(-1, 3, 3)


def test_body_present_needs_a_torso():
    kp = np.zeros((3, 18, 3), np.float32)
    kp[0, :, 2] = 1.0  # everything
    kp[1, [0, 3, 4, 6, 7, 9, 10], 2] = 1.0  # 7 points but no shoulder or hip
    kp[2, [2, 5, 8, 11], 2] = 1.0  # torso only: 4 points < min_points
    assert body_present(kp, FitConfig()).tolist() == [True, False, False]

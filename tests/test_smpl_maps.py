"""``compute_smpl_maps``: the extract-facing contract, map encodings, frames without a body, real footage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl import MAP_NAMES, FitConfig, compute_smpl_maps
from animlcm.stages.extract.smpl.fit import JointModel, coco_from_smpl, project
from animlcm.stages.extract.smpl.maps import load_palette, vertex_colors
from animlcm.stages.extract.smpl.model import load_body_model
from animlcm.stages.extract.smpl.synthetic import write_synthetic_smpl

FAST = FitConfig(iters_camera=20, iters_full=40)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl_model")
    write_synthetic_smpl(folder)
    return folder


def _synthetic_keypoints(model_dir, frames=4, hw=(96, 80)):
    body = load_body_model(model_dir)
    pose = torch.zeros(frames, 69)
    pose[:, 47] = -1.0  # left arm down (shoulder z)
    pose[:, 50] = 1.0  # right arm down
    joints, lm = JointModel(body)(torch.zeros(1, 10), pose, torch.zeros(frames, 3))
    camera = torch.tensor([[45.0, hw[1] / 2, hw[0] / 2]] * frames)
    xy = project(coco_from_smpl(joints, lm), camera)
    return torch.cat([xy, torch.ones(frames, 18, 1)], -1).numpy(), body


def test_maps_params_and_flags(model_dir):
    hw = (96, 80)
    kp, body = _synthetic_keypoints(model_dir, hw=hw)
    kp = np.concatenate([kp, np.zeros((4, 110, 3), np.float32)], axis=1)  # 18 + hands + face
    kp[2, :, 2] = 0.0  # no body in frame 2
    result = compute_smpl_maps(kp, hw, model_dir, fit_config=FAST)

    assert result.valid.tolist() == [True, True, False, True]
    for name in MAP_NAMES:
        assert result.maps[name].shape == (4, *hw, 3) and result.maps[name].dtype == np.uint8
        assert not result.maps[name][2].any()  # black where no body
    p = result.params
    assert p["betas"].shape == (10,)
    assert p["body_pose"].shape == (4, 69) and p["global_orient"].shape == (4, 3)
    assert p["transl"].shape == (4, 3) and p["camera"].shape == (4, 3)
    assert not p["camera"][2].any() and np.isnan(result.error_px[2])
    assert (result.error_px[result.valid] < 1.5).all()
    # perspective-equivalent translation: person in front of the camera (-z), about f/s away
    assert np.allclose(p["transl"][0, 2], -max(hw) / p["camera"][0, 0])

    fg = result.maps["depth"][0, ..., 0] > 0
    assert 0.05 < fg.mean() < 0.6
    for name in MAP_NAMES:  # the three maps cover the same pixels
        assert np.array_equal(result.maps[name][0].any(-1), fg)
    # Depth: per-frame normalised, nearest pixel 255, nothing darker than the floor (0.2 -> 51).
    depth = result.maps["depth"][0, ..., 0]
    assert depth.max() == 255 and depth[fg].min() >= 50
    assert (result.maps["depth"][0, ..., 0] == result.maps["depth"][0, ..., 1]).all()
    # Normal: the chest faces the camera -> close to (128, 128, 255).
    neck, hips = kp[0, 1, :2], kp[0, [8, 11], :2].mean(0)
    cx, cy = ((neck + hips) / 2).round().astype(int)
    assert np.abs(result.maps["normal"][0, cy, cx].astype(int) - [128, 128, 255]).max() < 40
    # Semantic: the model's part colours (rigidly skinned prisms: one colour per part, no blending).
    colors = vertex_colors(body.parts.numpy())
    semantic = result.maps["semantic"][0][fg]
    assert set(map(tuple, np.unique(semantic, axis=0))) <= set(map(tuple, colors))
    # the chest pixel shows a spine part's colour (pelvis, spine1 or spine2 prisms)
    spine = {tuple(colors[body.parts.numpy() == j][0]) for j in (0, 3, 6)}
    assert tuple(result.maps["semantic"][0, cy, cx]) in spine


def test_palette_per_vertex_or_per_part():
    palette = load_palette()
    assert palette.shape == (6890, 3) and palette.dtype == np.uint8
    parts = np.arange(24)
    colours = vertex_colors(parts)
    assert len(np.unique(colours, axis=0)) == 24  # one distinct colour per part
    assert np.array_equal(vertex_colors(np.zeros(6890, int)), palette)  # real SMPL: Champ colours as they are
    custom = np.full((24, 3), 7, np.uint8)
    assert (vertex_colors(parts, custom) == 7).all()


def test_no_body_anywhere_gives_black_maps(model_dir):
    result = compute_smpl_maps(np.zeros((2, 18, 3), np.float32), (32, 32), model_dir)
    assert not result.valid.any()
    assert all(not m.any() for m in result.maps.values())


def test_bad_inputs_fail_with_one_line(model_dir, tmp_path):
    with pytest.raises(AnimlcmError, match="expected \\(frames, >=18, 3\\)"):
        compute_smpl_maps(np.zeros((2, 17, 3)), (32, 32), model_dir)
    with pytest.raises(AnimlcmError, match="world landmarks"):
        compute_smpl_maps(np.zeros((2, 18, 3)), (32, 32), model_dir, world_landmarks=np.zeros((2, 18, 3)))
    with pytest.raises(AnimlcmError, match="no SMPL model found"):
        compute_smpl_maps(np.zeros((2, 18, 3)), (32, 32), tmp_path)


# mediapipe pose landmark of each coco18 point (neck = mid-shoulders, filled below)
_MP_FOR_COCO = [0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]


def test_real_dance_video_maps_cover_the_person(real_data, model_dir):
    import decord
    import mediapipe as mp

    size = 128
    reader = decord.VideoReader(str(real_data / "dance_rgb_692x1108.mp4"))
    frames = reader.get_batch([0, 50, 100]).asnumpy()
    src_h, src_w = frames.shape[1:3]
    # Pad to a square (keeps the whole person) and scale to the tiny preset's 128 x 128.
    scale, pad_x = size / src_h, (src_h - src_w) / 2
    kp = np.zeros((len(frames), 18, 3), np.float32)
    world = np.zeros((len(frames), 33, 3), np.float32)
    person = np.zeros((len(frames), size, size), bool)
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        for i, frame in enumerate(frames):
            res = pose.process(frame)
            assert res.pose_landmarks is not None
            lms = res.pose_landmarks.landmark
            for c, m in enumerate(_MP_FOR_COCO):
                if m >= 0:
                    x, y = (lms[m].x * src_w + pad_x) * scale, lms[m].y * src_h * scale
                    kp[i, c] = (x, y, lms[m].visibility)
            kp[i, 1] = (kp[i, 2] + kp[i, 5]) / 2
            world[i] = [(p.x, p.y, p.z) for p in res.pose_world_landmarks.landmark]
            ys, xs = np.nonzero(res.segmentation_mask > 0.5)
            person[i, (ys * scale).astype(int), ((xs + pad_x) * scale).astype(int)] = True

    result = compute_smpl_maps(kp, (size, size), model_dir, world_landmarks=world)
    assert result.valid.all()
    assert np.nanmax(result.error_px) < 6.0  # px at 128: the mannequin's proportions are not the dancer's
    for i in range(len(frames)):
        fg = result.maps["semantic"][i].any(-1)
        assert fg.mean() > 0.02
        # The body lies where the person is: most rendered pixels fall on the (slightly grown) person mask.
        grown = person[i].copy()
        for axis in (0, 1):
            grown |= np.roll(person[i], 2, axis) | np.roll(person[i], -2, axis)
        assert (fg & grown).sum() / fg.sum() > 0.8
        assert (fg & person[i]).sum() / person[i].sum() > 0.3

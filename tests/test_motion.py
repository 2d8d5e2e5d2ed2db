"""DanceLCM eq. 6 motion masks: hand-computed cases and the independent spec vector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from animlcm.stages.extract.motion import motion_mask, motion_mask_uint8, pixel_motion_mask, reduce_to_latent


def test_hand_computed_three_frames():
    # One pixel changes by 0.5 in one channel between frames 1 and 2; another by exactly delta (not > delta).
    f = np.zeros((3, 2, 2, 3), np.float32)
    f[2, 0, 1, 1] = 0.5  # frame 2 differs from frame 1 at (0, 1)
    f[1:, 1, 0, :] = 0.25  # frames 0 -> 1 differ by 0.25 at (1, 0), all channels
    f[2, 1, 1, 0] = 0.2  # |0.2 - 0| is not > 0.2
    m = pixel_motion_mask(f, delta=0.2)
    expected = np.zeros((3, 2, 2), bool)
    expected[1, 0, 1] = expected[2, 0, 1] = True  # t=1 via its next frame, t=2 via its previous frame
    expected[0, 1, 0] = expected[1, 1, 0] = True  # t=0 via next, t=1 via previous
    np.testing.assert_array_equal(m, expected)


def test_first_and_last_frames_use_their_one_neighbour():
    f = np.zeros((4, 1, 1, 3), np.float32)
    f[3] = 1.0  # only frames 2 and 3 differ
    m = pixel_motion_mask(f, 0.2)[:, 0, 0]
    np.testing.assert_array_equal(m, [False, False, True, True])


def test_single_frame_has_no_motion():
    assert not pixel_motion_mask(np.random.rand(1, 4, 4, 3), 0.2).any()


def test_reduce_any_pixel_in_cell():
    m = np.zeros((1, 4, 6), bool)
    m[0, 3, 5] = True  # bottom-right pixel -> bottom-right cell of a 2x3 grid of 2x2 blocks
    r = reduce_to_latent(m, (2, 3))
    expected = np.zeros((1, 2, 3), bool)
    expected[0, 1, 2] = True
    np.testing.assert_array_equal(r, expected)
    with pytest.raises(ValueError, match="not a multiple"):
        reduce_to_latent(m, (3, 3))


def test_spec_vector(shared_dir):
    spec = json.loads((shared_dir / "data" / "spec_vectors.json").read_text())["motion_mask"]
    frames = np.array(spec["frames_FHWC"], np.float32)
    expected = np.array(spec["mask_FHW"], bool)
    m = motion_mask(frames, spec["delta"], latent_hw=frames.shape[1:3])
    np.testing.assert_array_equal(m, expected)


def test_uint8_path_matches_float_definition():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 16, 16, 3)).astype(np.uint8)
    for hw in ((4, 4), (16, 16)):
        direct = motion_mask(frames.astype(np.float64) / 255.0, 0.2, hw)
        np.testing.assert_array_equal(motion_mask_uint8(frames, 0.2, hw), direct)


def test_uint8_threshold_is_strict():
    frames = np.zeros((2, 1, 3, 3), np.uint8)
    frames[1, 0, 1, 2] = 51  # 51 / 255 == delta exactly: not > delta
    frames[1, 0, 2, 0] = 52
    np.testing.assert_array_equal(motion_mask_uint8(frames, 0.2, (1, 3))[:, 0], [[False, False, True]] * 2)

"""Render's file edges and pure helpers: video/image IO, pose sources, alignment maths, preview layout."""

from __future__ import annotations

import av
import numpy as np
import pytest

from animlcm.errors import AnimlcmError
from animlcm.stages.render import align, preview, sources, videoio


def _skeleton_frames(n: int, h: int = 64, w: int = 48) -> np.ndarray:
    """Black frames with a coloured bar that moves: what a skeleton video looks like."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, 10:50, 5 + i : 9 + i] = (255, 0, 85)
    return frames


def test_video_round_trip_keeps_frame_count_and_fps(tmp_path):
    frames = _skeleton_frames(7)
    out = tmp_path / "clip.mp4"
    videoio.write_video(out, frames, fps=12.5)
    assert not (tmp_path / "clip.mp4.tmp").exists()
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert float(s.average_rate) == pytest.approx(12.5)
        assert sum(1 for _ in c.decode(s)) == 7
    back, fps = videoio.read_video(out)
    assert back.shape == frames.shape and fps == pytest.approx(12.5)
    assert np.abs(back.astype(int) - frames).mean() < 6  # lossy but close
    assert len(videoio.read_video(out, max_frames=3)[0]) == 3


def test_reference_image_errors(tmp_path):
    with pytest.raises(AnimlcmError, match="not found"):
        videoio.read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(AnimlcmError, match="cannot read"):
        videoio.read_image(bad)


def test_reference_modes_read_as_a_person_would_see_them(tmp_path):
    from PIL import Image

    with pytest.raises(AnimlcmError, match="is a folder, not an image"):
        videoio.read_image(tmp_path)
    # 16-bit grey: a mid-grey ramp stays a mid-grey ramp (PIL's convert("RGB") turned it all white)
    ramp = (np.arange(64, dtype=np.uint16)[None, :].repeat(8, 0) * 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    got = videoio.read_image(tmp_path / "grey16.png")
    assert got.shape == (8, 64, 3) and (got[..., 0] == got[..., 2]).all()
    expected = np.clip(ramp / 257.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(got[..., 0], expected) and got.min() == 0 and 240 <= got.max() < 255
    # RGBA cut-out: transparent -> the chosen background, half-transparent -> the mix, opaque kept
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[0, :, 3], rgba[1, :, 3], rgba[2:, :, 3] = 0, 128, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    assert videoio.image_has_alpha(tmp_path / "cut.png")
    assert not videoio.image_has_alpha(tmp_path / "grey16.png")
    white = videoio.read_image(tmp_path / "cut.png", alpha_background=255)
    black = videoio.read_image(tmp_path / "cut.png")
    assert (white[0] == 255).all() and (black[0] == 0).all()
    assert (white[2:] == (200, 40, 10)).all() and (black[2:] == (200, 40, 10)).all()
    half = 128 / 255
    assert white[1, 0, 1] == int(40 * half + 255 * (1 - half) + 0.5)


def test_image_folder_source_sorted_and_resized(tmp_path):
    frames = _skeleton_frames(5)
    for i in (3, 0, 4, 1, 2):  # written out of order; read back sorted by name
        videoio.write_image(tmp_path / f"{i:03d}.png", frames[i])
    clip = sources.load_pose_source(tmp_path, 32, 24)
    assert clip.kind == "image-folder" and clip.skeleton.shape == (5, 32, 24, 3)
    np.testing.assert_array_equal(clip.skeleton, sources.fit_frames(frames, 32, 24))
    assert len(sources.load_pose_source(tmp_path, 32, 24, max_frames=2).skeleton) == 2


def test_empty_sources_fail_clearly(tmp_path):
    with pytest.raises(AnimlcmError, match="no skeleton images"):
        sources.load_pose_source(tmp_path, 32, 32)
    with pytest.raises(AnimlcmError, match="pose source not found"):
        sources.load_pose_source(tmp_path / "missing.mp4", 32, 32)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(AnimlcmError, match="empty.mp4: empty file"):
        sources.load_pose_source(empty, 32, 32)


def test_skeleton_video_source_keeps_fps(tmp_path):
    path = tmp_path / "skel.mp4"
    videoio.write_video(path, _skeleton_frames(6), fps=24)
    clip = sources.load_pose_source(path, 32, 32)
    assert (
        clip.kind == "skeleton-video"
        and clip.fps == pytest.approx(24)
        and clip.skeleton.shape == (6, 32, 32, 3)
    )


def test_skeleton_detection_on_real_footage(real_data):
    skel, _ = videoio.read_video(real_data / "pose_skeleton_1.mp4", max_frames=4)
    rgb, _ = videoio.read_video(real_data / "dance_rgb_692x1108.mp4", max_frames=4)
    assert sources.looks_like_skeleton(skel)
    assert not sources.looks_like_skeleton(rgb)


def test_fit_frames_and_fit_points_agree():
    # a 40x80 (HxW) frame with a dot at (x=50, y=30) -> 32x32: scale 0.4 to 16x32, 8 px black bars above/below
    frame = np.full((1, 40, 80, 3), 60, np.uint8)
    frame[0, 28:33, 48:53] = 255
    out = sources.fit_frames(frame, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    assert (out[0, :8] == 0).all() and (out[0, 24:] == 0).all() and (out[0, 8:24] > 0).all()
    pt = sources.fit_points(np.array([[50.0, 30.0, 1.0]]), (40, 80), 32, 32)[0]
    assert pt[0] == pytest.approx(50 * 0.4) and pt[1] == pytest.approx(30 * 0.4 + 8)
    ys, xs = np.nonzero(out[0].max(-1) > 128)
    assert abs(xs.mean() - pt[0]) <= 1 and abs(ys.mean() - pt[1]) <= 1


def test_parse_cache_spec(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    assert sources.parse_cache_spec(f"{tmp_path}:dance_01") == (tmp_path, "dance_01")
    assert sources.parse_cache_spec(str(tmp_path / "video.mp4")) is None
    assert sources.parse_cache_spec(f"{tmp_path / 'nocache'}:x") is None


def test_alignment_by_hand():
    # driving box 10..30 x 20..60; reference box 50..90 x 0..80: twice as big, shifted
    src = align.box_corners(np.array([10.0, 20.0, 30.0, 60.0]))
    dst = align.box_corners(np.array([50.0, 0.0, 90.0, 80.0]))
    scale, offset = align.fit_scale_offset(src, dst)
    assert scale == pytest.approx(2.0)
    np.testing.assert_allclose(offset, [30.0, -40.0])  # 2 * (20, 40) + o = (70, 40)
    np.testing.assert_allclose(align.apply_to_points(src, scale, offset), dst)
    kp = np.array([[[20.0, 40.0, 0.9]]])
    np.testing.assert_allclose(align.apply_to_points(kp, scale, offset), [[[70.0, 40.0, 0.9]]], rtol=1e-6)


def test_alignment_of_images_moves_the_box():
    img = np.zeros((1, 100, 100, 3), np.uint8)
    img[0, 20:40, 10:20] = 200
    box = align.skeleton_bbox(img[0])
    np.testing.assert_array_equal(box, [10, 20, 20, 40])
    scale, offset = align.fit_scale_offset(
        align.box_corners(box), align.box_corners(np.array([40, 10, 60, 50]))
    )
    moved = align.skeleton_bbox(align.apply_to_images(img, scale, offset)[0])
    np.testing.assert_allclose(moved, [40, 10, 60, 50], atol=1.5)
    assert align.skeleton_bbox(np.zeros((8, 8, 3), np.uint8)) is None
    with pytest.raises(AnimlcmError, match="no extent"):
        align.fit_scale_offset(np.ones((2, 2)), np.array([[0, 0], [1, 1]]))


def test_preview_layout():
    ref = np.full((32, 24, 3), 100, np.uint8)
    skel = _skeleton_frames(10, 32, 24)
    frames = np.full((10, 32, 24, 3), 50, np.uint8)
    assert preview.pick_frames(10, 4) == [0, 3, 6, 9]
    assert preview.pick_frames(2, 4) == [0, 1]
    grid = preview.preview_grid(ref, skel, frames)
    g, lh = preview.GAP, preview.LABEL_H
    assert grid.shape == (2 * (32 + lh) + 3 * g, 5 * 24 + 6 * g, 3)
    # reference top-left, a generated frame bottom-right, below their caption strips
    assert (grid[g + lh : g + lh + 32, g : g + 24] == 100).all()
    y, x = 2 * g + (32 + lh) + lh, g + 4 * (24 + g)
    assert (grid[y : y + 32, x : x + 24] == 50).all()


def test_rgb_video_source_extracts_poses(real_data):
    clip = sources.load_pose_source(real_data / "dance_rgb_692x1108.mp4", 128, 96, max_frames=3)
    assert clip.kind == "rgb-video" and clip.skeleton.shape == (3, 128, 96, 3)
    assert clip.keypoints.shape == (3, 134, 3) and (clip.keypoints[:, :18, 2] > 0.3).sum() >= 3 * 8
    assert sources.looks_like_skeleton(clip.skeleton)  # drawn on black, as the cache's maps are


def test_alignment_moves_the_first_skeleton_onto_the_reference(real_data):
    from animlcm.stages.render.run import align_clip

    clip = sources.load_pose_source(real_data / "pose_skeleton_2.mp4", 128, 128, max_frames=2)
    shifted = align.apply_to_images(clip.skeleton, 0.6, np.array([40.0, 30.0]))  # small, off to the side
    clip.skeleton = shifted
    ref = videoio.read_image(real_data / "ref_person_2.png")
    aligned = align_clip(clip, ref, 128, 128)
    ref_kp = sources.fit_points(sources.detect_keypoints(ref[None], "ref"), ref.shape[:2], 128, 128)
    target = align.skeleton_bbox(sources.draw_skeletons(ref_kp, 128, 128)[0])
    before, after = align.skeleton_bbox(shifted[0]), align.skeleton_bbox(aligned.skeleton[0])
    assert np.abs(after - target).max() < 6 < np.abs(before - target).max()
    assert aligned.skeleton.shape == clip.skeleton.shape


def test_alignment_without_a_person_on_the_reference_says_no_align(real_data):
    from animlcm.stages.render.run import align_clip

    clip = sources.load_pose_source(real_data / "pose_skeleton_2.mp4", 64, 64, max_frames=1)
    with pytest.raises(
        AnimlcmError, match="blank.png: no person found to align the poses to; render with --no-align"
    ):
        align_clip(clip, np.zeros((64, 64, 3), np.uint8), 64, 64, "blank.png")


def test_an_opaque_alpha_channel_gets_no_transparency_note(tmp_path, real_data):
    from PIL import Image

    opaque = np.full((40, 40, 4), 200, np.uint8)
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert not videoio.image_has_alpha(tmp_path / "opaque.png")
    assert not videoio.image_has_alpha(real_data / "ref_person_1.png")  # RGBA, opaque everywhere

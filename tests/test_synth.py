"""The synthetic dancer world: seeded looks and motions, the drawing, the files `animlcm synth` writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from animlcm.errors import AnimlcmError
from animlcm.synth import layout as L
from animlcm.synth.config import SynthConfig
from animlcm.synth.draw import draw_frame, draw_layers, reference_image
from animlcm.synth.identity import identity_for
from animlcm.synth.motion import dance, dance_keypoints, neutral_pose, normalised_dance_keypoints
from animlcm.synth.parts import load_parts, parts_path, write_parts
from animlcm.synth.world import (
    clip_background,
    clip_name,
    generate,
    identity_name,
    load_pose,
    pose_path,
    render_clip,
)


def _decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _psnr(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


# ------------------------------------------------------------------------------------------ seeds and splits


def test_identity_depends_only_on_seed_split_index():
    assert identity_for(3, 5) == identity_for(3, 5)
    assert identity_for(3, 5) != identity_for(3, 6)
    assert identity_for(3, 5) != identity_for(4, 5)
    looks = {dataclasses.replace(identity_for(0, i), index=0) for i in range(12)}
    assert len(looks) == 12


def test_heldout_identities_and_motions_are_never_train_ones():
    train = [dataclasses.replace(identity_for(7, i, "train"), index=0) for i in range(16)]
    held = [dataclasses.replace(identity_for(7, i, "heldout"), index=0) for i in range(16)]
    assert not set(train) & set(held)
    # shirts are continuous colours: any shared one would mean a shared stream
    assert not {x.shirt.c1 for x in train} & {x.shirt.c1 for x in held}
    a = render_clip(7, "train", 0, 0, 8, (64, 64)).motion.keypoints
    b = render_clip(7, "heldout", 0, 0, 8, (64, 64)).motion.keypoints
    assert np.abs(a - b).max() > 2.0
    with pytest.raises(AnimlcmError, match="unknown split"):
        identity_for(0, 0, "test")


def test_same_seed_same_frames_and_keypoints():
    a = render_clip(11, "train", 1, 2, 8, (64, 64))
    b = render_clip(11, "train", 1, 2, 8, (64, 64))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.motion.keypoints, b.motion.keypoints)
    c = render_clip(11, "train", 1, 3, 8, (64, 64))
    assert np.abs(a.frames.astype(int) - c.frames).mean() > 5  # another clip: another motion and background


# --------------------------------------------------------------------------------------------------- motion


@pytest.mark.parametrize("size", [64, 128, (96, 64), (64, 112)])
def test_keypoints_and_drawing_stay_inside_the_frame(size):
    h, w = (size, size) if isinstance(size, int) else size
    for seed in range(4):
        ident = identity_for(seed, 0)
        m = dance(seed, 24, size, 16.0, ident.body)
        kp = m.keypoints
        assert kp.shape == (24, 18, 3) and kp.dtype == np.float32
        assert (kp[..., 0] >= 0).all() and (kp[..., 0] <= w - 1).all()
        assert (kp[..., 1] >= 0).all() and (kp[..., 1] <= h - 1).all()
        assert set(np.unique(kp[..., 2])) <= {0.0, 1.0}
        bg = np.zeros((h, w, 3), np.float32)
        for f in (0, 11, 23):
            _, mask = draw_frame(ident, m.frame(f), bg, return_mask=True)
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert border.max() == 0, f"seed {seed} frame {f}: the dancer touches the border"
            assert mask.mean() > 0.05  # and it is really there


def test_motion_is_smooth_with_fast_bursts():
    ratios = []
    for seed in range(10):
        m = dance(seed, 48, 128, 16.0)
        body = m.keypoints[..., :2] / m.unit[:, None, None]  # body units: the dancer is ~1 tall
        speed = np.linalg.norm(np.diff(body, axis=0), axis=-1).max(axis=1)  # fastest joint per frame step
        assert speed.max() < 0.25, f"seed {seed}: a joint jumps {speed.max():.2f} body heights in one frame"
        ratios.append(speed.max() / np.median(speed))
    # bursts: most clips have a step at least twice as fast as their typical one
    assert sum(r > 2.0 for r in ratios) >= 8, ratios


def test_motion_plays_at_the_same_speed_at_any_fps():
    # frame 2k at 32 fps and frame k at 16 fps are the same instant: same pose up to the camera fit
    a = dance_keypoints(5, 33, 128, 32.0)[::2]
    b = dance_keypoints(5, 17, 128, 16.0)
    assert np.abs(a - b)[..., :2].max() < 6.0
    assert np.abs(a - dance_keypoints(5, 17, 128, 16.0)[::-1]).max() > 6.0


def test_normalised_dance_is_in_unit_square():
    kp = normalised_dance_keypoints(2, 16, aspect=0.75)
    assert kp.shape == (16, 18, 3)
    assert kp[..., :2].min() >= 0 and kp[..., :2].max() <= 1
    assert kp[..., 1].max() - kp[..., 1].min() > 0.5  # a standing dancer fills most of the height


def test_skeleton_has_plausible_proportions():
    kp = neutral_pose(256).keypoints
    y = kp[:, 1]
    # head above neck above hips above knees above ankles; left on the image right when facing the camera
    assert y[L.NOSE] < y[L.NECK] < y[L.R_HIP] < y[L.R_KNEE] < y[L.R_ANKLE]
    assert y[L.R_EYE] < y[L.NOSE] and y[L.L_EYE] < y[L.NOSE]
    assert kp[L.L_SHOULDER, 0] > kp[L.NECK, 0] > kp[L.R_SHOULDER, 0]
    assert kp[L.L_EAR, 0] > kp[L.L_EYE, 0] > kp[L.R_EYE, 0] > kp[L.R_EAR, 0]
    leg = np.hypot(*(kp[L.R_HIP, :2] - kp[L.R_KNEE, :2])) + np.hypot(*(kp[L.R_KNEE, :2] - kp[L.R_ANKLE, :2]))
    torso = np.hypot(*(kp[L.NECK, :2] - (kp[L.R_HIP, :2] + kp[L.L_HIP, :2]) / 2))
    assert 1.2 < leg / torso < 1.9


# -------------------------------------------------------------------------------------------------- drawing


def test_body_covers_its_limbs_and_differs_from_background():
    for seed in range(3):
        clip = render_clip(seed, "train", seed, 0, 8, (128, 128))
        ident = clip.identity
        bg = clip_background(seed, "train", seed, 0, ident, clip.motion, (128, 128))
        bg8 = (bg * 255 + 0.5).astype(np.uint8)
        for f in (0, 7):
            pose = clip.motion.frame(f)
            frame, mask = draw_frame(ident, pose, bg, return_mask=True)
            np.testing.assert_array_equal(frame, clip.frames[f])
            kp = pose.keypoints
            differs = []
            for a, b in (
                (2, 3),
                (3, 4),
                (5, 6),
                (6, 7),
                (8, 9),
                (9, 10),
                (11, 12),
                (12, 13),
                (1, 8),
                (1, 11),
            ):
                x, y = np.round((kp[a, :2] + kp[b, :2]) / 2).astype(int)
                assert mask[y, x] > 0.99, f"seed {seed} frame {f}: limb {a}-{b} not drawn at its midpoint"
                differs.append(np.abs(frame[y, x].astype(int) - bg8[y, x]).sum() > 30)
            assert np.mean(differs) >= 0.8
            x, y = np.round(kp[L.NOSE, :2]).astype(int)
            assert mask[y, x] > 0.99  # the face is drawn where the pose says


def test_reference_image_shows_a_face():
    ident = identity_for(0, 1)
    img = reference_image(ident, 256)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    pose = neutral_pose(256, ident.body)
    skin = np.asarray(ident.skin) * 255
    for eye in (L.R_EYE, L.L_EYE):
        x, y = np.round(pose.keypoints[eye, :2]).astype(int)
        assert img[y, x].astype(float).mean() < skin.mean() - 40  # a dark iris/pupil, not bare skin
    assert np.abs(img[128, 128].astype(float) - img[5, 5]).sum() > 30  # the body is in the middle


# ------------------------------------------------------------------------------------------ part label maps


def _studio(size):
    return np.full((size, size, 3), 0.5, np.float32)


def test_labels_cover_exactly_the_dancer():
    for seed in range(3):
        clip = render_clip(seed, "train", seed, 0, 8, (96, 96))
        bg = clip_background(seed, "train", seed, 0, clip.identity, clip.motion, (96, 96))
        for f in (0, 4, 7):
            frame, mask, labels = draw_frame(
                clip.identity, clip.motion.frame(f), bg, return_mask=True, return_labels=True
            )
            assert labels.dtype == np.uint8 and labels.shape == (96, 96)
            np.testing.assert_array_equal(labels > 0, mask >= 0.5)
            assert labels.max() < len(L.PART_NAMES)
            # labels are a side product: the pixels are the ones drawn without them
            np.testing.assert_array_equal(frame, clip.frames[f])
            np.testing.assert_array_equal(labels, clip.labels[f])


@pytest.mark.parametrize("index", range(6))
def test_every_part_appears_where_the_pose_puts_it_in_a_frontal_neutral_pose(index):
    ident = identity_for(0, index)
    pose = neutral_pose(192, ident.body)
    labels = draw_layers(ident, pose, _studio(192)).labels
    assert set(np.unique(labels)) == set(range(len(L.PART_NAMES)))
    kp = pose.keypoints
    # "left"/"right" are the dancer's own sides; the hands start at the wrists, the shoes at the ankles
    expected = {
        L.NOSE: L.HEAD,
        L.L_ELBOW: L.LEFT_ARM,
        L.R_ELBOW: L.RIGHT_ARM,
        L.L_KNEE: L.LEFT_LEG,  # a skirt ends above the knees
        L.R_KNEE: L.RIGHT_LEG,
        L.L_WRIST: L.HANDS,
        L.R_WRIST: L.HANDS,
        L.L_ANKLE: L.FEET,
        L.R_ANKLE: L.FEET,
    }
    for point, part in expected.items():
        x, y = np.round(kp[point, :2]).astype(int)
        assert labels[y, x] == part, f"{L.NAMES[point]}: {L.PART_NAMES[labels[y, x]]}"
    belly = np.round((kp[L.NECK, :2] + (kp[L.L_HIP, :2] + kp[L.R_HIP, :2]) / 2) / 2).astype(int)
    assert labels[belly[1], belly[0]] == L.TORSO
    # the dancer's left arm is on the image's right when facing the camera
    xs = np.nonzero(labels == L.LEFT_ARM)[1].mean(), np.nonzero(labels == L.RIGHT_ARM)[1].mean()
    assert xs[0] > 96 > xs[1]


def test_a_left_arm_change_moves_only_the_left_arm_label():
    ident = identity_for(0, 2)
    pose = neutral_pose(192, ident.body)
    kp = pose.keypoints.copy()
    # the elbow slides outwards along the forearm's own line: the hand (oriented by the forearm) stays put
    kp[L.L_ELBOW, :2] = kp[L.L_WRIST, :2] + 1.3 * (kp[L.L_ELBOW, :2] - kp[L.L_WRIST, :2])
    before = draw_layers(ident, pose, _studio(192))
    after = draw_layers(ident, dataclasses.replace(pose, keypoints=kp), _studio(192))
    changed = before.labels != after.labels
    assert changed.sum() > 20
    assert ((before.labels[changed] == L.LEFT_ARM) | (after.labels[changed] == L.LEFT_ARM)).all()
    for part in set(range(len(L.PART_NAMES))) - {L.LEFT_ARM}:
        # every other part only loses pixels the arm now covers, or gains ones the arm left
        gained = (after.labels == part) & (before.labels != part)
        lost = (before.labels == part) & (after.labels != part)
        assert (before.labels[gained] == L.LEFT_ARM).all() and (after.labels[lost] == L.LEFT_ARM).all()


def test_parts_file_round_trip_and_bad_files(tmp_path):
    labels = np.random.default_rng(0).integers(0, len(L.PART_NAMES), (3, 16, 20), dtype=np.uint8)
    path = tmp_path / "x.parts.npz"
    write_parts(path, labels)
    parts = load_parts(path)
    np.testing.assert_array_equal(parts.labels, labels)
    assert parts.labels.dtype == np.uint8 and parts.names == L.PART_NAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parts.npz"]  # no .tmp left behind
    assert parts_path(tmp_path / "id001_clip02.mp4").name == "id001_clip02.parts.npz"
    np.savez(tmp_path / "bad.parts.npz", labels=np.full((2, 4, 4), 9, np.uint8), names=np.array(["a", "b"]))
    with pytest.raises(AnimlcmError, match="indices into its 2 names"):
        load_parts(tmp_path / "bad.parts.npz")
    with pytest.raises(AnimlcmError, match="not a synth part-label file"):
        load_parts(tmp_path / "none.parts.npz")


def test_names_sort_and_stay_unique_beyond_999_identities():
    assert clip_name(7, 3) == "id007_clip03"  # sets of up to 1000 identities keep their names
    assert clip_name(999, 0, identities=1000, clips=1) == "id999_clip00"
    assert identity_name(7, 2000) == "id0007"
    names = [clip_name(i, c, identities=2000, clips=120) for i in range(0, 2000, 7) for c in (0, 9, 119)]
    assert len(set(names)) == len(names) and sorted(names) == names
    assert names[-1] == "id1995_clip119"


# ----------------------------------------------------------------------------------------------------- files


def test_generate_writes_clips_poses_and_json(tmp_path):
    videos = generate(
        tmp_path,
        identities=2,
        clips=1,
        frames=12,
        size=64,
        seed=3,
        split="heldout",
        fps=12.0,
        refs=True,
        progress=False,
    )
    assert [v.name for v in videos] == ["id000_clip00.mp4", "id001_clip00.mp4"]
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["split"] == "heldout" and meta["seed"] == 3 and (meta["height"], meta["width"]) == (64, 64)
    assert [v["video"] for v in meta["videos"]] == [v.name for v in videos]
    assert [v["parts"] for v in meta["videos"]] == [parts_path(v).name for v in videos]
    assert meta["part_names"] == list(L.PART_NAMES)
    assert (tmp_path / "refs" / "id001.png").exists()
    assert not list(tmp_path.glob("*.tmp"))
    for i, video in enumerate(videos):
        pose = load_pose(pose_path(video))
        frames = _decode(video)
        assert frames.shape == (12, 64, 64, 3)
        assert pose.keypoints.shape == (len(frames), 18, 3) and pose.face_box.shape == (12, 4)
        assert pose.identity == i and pose.fps == 12.0
        clip = render_clip(3, "heldout", i, 0, 12, (64, 64), 12.0)
        np.testing.assert_array_equal(pose.keypoints, clip.motion.keypoints)
        parts = load_parts(parts_path(video))
        assert parts.labels.shape == (12, 64, 64) and parts.names == L.PART_NAMES
        np.testing.assert_array_equal(parts.labels, clip.labels)
        # crf 14 keeps the textures: luma is near-lossless, colour loses what yuv420p subsampling takes
        luma = np.array([0.299, 0.587, 0.114])
        assert _psnr(frames @ luma, clip.frames @ luma) > 38
        assert _psnr(frames, clip.frames) > 26
        nose = pose.keypoints[:, L.NOSE, :2]
        box = pose.face_box
        assert (
            (box[:, 0] <= nose[:, 0])
            & (nose[:, 0] <= box[:, 2])
            & (box[:, 1] <= nose[:, 1])
            & (nose[:, 1] <= box[:, 3])
        ).all()


def test_parallel_jobs_write_the_same_files(tmp_path):
    import hashlib

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.*"))}

    kw = dict(identities=3, clips=2, frames=6, size=64, seed=5, refs=True, progress=False)
    one = generate(tmp_path / "one", **kw)
    three = generate(tmp_path / "three", jobs=3, **kw)
    assert [v.name for v in one] == [v.name for v in three]
    # poses, part maps, references and synth.json are byte-identical. The videos are compared decoded: on
    # one CI machine a single 8-bit rounding of a texture differed between the two processes, and H.264 turns
    # one changed pixel into different bytes (not reproduced here; the drawing itself is deterministic)
    exact = {k: v for k, v in digests(tmp_path / "one").items() if not k.endswith(".mp4")}
    assert exact == {k: v for k, v in digests(tmp_path / "three").items() if not k.endswith(".mp4")}
    # (one pixel off by one re-encodes at >= 43 dB; another dancer is at 12-14 dB)
    for a, b in zip(one, three, strict=True):
        fa, fb = _decode(a), _decode(b)
        assert fa.shape == fb.shape and (np.array_equal(fa, fb) or _psnr(fa, fb) > 38)


def test_regenerating_a_folder_removes_the_earlier_sets_clips(tmp_path):
    generate(tmp_path, identities=2, clips=1, frames=4, size=64, seed=0, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    generate(tmp_path, identities=1, clips=1, frames=4, size=64, seed=0, split="heldout", progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "id000_clip00.mp4",
        "id000_clip00.parts.npz",
        "id000_clip00.pose.npz",
        "notes.txt",
        "synth.json",
    ]
    assert json.loads((tmp_path / "synth.json").read_text())["split"] == "heldout"


def test_load_pose_rejects_other_files(tmp_path):
    with pytest.raises(AnimlcmError, match="not found"):
        load_pose(tmp_path / "x.pose.npz")
    bad = tmp_path / "bad.pose.npz"
    np.savez(bad, keypoints=np.zeros((4, 17, 3), np.float32), face_box=np.zeros((4, 4)), identity=0, fps=16.0)
    with pytest.raises(AnimlcmError, match="not .F, 18, 3."):
        load_pose(bad)


def test_config_validation():
    SynthConfig.from_preset("tiny").validate()
    with pytest.raises(AnimlcmError, match="even"):
        dataclasses.replace(SynthConfig(), height=65).validate()
    with pytest.raises(AnimlcmError, match="split"):
        dataclasses.replace(SynthConfig(), split="val").validate()


def test_cli_writes_the_set(tmp_path):
    from animlcm.cli import app

    out = tmp_path / "videos"
    args = [
        "synth",
        "--out",
        str(out),
        "--identities",
        "1",
        "--clips",
        "2",
        "--frames",
        "8",
        "--size",
        "64",
        "--seed",
        "4",
        "--fps",
        "8",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 clips" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "id000_clip00.mp4",
        "id000_clip00.parts.npz",
        "id000_clip00.pose.npz",
        "id000_clip01.mp4",
        "id000_clip01.parts.npz",
        "id000_clip01.pose.npz",
        "synth.json",
    ]
    assert load_pose(out / "id000_clip01.pose.npz").keypoints.shape == (8, 18, 3)
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("frames: 6\nclips: 1\n")
    result = CliRunner().invoke(app, [*args[:5], "--config", str(cfg), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert load_pose(out / "id000_clip00.pose.npz").keypoints.shape == (6, 18, 3)
    assert not (out / "id000_clip01.mp4").exists()  # the earlier set's second clip is gone
    assert not (out / "id000_clip01.parts.npz").exists()  # with its labels
    result = CliRunner().invoke(app, [*args[:-2], "--split", "nope"])
    assert isinstance(result.exception, AnimlcmError)

"""`animlcm extract`: real footage, bad inputs, sharding, resume (incl. kill -9), geometry, config.

Small test videos are made here with PyAV (libx264); synthetic ones carry ``VIDEO.pose.npz`` so the fast
``groundtruth`` pose backend can stand in for a detector.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from animlcm.cache import CacheReader, schema
from animlcm.config import resolve_config
from animlcm.errors import AnimlcmError
from animlcm.stages.extract import ExtractConfig, run
from animlcm.stages.extract.decode import plan_crop, sample_indices
from animlcm.stages.extract.run import assign_names, shard_slice

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# -- test videos ---------------------------------------------------------------------------------------
def write_mp4(path: Path, frames: np.ndarray, fps: int = 16, faststart: bool = False) -> Path:
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        c.start_encoding()
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def synth_dancer(
    path: Path, n: int = 12, h: int = 96, w: int = 64, person: bool = True, seed: int = 0
) -> Path:
    """A stick figure sliding sideways on grey, plus its exact COCO-18 keypoints in VIDEO.pose.npz."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, -30], [0, -20], [-8, -20], [-12, -8], [-14, 2], [8, -20], [12, -8], [14, 2], [-5, 2],
                     [-6, 16], [-6, 30], [5, 2], [6, 16], [6, 30], [-2, -32], [2, -32], [-4, -31], [4, -31]],
                    np.float32)  # fmt: skip
    kps = np.zeros((n, 18, 3), np.float32)
    frames = np.full((n, h, w, 3), 90, np.uint8)
    for t in range(n):
        center = np.array([w / 2 + 6 * np.sin(t / 3 + seed), h / 2 + 4], np.float32)
        kps[t, :, :2] = base + center + rng.normal(0, 0.3, (18, 2))
        kps[t, :, 2] = 1.0 if person else 0.0
        for x, y in kps[t, :, :2]:
            cv2.circle(frames[t], (int(x), int(y)), 2, (230, 120, 40), -1)
    write_mp4(path, frames)
    np.savez(path.with_name(path.stem + ".pose.npz"), keypoints=kps)
    return path


def tiny_cfg(**kw) -> ExtractConfig:
    return resolve_config(ExtractConfig, "tiny", None, {"progress": False, **kw})


# -- real footage --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_cache(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_cache")
    run(tiny_cfg(max_frames=48), [real_data / "dance_rgb_692x1108.mp4"], out)
    # a DWPose skeleton render has no person for a detector; 8 frames (one clip) are enough to see that
    summary = run(tiny_cfg(max_frames=8), [real_data / "pose_skeleton_1.mp4"], out)
    return out, summary


@pytest.mark.slow
def test_real_dance_has_a_body_in_90_percent(real_cache):
    out, summary = real_cache
    reader = CacheReader(out)
    assert reader.videos == ["dance_rgb_692x1108"]
    with reader.open("dance_rgb_692x1108") as v:
        stats = v.summary()
        assert stats["pose_rate"] >= 0.9
        assert stats["face_rate"] >= 0.5
        assert 0.0 < stats["motion_coverage"] < 1.0  # she moves, the background does not
        assert (v.num_frames, v.height, v.width) == (48, 128, 128)
        assert v.latents(slice(None)).shape == (48, 4, 16, 16)
        assert v.face_crop(0).shape == (256, 256, 3)
        kp = v.keypoints(slice(None))
        assert kp.shape == (48, 134, 3) and v.attrs["keypoint_layout"] == "openpose134"
        good = kp[..., 2] > 0
        assert (kp[..., 0][good] >= 0).all() and (kp[..., 0][good] < 128).all()
        assert v.skeleton(0).any()
        # the 692x1108 portrait video is padded (not cropped) into the square frame: no body part lost
        assert v.attrs["crop_mode"] == "pad"
        assert v.frames(0)[:, :10].max() == 0  # black side bars


@pytest.mark.slow
def test_real_skeleton_video_fails_as_person_less(real_cache):
    out, summary = real_cache
    assert summary.exit_code == 1
    entry = {e.name: e for e in CacheReader(out).entries}["pose_skeleton_1"]
    assert entry.status == "failed" and "no person" in entry.error and "\n" not in entry.error


@pytest.mark.slow
def test_inspect_json(real_cache):
    from animlcm.cli import app

    out, _ = real_cache
    result = CliRunner().invoke(app, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {v["name"]: v for v in data["videos"]}
    keys = {
        "name",
        "status",
        "frames",
        "pose_rate",
        "face_rate",
        "motion_coverage",
        "latent_shape",
        "maps",
        "error",
    }
    assert keys <= set(rows["dance_rgb_692x1108"])
    assert rows["dance_rgb_692x1108"]["maps"] == ["skeleton"]
    assert rows["dance_rgb_692x1108"]["latent_shape"] == [48, 4, 16, 16]
    assert rows["pose_skeleton_1"]["status"] == "failed" and rows["pose_skeleton_1"]["pose_rate"] is None
    table = CliRunner().invoke(app, ["inspect", str(out)])
    assert table.exit_code == 0 and "dance_rgb_692x1108" in table.output


# -- bad input -------------------------------------------------------------------------------------------
def test_each_bad_input_kind_fails_alone(tmp_path):
    from animlcm.cli import app

    src = tmp_path / "videos"
    src.mkdir()
    synth_dancer(src / "good_a.mp4", seed=1)
    synth_dancer(src / "good_b.mp4", seed=2)
    (src / "unreadable.mp4").symlink_to(src / "does_not_exist.mp4")
    d = write_mp4(tmp_path / "full.mp4", np.random.randint(0, 255, (30, 64, 64, 3), np.uint8), faststart=True)
    (src / "truncated.mp4").write_bytes(d.read_bytes()[: d.stat().st_size // 2])
    write_mp4(src / "zero_frames.mp4", np.zeros((0, 64, 64, 3), np.uint8))
    (src / "not_a_video.mp4").write_text("these are notes, not a video\n")
    synth_dancer(src / "too_short.mp4", n=3)
    synth_dancer(src / "person_less.mp4", person=False)
    expected = {
        "unreadable": "unreadable",
        "truncated": "truncated or corrupt",
        "zero_frames": "zero",
        "not_a_video": "not a readable video",
        "too_short": "too short",
        "person_less": "no person",
    }
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["extract", str(src), "--out", str(out), "--pose", "groundtruth"])
    assert result.exit_code == 1, result.output
    entries = {e.name: e for e in CacheReader(out).entries}
    assert sorted(CacheReader(out).videos) == ["good_a", "good_b"]
    for name, reason in expected.items():
        assert entries[name].status == "failed", name
        assert reason in entries[name].error, (name, entries[name].error)
        assert "\n" not in entries[name].error
        assert name in result.output  # the list of failures at the end
    assert not list(out.glob("*.tmp"))


# -- sharding and resume -------------------------------------------------------------------------------------
def test_shard_slices_partition():
    items = list(range(11))
    parts = [shard_slice(items, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == items


def test_names_are_unique_and_deterministic(tmp_path):
    paths = [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", tmp_path / "x y.mp4"]
    names = [n for n, _ in assign_names(paths)]
    assert len(set(names)) == 3 and "x_y" in names
    assert names == [n for n, _ in assign_names(list(reversed(paths)))]


@pytest.fixture(scope="module")
def dancers(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("dancers")
    for i in range(5):
        synth_dancer(src / f"dancer_{i}.mp4", seed=i)
    return src


def test_shards_cover_every_video_once(dancers, tmp_path):
    done = []
    for i in range(3):
        summary = run(tiny_cfg(pose="groundtruth", shard=f"{i}/3"), [dancers], tmp_path)
        done += [r.name for r in summary.results if r.status == "ok"]
    assert sorted(done) == [f"dancer_{i}" for i in range(5)]
    assert CacheReader(tmp_path).videos == sorted(done)


def test_resume_skips_adopts_and_redoes(dancers, tmp_path):
    cfg = tiny_cfg(pose="groundtruth")
    first = run(cfg, [dancers], tmp_path)
    assert {r.status for r in first.results} == {"ok"} and first.exit_code == 0
    assert {r.status for r in run(cfg, [dancers], tmp_path).results} == {"skipped"}

    # killed between rename and manifest update: the complete file is adopted without recomputing
    manifest = json.loads((tmp_path / schema.MANIFEST).read_text())
    del manifest["videos"]["dancer_0"]
    (tmp_path / schema.MANIFEST).write_text(json.dumps(manifest))
    # killed mid-write: the leftover .tmp is deleted and the video redone
    (tmp_path / schema.h5_name("dancer_1")).rename(tmp_path / schema.tmp_name("dancer_1"))
    statuses = {r.name: r.status for r in run(cfg, [dancers], tmp_path).results}
    assert statuses["dancer_0"] == "skipped" and statuses["dancer_1"] == "ok"
    assert not list(tmp_path.glob("*.tmp"))
    assert len(CacheReader(tmp_path).videos) == 5

    # a different setting that changes the output invalidates the cache
    changed = run(tiny_cfg(pose="groundtruth", motion_delta=0.3), [dancers], tmp_path)
    assert {r.status for r in changed.results} == {"ok"}
    with CacheReader(tmp_path).open("dancer_2") as v:
        assert v.attrs["motion_delta"] == pytest.approx(0.3)


@pytest.mark.slow
def test_kill_and_resume_in_a_subprocess(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(8):
        synth_dancer(src / f"d{i}.mp4", n=16, seed=i)
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "animlcm", "extract", str(src), "--out", str(out), "--pose", "groundtruth"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        manifest = out / schema.MANIFEST
        if manifest.exists() and len(json.loads(manifest.read_text())["videos"]) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "extract finished before it could be killed; make the test videos longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(json.loads((out / schema.MANIFEST).read_text())["videos"])
    assert 2 <= done_before < 8

    # restart (in this process: a second interpreter start would only cost time)
    again = run(tiny_cfg(pose="groundtruth"), [src], out)
    assert again.exit_code == 0
    assert sum(r.status == "skipped" for r in again.results) >= done_before
    reader = CacheReader(out)
    assert reader.videos == [f"d{i}" for i in range(8)]
    assert len(reader.entries) == 8
    assert not list(out.glob("*.tmp"))
    assert sorted(p.name for p in out.glob("*.h5")) == [f"d{i}.h5" for i in range(8)]
    for name in reader.videos:
        with reader.open(name) as v:
            assert v.latents(slice(None)).shape == (16, 4, 16, 16)


# -- body-part labels of synthetic clips ----------------------------------------------------------------
def test_part_labels_travel_into_the_cache_frame_for_frame(dancers, tmp_path):
    from animlcm.synth import layout
    from animlcm.synth.parts import load_parts, parts_path
    from animlcm.synth.world import generate

    videos = generate(tmp_path / "v", identities=2, clips=1, frames=16, size=128, seed=1, progress=False)
    # 8 of the 16 fps: the cache keeps every other frame, and the labels of exactly those frames
    summary = run(tiny_cfg(pose="groundtruth", fps=8.0), [tmp_path / "v"], tmp_path / "cache")
    assert summary.exit_code == 0
    reader = CacheReader(tmp_path / "cache")
    for video in videos:
        labels = load_parts(parts_path(video)).labels
        with reader.open(video.stem) as v:
            kept = np.asarray(v.h5[schema.SOURCE_INDEX][()])
            np.testing.assert_array_equal(kept, np.arange(0, 16, 2))
            assert v.has_parts and v.part_names == layout.PART_NAMES
            cached = v.part_labels(slice(None))
            assert cached.dtype == np.uint8 and cached.shape == (8, 128, 128)
            np.testing.assert_array_equal(cached, labels[kept])
            np.testing.assert_array_equal(v.part_labels(3), labels[6])
    # a video without a .parts.npz has none, and says where they come from
    run(tiny_cfg(pose="groundtruth"), [dancers / "dancer_0.mp4"], tmp_path / "cache")
    with CacheReader(tmp_path / "cache").open("dancer_0") as v:
        assert not v.has_parts and v.part_names == ()
        with pytest.raises(AnimlcmError, match="no body-part labels"):
            v.part_labels(0)


def test_part_labels_are_resized_nearest_like_the_frames(tmp_path):
    from animlcm.synth.parts import load_parts, parts_path, write_parts
    from animlcm.synth.world import generate

    (video,) = generate(tmp_path / "v", identities=1, clips=1, frames=8, size=(160, 96), progress=False)
    source = load_parts(parts_path(video)).labels
    assert run(tiny_cfg(pose="groundtruth"), [video], tmp_path / "cache").exit_code == 0
    with CacheReader(tmp_path / "cache").open(video.stem) as v:
        cached = v.part_labels(slice(None))
        sx, sy, ox, oy = v.attrs["crop"]
    # a portrait dancer taller than a square crop: scaled down (160 -> 128 rows) and padded at the sides
    assert cached.shape == (8, 128, 128) and v.attrs["crop_mode"] == "pad"
    # by hand: each output pixel takes the label under its centre in the source frame; outside it is 0
    ys, xs = np.mgrid[0:128, 0:128]
    src_x, src_y = np.floor((xs - ox + 0.5) / sx).astype(int), np.floor((ys - oy + 0.5) / sy).astype(int)
    inside = (src_x >= 0) & (src_x < 96) & (src_y >= 0) & (src_y < 160)
    expected = np.where(inside, source[:, src_y.clip(0, 159), src_x.clip(0, 95)], 0)
    assert (cached != expected).mean() < 0.002  # OpenCV rounds a few coordinates the other way
    assert (cached[:, ~inside] == 0).all() and (~inside).any()  # the padding is background

    # labels that do not fit their video fail that video with one line naming the file
    write_parts(parts_path(video), source[:, :50])
    summary = run(tiny_cfg(pose="groundtruth", motion_delta=0.3), [video], tmp_path / "cache")
    (failed,) = summary.failed
    assert "parts.npz" in failed.error and "do not match the video" in failed.error
    assert "\n" not in failed.error


# -- geometry and config -------------------------------------------------------------------------------------
def test_sample_indices():
    np.testing.assert_array_equal(sample_indices(10, 30.0, 15.0, None), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(sample_indices(10, 30.0, None, 4), [0, 1, 2, 3])
    assert len(sample_indices(10, 10.0, 20.0, None)) == 20  # upsampling repeats frames


@pytest.mark.parametrize(
    "box, mode", [((150, 100, 250, 380), "crop"), ((20, 10, 380, 390), "pad"), (None, "pad")]
)
def test_crop_keeps_the_person_and_maps_points_like_pixels(box, mode):
    src = np.zeros((1, 400, 400, 3), np.uint8)
    src[0, 295:306, 195:206] = 255  # a white square centred on (200, 300)
    t = plan_crop((400, 400), (128, 64), None if box is None else np.array(box, np.float32))
    assert t.mode == mode
    out = t.apply_frames(src)[0]
    ys, xs = np.nonzero(out[..., 0] > 127)
    p = t.apply_points(np.array([[200.0, 300.0, 1.0]]))[0]
    assert abs(xs.mean() - p[0]) < 1.5 and abs(ys.mean() - p[1]) < 1.5
    if box is not None and mode == "crop":  # the whole box is inside the output frame
        corners = t.apply_points(np.array([[box[0], box[1], 1.0], [box[2], box[3], 1.0]]))
        assert (corners[:, 2] == 1).all()


def test_config_presets_and_validation():
    sd = ExtractConfig.from_preset("sd15")
    assert (sd.height, sd.width, sd.min_frames) == (768, 512, 16)
    with pytest.raises(AnimlcmError, match="--shard 3/3"):
        tiny_cfg(shard="3/3")
    with pytest.raises(AnimlcmError, match="--pose openpose"):
        tiny_cfg(pose="openpose")
    assert tiny_cfg().hash("vae1") != tiny_cfg(motion_delta=0.3).hash("vae1")
    assert tiny_cfg().hash("vae1") == tiny_cfg(shard="1/2", device="cpu").hash("vae1")


def test_dwpose_without_weights_says_how_to_get_them(tmp_path):
    from animlcm.stages.extract.pose import resolve_dwpose_weights

    with pytest.raises(AnimlcmError, match="yolox_l.onnx") as err:
        resolve_dwpose_weights(tmp_path)
    assert "\n" not in str(err.value)


def test_smpl_flag_without_package_is_one_clear_line(dancers, tmp_path, monkeypatch):
    run_mod = sys.modules["animlcm.stages.extract.run"]  # the module (the package's `run` is the function)

    def missing(*a, **k):
        raise AnimlcmError("--smpl-model m: SMPL guidance maps are not available in this build")

    monkeypatch.setattr(run_mod, "_smpl_maps", missing)
    summary = run(
        tiny_cfg(pose="groundtruth", smpl_model=tmp_path / "m"), [dancers / "dancer_0.mp4"], tmp_path
    )
    assert summary.exit_code == 1 and "SMPL" in summary.failed[0].error


@pytest.mark.slow
def test_smpl_maps_are_written_when_a_model_is_given(tmp_path):
    from animlcm.stages.extract.smpl.synthetic import write_synthetic_smpl

    model = tmp_path / "smpl_model"
    write_synthetic_smpl(model)
    video = synth_dancer(tmp_path / "dancer.mp4", n=8)
    summary = run(tiny_cfg(pose="groundtruth", smpl_model=model), [video], tmp_path / "cache")
    assert summary.exit_code == 0, summary.failed
    with CacheReader(tmp_path / "cache").open("dancer") as v:
        assert v.maps == ["skeleton", "depth", "normal", "semantic"]
        assert v.guidance("normal", slice(None)).shape == (8, 128, 128, 3)
        assert v.smpl_params()["body_pose"].shape == (8, 69)
        assert v.smpl_valid().all()


def test_a_video_decord_cannot_open_extracts_through_pyav(tmp_path, monkeypatch):
    """Issue 16: real clips that decord refuses ('filter_graph.cc ... Check failed') but FFmpeg reads."""
    from animlcm import videoread

    src = synth_dancer(tmp_path / "clip.mp4", n=12)
    straight = tmp_path / "straight"
    run(tiny_cfg(pose="groundtruth"), [src], straight)

    def refuses(_path):
        raise RuntimeError("filter_graph.cc:61: Check failed: avfilter_graph_create_filter(...)")

    monkeypatch.setattr(videoread, "_open_decord", refuses)
    assert videoread.probe(src).backend == "pyav"
    fallback = tmp_path / "fallback"
    summary = run(tiny_cfg(pose="groundtruth"), [src], fallback)
    assert not summary.failed, summary
    with CacheReader(straight).open("clip") as a, CacheReader(fallback).open("clip") as b:
        assert a.num_frames == b.num_frames == 12
        diff = np.abs(a.frames(slice(0, 12)).astype(int) - b.frames(slice(0, 12)).astype(int))
        assert diff.mean() < 3  # the same picture, whichever decoder read it


def test_a_full_disk_stops_with_one_line_and_keeps_finished_videos(dancers, tmp_path, monkeypatch):
    import errno
    import importlib

    run_module = importlib.import_module("animlcm.stages.extract.run")

    real = run_module.VideoWriter

    class FullAfterTwo(real):
        def write(self, path, array, attrs=None):
            if self.name == "dancer_2":
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(path, array, attrs)

    monkeypatch.setattr(run_module, "VideoWriter", FullAfterTwo)
    out = tmp_path / "cache"
    with pytest.raises(AnimlcmError) as err:
        run(tiny_cfg(pose="groundtruth"), [dancers], out)
    msg = str(err.value)
    assert msg.startswith(str(out)) and "disk is full" in msg and "2 finished videos are kept" in msg
    assert "\n" not in msg
    assert CacheReader(out).videos == ["dancer_0", "dancer_1"]  # finished work is never lost
    assert not list(out.glob("*.tmp"))  # and no half file is left
    monkeypatch.setattr(run_module, "VideoWriter", real)
    summary = run(tiny_cfg(pose="groundtruth"), [dancers], out)  # space freed: the same command goes on
    assert [r.status for r in summary.results] == ["skipped"] * 2 + ["ok"] * 3


def test_extract_out_under_a_file_fails_before_any_work(dancers, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    with pytest.raises(AnimlcmError, match=r"notes.txt is a file, not a folder"):
        run(tiny_cfg(pose="groundtruth"), [dancers], blocker / "cache")
    assert blocker.read_text() == "a file"

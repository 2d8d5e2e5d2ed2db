"""The one video reader (``animlcm.videoread``): decord where it works, PyAV where it cannot, one plain line
when no decoder can read a file. Real clips from ../shared/data/real and streams made here."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from animlcm import videoread
from animlcm.errors import AnimlcmError
from animlcm.stages.render import sources

INTERNALS = ("filter_graph", ".cc:", "Errno", "DECORDError", "avcodec", "0x")


def write_mp4(path: Path, n: int = 30, faststart: bool = False, seed: int = 0) -> Path:
    frames = np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), np.uint8)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=16)
        s.height, s.width, s.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


def decord_refused_stream(path: Path) -> Path:
    """An H.264 stream cut mid-GOP, with its parameter sets repeated only at the next keyframe 8 s later.

    FFmpeg's probe gives up before it sees them, so the header leaves the pixel format unset: decord then
    fails in its filter graph ('Unable to parse option value "-1" as pixel format'), exactly as on the
    real talking-head clips of issue 16, while PyAV (and the ffmpeg command) decode from that keyframe on.
    """
    full = path.with_name("full.ts")
    with av.open(str(full), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"g": "400", "x264opts": "repeat-headers=1:keyint=400:min-keyint=400:scenecut=0"}
        for i in range(500):
            a = np.zeros((48, 64, 3), np.uint8)
            a[:, i % 64] = 255
            a[..., 1] = i % 256
            c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        c.mux(s.encode())
    path.write_bytes(full.read_bytes()[100 * 188 :])  # drop the first keyframe's TS packets
    return path


def test_real_clips_open_with_decord_and_match_pyav(real_data):
    for name in ("face_talking_1.mp4", "pose_skeleton_2.mp4"):
        info = videoread.probe(real_data / name)
        assert info.backend == "decord" and info.num_frames > 100
        idx = np.array([0, 1, 1, 7])  # repeats happen when extract resamples to a higher fps
        fast = np.concatenate(list(videoread.read_frames(info.path, idx, 3, "decord")))
        slow = np.concatenate(list(videoread.read_frames(info.path, idx, 3, "pyav")))
        assert fast.shape == slow.shape == (4, info.height, info.width, 3)
        # two builds of swscale round differently, but it is the same picture
        assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 3


def test_a_stream_decord_refuses_is_read_by_pyav(tmp_path):
    import decord

    path = decord_refused_stream(tmp_path / "cut.mp4")
    with pytest.raises(Exception, match="pixel format|Cannot create buffer source"):
        decord.VideoReader(str(path))  # the failure this test stands for really happens
    info = videoread.probe(path)
    assert info.backend == "pyav" and (info.height, info.width) == (48, 64)
    assert 90 <= info.num_frames <= 110  # the frames from the second keyframe on
    frames, fps = videoread.read_video(path)
    assert frames.shape == (info.num_frames, 48, 64, 3) and fps == 25.0
    # the bright column moves one pixel a frame: consecutive decoded frames really are consecutive
    cols = frames[:, 24].max(-1).argmax(-1)
    assert ((np.diff(cols) % 64) == 1).all()


def test_decord_failing_mid_file_hands_over_to_pyav(tmp_path, monkeypatch):
    path = write_mp4(tmp_path / "ok.mp4")
    want = np.concatenate(list(videoread.read_frames(path, np.arange(30), 8, "pyav")))

    class Flaky:
        def __init__(self, real):
            self.real, self.calls = real, 0

        def __len__(self):
            return len(self.real)

        def get_batch(self, idx):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("[12:00:00] src/video/video_reader.cc:1: decoder crashed")
            return self.real.get_batch(idx)

    real_open = videoread._open_decord
    monkeypatch.setattr(videoread, "_open_decord", lambda p: Flaky(real_open(p)))
    batches = list(videoread.read_frames(path, np.arange(30), 8, "decord"))
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    got = np.concatenate(batches)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 3


def test_decord_failing_to_open_falls_back_in_probe(tmp_path, monkeypatch):
    path = write_mp4(tmp_path / "ok.mp4", n=12)

    def broken(_path):
        raise RuntimeError("filter_graph.cc:61: Check failed")

    monkeypatch.setattr(videoread, "_open_decord", broken)
    info = videoread.probe(path)
    assert (info.backend, info.num_frames, info.fps) == ("pyav", 12, 16.0)
    assert len(videoread.read_video(path)[0]) == 12


@pytest.mark.parametrize(
    "kind, says",
    [
        ("text", "not a readable video"),
        ("truncated_index_at_end", "not a readable video"),
        ("truncated_faststart", "truncated"),
        ("empty", "empty file"),
        ("missing", "no such file|not found"),
    ],
)
def test_unreadable_videos_get_one_plain_line(tmp_path, kind, says):
    path = tmp_path / f"{kind}.mp4"
    if kind == "text":
        path.write_text("these are notes, not a video\n")
    elif kind.startswith("truncated"):
        full = write_mp4(tmp_path / "full.mp4", faststart=kind.endswith("faststart"))
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    for read in (videoread.probe, videoread.read_video, lambda p: sources.load_pose_source(p, 32, 32)):
        with pytest.raises(AnimlcmError) as err:
            read(path)
        msg = str(err.value)
        assert msg.startswith(str(path)) and re.search(says, msg) and "\n" not in msg
        assert not any(s in msg for s in INTERNALS), msg
        assert "pass an mp4" not in msg  # it is one: say what is wrong with it

"""The one video reader of extract, render and eval: decord where it works (fast random batches), PyAV where
decord cannot open or decode a file, and one plain line when no decoder can read it.

Why two decoders: decord builds its colour-conversion filter from the container header, so streams whose
header leaves the pixel format unset until the first frame is decoded (common in cut or remuxed real clips)
fail in decord although FFmpeg itself, and PyAV, decode them fine. PyAV decodes packet by packet and skips
damaged ones, as the ``ffmpeg`` command does, so a clip that starts mid-GOP still yields its good frames.

Messages name the file, what is wrong and what to do; they never carry decoder internals (C++ file names,
FFmpeg error codes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from animlcm.errors import AnimlcmError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
REENCODE = "re-download it or re-encode it (e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)"
DEFAULT_FPS = 25.0  # some containers carry no rate; their frames still decode fine


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    backend: str = "decord"  # "decord" | "pyav": who decodes this file


def check_file(path: Path) -> None:
    """A readable, non-empty regular file, or one line saying which of those it is not."""
    if not path.exists():
        raise AnimlcmError(f"{path}: unreadable (no such file or a broken link); check the path")
    if not path.is_file():
        raise AnimlcmError(f"{path}: not a regular file; pass a video file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise AnimlcmError(f"{path}: unreadable ({exc.strerror}); check its permissions") from None
    if path.stat().st_size == 0:
        raise AnimlcmError(f"{path}: empty file (0 bytes); re-export or remove it")


def _quiet_av():
    import av

    # FFmpeg's own log lines ("[h264 @ 0x...] non-existing PPS") would reach the user's terminal
    av.logging.set_level(None)
    return av


def _open_decord(path: Path):
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its ffmpeg chatter would break the progress display
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _pyav_header(path: Path) -> tuple[int, float, bool]:
    """(frames the header declares or 0, fps, pixel format known) from PyAV; unreadable files say so."""
    av = _quiet_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AnimlcmError(
                    f"{path}: no video stream (zero video frames); is it an audio or image file?"
                )
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FPS
            return int(stream.frames or 0), fps, stream.codec_context.pix_fmt is not None
    except AnimlcmError:
        raise
    except Exception:  # av raises many types (InvalidDataError, EOFError, ...): none is the user's business
        raise AnimlcmError(
            f"{path}: not a readable video: no decoder recognises its data (a text or other non-video file, "
            f"or a download cut short before the video's index); {REENCODE}"
        ) from None


def _pyav_frames(path: Path) -> Iterator[Any]:
    """Every decodable PyAV frame, in display order; damaged packets are skipped."""
    av = _quiet_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # a packet with no usable picture (mid-GOP start, damaged data): ffmpeg skips it too
            yield from frames


def _pyav_decode(path: Path) -> Iterator[np.ndarray]:
    """Every decodable frame as uint8 (H, W, 3), in display order."""
    for frame in _pyav_frames(path):
        yield frame.to_ndarray(format="rgb24")


def _count_pyav(path: Path) -> tuple[int, int, int]:
    """(decodable frames, height, width), decoding once (the header's count may promise frames not there);
    the frames are never converted to arrays."""
    n, hw = 0, (0, 0)
    for frame in _pyav_frames(path):
        if n == 0:
            hw = (frame.height, frame.width)
        n += 1
    return n, *hw


def _truncated(declared: int, decoded: int) -> bool:
    """Fewer frames than the index lists, beyond what edit lists and B-frame reordering explain."""
    return declared > 0 and decoded < declared - max(2, declared // 50)


def probe(path: Path) -> VideoInfo:
    """Open a video and read its length, fps and size; bad files raise a one-line ``AnimlcmError``."""
    path = Path(path)
    check_file(path)
    # the header first: it tells "not a video" apart from "a video" with no decoder noise on stderr
    declared, header_fps, pix_fmt_known = _pyav_header(path)
    if pix_fmt_known:
        try:
            vr = _open_decord(path)
            n = len(vr)
            fps = float(vr.get_avg_fps())
            h, w = vr[0].shape[:2] if n else (0, 0)
            if n == 0:
                raise AnimlcmError(f"{path}: the video has zero frames; re-export or remove it")
            if not np.isfinite(fps) or fps <= 0:
                fps = header_fps
            return VideoInfo(path, n, fps, int(h), int(w), "decord")
        except AnimlcmError:
            raise
        except Exception:
            pass  # decord cannot open or decode it: PyAV below reads what FFmpeg reads
    n, h, w = _count_pyav(path)
    if n == 0:
        if declared == 0:
            raise AnimlcmError(f"{path}: the video has zero frames; re-export or remove it")
        raise AnimlcmError(
            f"{path}: truncated or corrupt video: none of its {declared} frames decode; {REENCODE}"
        )
    if _truncated(declared, n):
        raise AnimlcmError(
            f"{path}: truncated or corrupt video: only {n} of its {declared} frames decode; {REENCODE}"
        )
    return VideoInfo(path, n, header_fps, h, w, "pyav")


def _pyav_frames_at(path: Path, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The frames at sorted ``indices`` (repeats allowed) in batches, decoding sequentially."""
    wanted = np.asarray(indices, np.int64)
    pos, batch = 0, []
    for i, frame in enumerate(_pyav_decode(path)):
        while pos < len(wanted) and wanted[pos] == i:
            batch.append(frame)
            pos += 1
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if pos == len(wanted):
            break
    if batch:
        yield np.stack(batch)


def read_frames(
    path: Path, indices: np.ndarray, batch_size: int = 32, backend: str = "decord"
) -> Iterator[np.ndarray]:
    """Yield uint8 (b, H, W, 3) batches of the given sorted source frames, read sequentially.

    Stops early (without an error) where the file ends before the last index: the caller, who knows how
    many frames it needs, reports a truncated file. Decord failing mid-file hands over to PyAV.
    """
    path = Path(path)
    indices = np.asarray(indices, np.int64)
    if backend == "decord":
        try:
            vr = _open_decord(path)
        except Exception:
            vr = None
        start = 0
        while vr is not None and start < len(indices):
            chunk = indices[start : start + batch_size]
            try:
                batch = vr.get_batch(chunk.tolist()).asnumpy()
            except Exception:
                break  # PyAV takes over from this chunk: it skips what it cannot decode
            yield batch
            start += len(chunk)
        indices = indices[start:]
        if not len(indices):
            return
    yield from _pyav_frames_at(path, indices, batch_size)


def read_video(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A whole video (or its first ``max_frames``) as (uint8 (F, H, W, 3), fps)."""
    info = probe(path)
    n = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
    batches = list(read_frames(info.path, np.arange(n), 32, info.backend))
    got = sum(len(b) for b in batches)
    if got < n:
        raise AnimlcmError(
            f"{path}: truncated or corrupt video: decoding stopped at frame {got} of {info.num_frames}; "
            f"{REENCODE}"
        )
    return np.concatenate(batches), info.fps

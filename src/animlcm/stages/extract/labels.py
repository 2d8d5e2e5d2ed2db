"""Body-part label maps beside a video (``VIDEO.parts.npz``, written by ``animlcm synth``): read and checked
against the video, so the cache can carry them frame for frame with the frames it stores."""

from __future__ import annotations

from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.synth.parts import PartsFile, load_parts, parts_path


def labels_beside(video: Path, num_src_frames: int, src_hw: tuple[int, int]) -> PartsFile | None:
    """The label maps of ``video``'s source frames, or None when no ``.parts.npz`` sits beside it."""
    path = parts_path(video)
    if not path.exists():
        return None
    parts = load_parts(path)
    if len(parts.labels) < num_src_frames or parts.labels.shape[1:] != tuple(src_hw):
        raise AnimlcmError(
            f"{path}: labels {parts.labels.shape} do not match the video ({num_src_frames} frames of "
            f"{src_hw[0]}x{src_hw[1]}); regenerate both with `animlcm synth` or remove the .parts.npz"
        )
    return parts

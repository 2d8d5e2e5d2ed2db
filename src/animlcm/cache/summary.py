"""The per-video summary that ``animlcm inspect`` prints (also handy in tests and scripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from animlcm.cache.reader import CacheReader
from animlcm.cache.writer import STATUS_OK
from animlcm.errors import AnimlcmError


def summarize(root: Path) -> dict[str, Any]:
    """``{"videos": [{"name", "status", "frames", "fps", "pose_rate", "face_rate", "motion_coverage",
    "latent_shape", "frame_shape", "maps", "error"}]}`` for every manifest entry (ok and failed)."""
    reader = CacheReader(root)
    videos = []
    for e in reader.entries:
        row: dict[str, Any] = {
            "name": e.name,
            "status": e.status,
            "frames": e.frames,
            "fps": e.fps,
            "pose_rate": None,
            "face_rate": None,
            "motion_coverage": None,
            "latent_shape": None,
            "frame_shape": None,
            "maps": [],
            "error": e.error,
            "source": e.source,
        }
        if e.status == STATUS_OK:
            try:
                with reader.open(e.name) as v:
                    row.update(v.summary())
                    row["latent_shape"] = [v.num_frames, *v.latent_shape]
                    row["frame_shape"] = [v.num_frames, v.height, v.width, 3]
                    row["maps"] = list(v.maps)
                    row["frames"] = v.num_frames
            except AnimlcmError as exc:  # a file deleted or damaged after the manifest said ok
                row["status"], row["error"] = "failed", str(exc)
        videos.append(row)
    return {"cache": str(Path(root)), "videos": videos}

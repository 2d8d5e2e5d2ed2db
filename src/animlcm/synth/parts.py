"""The body-part label file beside a synthetic clip: ``idNNN_clipMM.parts.npz``.

    labels   uint8 (F, H, W)   per pixel: the index into ``names`` of the part painted there last with
                               coverage >= 0.5 (0 = background); frame f is the clip's frame f
    names    str (P,)          ``layout.PART_NAMES`` when written

Written by ``animlcm synth`` (``.tmp`` then renamed, like the pose file); ``animlcm extract`` copies it into
the cache, where eval measures appearance part by part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.synth import layout

SUFFIX = ".parts.npz"


def parts_path(video: Path) -> Path:
    """``X.mp4`` -> ``X.parts.npz`` (the label maps beside a synthetic clip)."""
    video = Path(video)
    return video.with_name(video.stem + SUFFIX)


@dataclass(frozen=True)
class PartsFile:
    labels: np.ndarray  # (F, H, W) uint8
    names: tuple[str, ...]


def write_parts(path: Path, labels: np.ndarray, names: tuple[str, ...] = layout.PART_NAMES) -> None:
    """Write ``labels`` (F, H, W) and ``names`` to ``path`` atomically (``path.tmp``, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz" to the tmp name
        # compressed: the maps are large flat regions (~50x smaller), and synth writes thousands of clips
        np.savez_compressed(f, labels=np.asarray(labels, np.uint8), names=np.asarray(names, dtype=np.str_))
    tmp.replace(path)


def load_parts(path: Path) -> PartsFile:
    """Read a ``.parts.npz`` written by ``animlcm synth`` (one-line error when it is not one)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            labels, names = z["labels"], tuple(str(n) for n in z["names"])
    except (KeyError, ValueError, OSError) as exc:
        raise AnimlcmError(
            f"{path}: not a synth part-label file ({type(exc).__name__}); regenerate it with `animlcm synth`"
        ) from None
    if labels.ndim != 3 or labels.dtype != np.uint8 or (labels.size and labels.max() >= len(names)):
        raise AnimlcmError(
            f"{path}: labels {labels.dtype} {labels.shape} are not uint8 (F, H, W) indices into its "
            f"{len(names)} names; regenerate it with `animlcm synth`"
        )
    return PartsFile(labels=labels, names=names)

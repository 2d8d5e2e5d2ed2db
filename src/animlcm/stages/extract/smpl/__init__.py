"""SMPL guidance maps (depth, normal, semantic) for Champ-style teachers: fit SMPL to keypoints, render.

``compute_smpl_maps`` is what ``extract --smpl-model DIR`` calls once per video:

1. load the user's SMPL (``model.py``: ``DIR/smpl/SMPL_NEUTRAL.npz|pkl``, chumpy-free, no code from pickles),
2. find the frames that show a body (``fit.body_present``),
3. fit one shape and per-frame pose + weak-perspective camera to them (``fit.py``, SMPLify-style),
4. rasterise the posed meshes in torch (``raster.py``) and encode the maps (``maps.py``).
Frames without a body get black maps, zero parameters and ``valid = False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl.fit import NUM_COCO, FitConfig, body_present, fit_smpl
from animlcm.stages.extract.smpl.model import SmplBody, load_body_model

MAP_NAMES = ("depth", "normal", "semantic")

__all__ = ["MAP_NAMES", "FitConfig", "SmplResult", "compute_smpl_maps", "load_body_model", "SmplBody"]


@dataclass
class SmplResult:
    """Maps and parameters of one video; every array has the video's F frames first."""

    maps: dict[str, np.ndarray]  # "depth" | "normal" | "semantic" -> uint8 (F, H, W, 3)
    params: dict[
        str, np.ndarray
    ]  # betas (10,), body_pose (F,69), global_orient (F,3), transl (F,3), camera (F,3)
    valid: np.ndarray  # bool (F,): a body was found and fitted
    error_px: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.float32)
    )  # (F,) reprojection, NaN if invalid


def _perspective_transl(camera: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Weak-perspective (s, tx, ty) -> translation for a focal-max(H,W) pinhole at the origin (see fit.py)."""
    height, width = frame_hw
    focal = float(max(height, width))
    s = camera[:, 0]
    return np.stack(
        [(camera[:, 1] - width / 2) / s, -(camera[:, 2] - height / 2) / s, -focal / s], axis=1
    ).astype(np.float32)


def compute_smpl_maps(
    keypoints: np.ndarray,
    frame_hw: tuple[int, int],
    model_dir: Path,
    device: str = "cpu",
    world_landmarks: np.ndarray | None = None,
    *,
    fit_config: FitConfig | None = None,
    palette: np.ndarray | None = None,
    render_batch: int = 8,
    progress: bool = False,
) -> SmplResult:
    """Fit SMPL to a video's keypoints and render its depth / normal / semantic guidance maps.

    keypoints: (F, K, 3) x, y in output-frame pixels + confidence; the first 18: OpenPose coco18 body points.
    frame_hw: output frame (H, W). model_dir: the ``--smpl-model`` folder (or model file).
    world_landmarks: optional mediapipe world landmarks (F, 33, 3), metres, hip-centred; improve depth/turns.
    palette: per-vertex (V, 3) uint8 colours for the semantic map (default: Champ's; see ``maps.py``).
    """
    from animlcm.stages.extract.smpl.maps import vertex_colors
    from animlcm.stages.extract.smpl.render import render_maps

    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.ndim != 3 or keypoints.shape[1] < NUM_COCO or keypoints.shape[2] != 3:
        raise AnimlcmError(
            f"keypoints have shape {keypoints.shape}; expected (frames, >=18, 3) in coco18 order"
        )
    if world_landmarks is not None and np.shape(world_landmarks) != (len(keypoints), 33, 3):
        raise AnimlcmError(
            f"world landmarks have shape {np.shape(world_landmarks)}; expected ({len(keypoints)}, 33, 3)"
        )
    cfg = fit_config or FitConfig()
    height, width = frame_hw
    frames = len(keypoints)
    body = load_body_model(Path(model_dir), device)

    valid = body_present(keypoints, cfg)
    maps = {name: np.zeros((frames, height, width, 3), dtype=np.uint8) for name in MAP_NAMES}
    params = {
        "betas": np.zeros(10, np.float32),
        "body_pose": np.zeros((frames, 69), np.float32),
        "global_orient": np.zeros((frames, 3), np.float32),
        "transl": np.zeros((frames, 3), np.float32),
        "camera": np.zeros((frames, 3), np.float32),
    }
    error = np.full(frames, np.nan, np.float32)
    if not valid.any():
        return SmplResult(maps=maps, params=params, valid=valid, error_px=error)

    idx = np.flatnonzero(valid)
    world = None if world_landmarks is None else np.asarray(world_landmarks)[idx]
    fit = fit_smpl(body, keypoints[idx], world, cfg, progress=progress)
    colors = vertex_colors(body.parts.cpu().numpy(), palette)
    rendered = render_maps(
        body, fit.betas, fit.body_pose, fit.global_orient, fit.camera, (height, width), colors, render_batch
    )
    for name in MAP_NAMES:
        maps[name][idx] = rendered[name]
    params["betas"] = fit.betas
    params["body_pose"][idx] = fit.body_pose
    params["global_orient"][idx] = fit.global_orient
    params["camera"][idx] = fit.camera
    params["transl"][idx] = _perspective_transl(fit.camera, frame_hw)
    error[idx] = fit.error_px
    return SmplResult(maps=maps, params=params, valid=valid, error_px=error)

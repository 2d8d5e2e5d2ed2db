"""Pose the fitted SMPL meshes, place them with the weak-perspective camera and render the guidance maps."""

from __future__ import annotations

import numpy as np
import torch

from animlcm.stages.extract.smpl.maps import encode_maps, vertex_normals
from animlcm.stages.extract.smpl.model import SmplBody
from animlcm.stages.extract.smpl.raster import rasterize


def to_screen(verts: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Model space (y up, z to the viewer) -> screen (x right, y down pixels; z scaled, nearer = larger)."""
    s, tx, ty = camera[:, 0:1], camera[:, 1:2], camera[:, 2:3]
    return torch.stack([s * verts[..., 0] + tx, -s * verts[..., 1] + ty, s * verts[..., 2]], dim=-1)


@torch.no_grad()
def render_maps(
    body: SmplBody,
    betas: np.ndarray,
    body_pose: np.ndarray,
    global_orient: np.ndarray,
    camera: np.ndarray,
    frame_hw: tuple[int, int],
    colors: np.ndarray,
    batch_size: int = 8,
    advance=None,  # noqa: ANN001 - optional progress callback, called once per batch
) -> dict[str, np.ndarray]:
    """uint8 (N, H, W, 3) "depth", "normal", "semantic" maps for N fitted frames; ``colors`` (V, 3) uint8."""
    device = body.faces.device
    height, width = frame_hw
    n = len(body_pose)
    out = {k: np.zeros((n, height, width, 3), dtype=np.uint8) for k in ("depth", "normal", "semantic")}
    col = torch.as_tensor(colors, dtype=torch.float32, device=device) / 255.0
    beta_t = torch.as_tensor(betas, dtype=torch.float32, device=device)[None]
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        pose = torch.as_tensor(body_pose[sl], dtype=torch.float32, device=device)
        orient = torch.as_tensor(global_orient[sl], dtype=torch.float32, device=device)
        cam = torch.as_tensor(camera[sl], dtype=torch.float32, device=device)
        verts, _ = body.forward(beta_t, pose, orient)
        frags = rasterize(to_screen(verts, cam), body.faces, (height, width))
        # Camera space = model space here (OpenGL axes), so the model's normals are the camera's.
        maps = encode_maps(frags, vertex_normals(verts, body.faces), col, body.faces)
        for key, value in maps.items():
            out[key][sl] = value
        if advance is not None:
            advance()
    return out

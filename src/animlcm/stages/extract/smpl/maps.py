"""Encode rasterised SMPL meshes as Champ-style guidance images (uint8 RGB, background black).

Camera space is OpenGL/Blender's (x right, y up, z towards the viewer), the convention of Champ's Blender
renders. Encodings (Champ's exact depth/normal node setup is not readable, see the palette README):
- depth: per frame, the visible surface's z mapped linearly to [DEPTH_FLOOR, 1] over the person's pixels
  (nearest = 255, farthest = DEPTH_FLOOR * 255, so the far side never merges with the black background),
  grey in all three channels;
- normal: smooth-shaded (area-weighted vertex normals, interpolated, renormalised) camera-space normals as
  RGB = (n + 1) / 2; a surface facing the camera is (128, 128, 255);
- semantic: per-vertex colours interpolated across each triangle (Blender's vertex-colour shading). For the
  real SMPL (6890 vertices) they are Champ's palette ``champ_semantic_palette_rgb.npy``; for any other mesh
  each vertex takes the colour of its body part (argmax of its skinning weights, 0..23) from the palette's
  24 distinct colours in sorted (lexicographic RGB) order: a fixed but arbitrary part-to-colour pairing,
  since Champ's pairing is only defined on the real SMPL vertices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl.raster import Fragments, interpolate

DEPTH_FLOOR = 0.2
PALETTE_FILE = "champ_semantic_palette_rgb.npy"


def palette_path() -> Path:
    """The packaged Champ palette (6890 x 3 uint8 RGB, MIT, from Champ's smpl_mesh_info.npy)."""
    here = Path(__file__).resolve().parent / PALETTE_FILE
    assets = Path(__file__).resolve().parents[3] / "assets" / PALETTE_FILE
    return assets if assets.exists() else here


def load_palette() -> np.ndarray:
    path = palette_path()
    if not path.exists():
        raise AnimlcmError(
            f"{path}: Champ's semantic palette is missing from the installation; reinstall animlcm"
        )
    return np.load(path, allow_pickle=False)


def vertex_colors(parts: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex uint8 RGB (V, 3): ``palette`` when it has one row per vertex, else 24 part colours."""
    palette = load_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.shape == (len(parts), 3):
        return palette
    colours = np.unique(palette.reshape(-1, 3), axis=0)
    if len(colours) < 24:
        raise AnimlcmError(
            f"semantic palette has {len(colours)} distinct colours; 24 (one per SMPL part) needed"
        )
    return colours[np.asarray(parts) % len(colours)]


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals (B, V, 3) of counter-clockwise (outward) wound faces."""
    tri = verts[:, faces]  # (B, T, 3, 3)
    face_n = torch.cross(
        tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1
    )  # length = 2 x area
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_n)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def depth_map(frags: Fragments) -> torch.Tensor:
    """(B, H, W) float in [0, 1]: per-frame normalised nearness, zero on background."""
    mask = frags.mask
    big = torch.finfo(frags.depth.dtype).max
    zmin = torch.where(mask, frags.depth, big).flatten(1).amin(dim=1)
    zmax = torch.where(mask, frags.depth, -big).flatten(1).amax(dim=1)
    span = torch.clamp(zmax - zmin, min=1e-8)[:, None, None]
    rel = (frags.depth - zmin[:, None, None]) / span
    return torch.where(mask, DEPTH_FLOOR + (1.0 - DEPTH_FLOOR) * rel.clamp(0, 1), torch.zeros_like(rel))


def normal_map(frags: Fragments, normals: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) float in [0, 1]: (n + 1) / 2 of the interpolated unit normal, zero on background."""
    n = torch.nn.functional.normalize(interpolate(frags, normals, faces), dim=-1, eps=1e-12)
    return torch.where(frags.mask[..., None], (n + 1.0) / 2.0, torch.zeros_like(n))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def encode_maps(
    frags: Fragments, normals: torch.Tensor, colors: torch.Tensor, faces: torch.Tensor
) -> dict[str, np.ndarray]:
    """The three guidance maps, uint8 (B, H, W, 3): ``colors`` is (V, 3) float in [0, 1]."""
    depth = depth_map(frags)
    semantic = interpolate(frags, colors, faces)
    return {
        "depth": to_uint8(depth[..., None].expand(-1, -1, -1, 3)),
        "normal": to_uint8(normal_map(frags, normals, faces)),
        "semantic": to_uint8(semantic),
    }

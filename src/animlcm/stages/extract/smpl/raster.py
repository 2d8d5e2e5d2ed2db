"""A z-buffer triangle rasteriser in plain torch (CPU and CUDA), vectorised over triangles and frames.

Screen space: ``x`` right and ``y`` down in pixels, pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``;
``z`` grows towards the camera (larger = nearer wins). A pixel is covered when its centre lies inside or on
the edge of a triangle (no culling: both windings are drawn). Attributes are interpolated linearly in screen
space, which is exact for the orthographic / weak-perspective cameras the SMPL fit uses.

How: every triangle gets the pixel bounding box of its centres, covered by 4 x 4 pixel tiles; tiles that an
edge function excludes at all four corners are dropped; the surviving (triangle, tile) items are tested in
chunks of at most ``max_candidates`` pixels, where barycentrics and depth are affine in the pixel position
(one batched matmul). The nearest triangle per pixel is found with one ``scatter_reduce(amax)`` on a key that
packs quantised depth (high bits) with the triangle index (low bits). The winners' barycentrics
and depth are then recomputed exactly (the quantisation only picks the winner).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_INDEX_BITS = 26  # up to 67M triangles per call (frames x faces)
_DEPTH_LEVELS = 2**30
_TILE = 4  # pixels per tile side: SMPL's triangles are a few pixels wide at 512 x 768


@dataclass
class Fragments:
    """Per pixel: the visible face (-1 = background), its barycentrics and its depth."""

    face: torch.Tensor  # (B, H, W) long, index into ``faces``; -1 where nothing is drawn
    bary: torch.Tensor  # (B, H, W, 3) float, zero on background
    depth: torch.Tensor  # (B, H, W) float, screen z of the visible surface, zero on background

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0


def _barycentric(
    px: torch.Tensor, py: torch.Tensor, tri: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Barycentric weights of points (px, py) in triangles ``tri`` (..., 3, 2), broadcast together."""
    ax, ay = tri[..., 0, 0], tri[..., 0, 1]
    bx, by = tri[..., 1, 0], tri[..., 1, 1]
    cx, cy = tri[..., 2, 0], tri[..., 2, 1]
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    w0 = ((bx - px) * (cy - py) - (by - py) * (cx - px)) / area
    w1 = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) / area
    return w0, w1, 1.0 - w0 - w1


def rasterize(
    verts: torch.Tensor, faces: torch.Tensor, image_hw: tuple[int, int], *, max_candidates: int = 2**22
) -> Fragments:
    """Rasterise ``verts`` (B, V, 3) screen-space (x, y pixels, z nearer = larger) with ``faces`` (T, 3)."""
    batch, _, _ = verts.shape
    height, width = image_hw
    device = verts.device
    num_faces = faces.shape[0]
    if batch * num_faces >= 2**_INDEX_BITS:
        raise ValueError(
            f"too many triangles in one call ({batch} x {num_faces}); render fewer frames at once"
        )
    verts = verts.float()
    tri = verts[:, faces]  # (B, T, 3, 3)
    tri = tri.reshape(batch * num_faces, 3, 3)
    frame = torch.arange(batch, device=device).repeat_interleave(num_faces)

    # Pixel index range whose centres can fall inside each triangle's box.
    lo = tri[..., :2].amin(dim=1)
    hi = tri[..., :2].amax(dim=1)
    x0 = torch.ceil(lo[:, 0] - 0.5).clamp(min=0).long()
    y0 = torch.ceil(lo[:, 1] - 0.5).clamp(min=0).long()
    x1 = torch.floor(hi[:, 0] - 0.5).clamp(max=width - 1).long()
    y1 = torch.floor(hi[:, 1] - 0.5).clamp(max=height - 1).long()
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 1, 1] - tri[:, 0, 1]) * (
        tri[:, 2, 0] - tri[:, 0, 0]
    )
    finite = torch.isfinite(tri).all(dim=2).all(dim=1)
    keep = (x1 >= x0) & (y1 >= y0) & (area.abs() > 1e-12) & finite
    ids = torch.nonzero(keep).squeeze(1)

    keys = torch.full((batch * height * width,), -1, dtype=torch.long, device=device)
    if ids.numel():
        z = tri[ids, :, 2]
        zmin, zmax = z.min(), z.max()
        zscale = (_DEPTH_LEVELS - 1) / torch.clamp(zmax - zmin, min=1e-12)
        planes = _planes(tri[ids], zmin, zscale)
        # Cover each triangle's box with TILE x TILE pixel tiles (anchored at the box corner) and drop the
        # tiles that an edge function rules out at all four corners: thin, diagonal triangles then cost about
        # the tiles they cross, not their whole bounding box.
        nx = (x1[ids] - x0[ids]) // _TILE + 1
        ny = (y1[ids] - y0[ids]) // _TILE + 1
        item_tri = torch.repeat_interleave(torch.arange(len(ids), device=device), nx * ny)
        first = torch.cumsum(nx * ny, 0) - nx * ny
        k = torch.arange(len(item_tri), device=device) - first[item_tri]
        tx = x0[ids][item_tri] + (k % nx[item_tri]) * _TILE
        ty = y0[ids][item_tri] + (k // nx[item_tri]) * _TILE
        corners = torch.tensor(
            [[0.5, 0.5], [_TILE - 0.5, 0.5], [0.5, _TILE - 0.5], [_TILE - 0.5, _TILE - 0.5]]
        )
        corners = corners.to(device)
        pts = torch.stack([tx[:, None] + corners[:, 0], ty[:, None] + corners[:, 1]], dim=2).float()
        pl = planes[item_tri]  # (items, 3, 4)
        edge = pts @ pl[:, :2, :3] + pl[:, 2:3, :3]  # (items, 4 corners, 3 edges)
        alive = (edge.amax(dim=1) >= -1e-6).all(dim=1)
        item_tri, tx, ty = item_tri[alive], tx[alive], ty[alive]
        per_chunk = max(1, max_candidates // (_TILE * _TILE))
        for start in range(0, len(item_tri), per_chunk):
            sl = slice(start, start + per_chunk)
            _scatter_tiles(
                keys, ids, item_tri[sl], tx[sl], ty[sl], planes, frame, x1, y1, height, width
            )  # fmt: skip

    return _resolve(keys, tri, num_faces, batch, height, width)


def _planes(tri: torch.Tensor, zmin: torch.Tensor, zscale: torch.Tensor) -> torch.Tensor:
    """(n, 3, 4): per triangle, the affine maps (x, y, 1) -> (w0, w1, w2, quantised depth).

    Barycentrics and depth are affine in the pixel position, so testing a grid of candidates is one batched
    matmul instead of a dozen elementwise passes over it.
    """
    ax, ay, bx, by, cx, cy = (tri[:, i, j] for i in range(3) for j in range(2))
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    w0 = torch.stack([by - cy, cx - bx, bx * cy - by * cx], dim=1)
    w1 = torch.stack([cy - ay, ax - cx, cx * ay - cy * ax], dim=1)
    w2 = torch.stack([ay - by, bx - ax, ax * by - ay * bx], dim=1)
    bary = torch.stack([w0, w1, w2], dim=2) / area[:, None, None]  # (n, 3 coords, 3 weights)
    zq = (tri[:, :, 2] - zmin) * zscale  # quantised-depth units at the three corners
    depth = (bary * zq[:, None, :]).sum(dim=2, keepdim=True)
    return torch.cat([bary, depth], dim=2)


def _scatter_tiles(
    keys: torch.Tensor,
    ids: torch.Tensor,
    item_tri: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    planes: torch.Tensor,
    frame: torch.Tensor,
    x1: torch.Tensor,
    y1: torch.Tensor,
    height: int,
    width: int,
) -> None:
    """Test the pixels of a batch of (triangle, tile) items; keep each pixel's nearest in ``keys``."""
    device = keys.device
    dy, dx = torch.meshgrid(
        torch.arange(_TILE, device=device), torch.arange(_TILE, device=device), indexing="ij"
    )
    dx, dy = dx.reshape(-1), dy.reshape(-1)
    px = tx[:, None] + dx  # (items, TILE*TILE)
    py = ty[:, None] + dy
    tri_id = ids[item_tri]
    pts = torch.stack([px + 0.5, py + 0.5], dim=2).float()
    pl = planes[item_tri]
    vals = pts @ pl[:, :2] + pl[:, 2:3]  # (items, TILE*TILE, 4): w0, w1, w2, quantised depth
    inside = (vals[..., :3] >= -1e-6).all(dim=2) & (px <= x1[tri_id, None]) & (py <= y1[tri_id, None])
    i_idx, g_idx = torch.nonzero(inside, as_tuple=True)
    if i_idx.numel() == 0:
        return
    zq = vals[i_idx, g_idx, 3].round().clamp(0, _DEPTH_LEVELS - 1).long()
    hit = tri_id[i_idx]
    pixel = (frame[hit] * height + py[i_idx, g_idx]) * width + px[i_idx, g_idx]
    keys.scatter_reduce_(0, pixel, (zq << _INDEX_BITS) | hit, reduce="amax")


def _resolve(
    keys: torch.Tensor, tri: torch.Tensor, num_faces: int, batch: int, height: int, width: int
) -> Fragments:
    """Exact barycentrics and depth of each pixel's winning triangle."""
    device = keys.device
    hit = keys >= 0
    tri_id = keys[hit] & ((1 << _INDEX_BITS) - 1)
    pix = torch.nonzero(hit).squeeze(1)
    px = (pix % width).float() + 0.5
    py = ((pix // width) % height).float() + 0.5
    t = tri[tri_id]
    w0, w1, w2 = _barycentric(px, py, t[..., :2])
    bary = torch.zeros(batch * height * width, 3, device=device)
    bary[hit] = torch.stack([w0, w1, w2], dim=1).clamp(0, 1)
    depth = torch.zeros(batch * height * width, device=device)
    depth[hit] = (bary[hit] * t[..., 2]).sum(dim=1)
    face = torch.full((batch * height * width,), -1, dtype=torch.long, device=device)
    face[hit] = tri_id % num_faces
    return Fragments(
        face=face.view(batch, height, width),
        bary=bary.view(batch, height, width, 3),
        depth=depth.view(batch, height, width),
    )


def interpolate(frags: Fragments, attrs: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-pixel attribute from per-vertex ``attrs`` (B, V, C) or (V, C); zero on background. -> (B,H,W,C)."""
    batch, height, width = frags.face.shape
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0).expand(batch, -1, -1)
    out = torch.zeros(batch, height, width, attrs.shape[-1], dtype=attrs.dtype, device=attrs.device)
    mask = frags.mask
    b_idx = torch.nonzero(mask, as_tuple=True)[0]
    corner = attrs[b_idx[:, None], faces[frags.face[mask]]]  # (N, 3, C)
    out[mask] = (frags.bary[mask].to(attrs.dtype).unsqueeze(-1) * corner).sum(dim=1)
    return out

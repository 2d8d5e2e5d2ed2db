"""The torch z-buffer rasteriser against analytic cases: coverage, depth, normals, occlusion, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animlcm.stages.extract.smpl.maps import depth_map, normal_map, vertex_normals
from animlcm.stages.extract.smpl.raster import interpolate, rasterize

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tri(points, device="cpu"):
    return torch.tensor([points], dtype=torch.float32, device=device), torch.tensor(
        [[0, 1, 2]], device=device
    )


@pytest.mark.parametrize("device", DEVICES)
def test_single_triangle_coverage_and_depth(device):
    # Right triangle x >= 1, y >= 1, x + y <= 8; depth plane z = 0.5 + 0.1 x + 0.2 y.
    pts = [[1, 1, 0.5 + 0.1 + 0.2], [7, 1, 0.5 + 0.7 + 0.2], [1, 7, 0.5 + 0.1 + 1.4]]
    verts, faces = _tri(pts, device)
    frags = rasterize(verts, faces, (10, 10))
    ii, jj = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    cx, cy = jj + 0.5, ii + 0.5
    expected = (cx >= 1) & (cy >= 1) & (cx + cy <= 8)
    assert np.array_equal(frags.mask[0].cpu().numpy(), expected)
    assert expected.sum() == 21  # 6 + 5 + ... + 1 pixel centres
    depth = frags.depth[0].cpu().numpy()
    plane = 0.5 + 0.1 * cx + 0.2 * cy
    np.testing.assert_allclose(depth[expected], plane[expected], atol=1e-5)
    assert (depth[~expected] == 0).all()
    # Barycentrics reproduce the pixel centre.
    xy = interpolate(frags, verts[0, :, :2], faces)[0].cpu().numpy()
    np.testing.assert_allclose(xy[expected], np.stack([cx, cy], -1)[expected], atol=1e-4)


def test_triangle_outside_or_degenerate_draws_nothing():
    for pts in ([[-5, -5, 1], [-1, -5, 1], [-5, -1, 1]], [[1, 1, 1], [5, 5, 1], [9, 9, 1]]):
        verts, faces = _tri(pts)
        assert not rasterize(verts, faces, (10, 10)).mask.any()


@pytest.mark.parametrize("device", DEVICES)
def test_occlusion_order_independent_of_face_order(device):
    # Two overlapping triangles; the nearer (larger z) one must win wherever they overlap.
    verts = torch.tensor(
        [[[0, 0, 1.0], [10, 0, 1.0], [0, 10, 1.0], [2, 2, 3.0], [12, 2, 3.0], [2, 12, 3.0]]],
        device=device,
    )
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        f = torch.tensor(faces, device=device)
        frags = rasterize(verts, f, (12, 12))
        near = f.tolist().index([3, 4, 5])
        assert frags.face[0, 4, 4].item() == near  # centre (4.5, 4.5): inside both
        assert frags.depth[0, 4, 4].item() == pytest.approx(3.0)
        assert frags.face[0, 0, 0].item() == 1 - near  # only the far triangle covers (0.5, 0.5)


def _cube(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A unit cube with 4 vertices per face (so vertex normals are face normals), faces wound outward."""
    verts, faces, normals = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = torch.zeros(3)
            n[axis] = sign
            u = torch.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = torch.cross(n, u, dim=0)
            base = len(verts)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                verts.append(n * 0.5 + 0.5 * a * u + 0.5 * b * v)
            faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]  # CCW seen from outside
            normals.append(n)
    verts = torch.stack(verts) @ rotation.T
    return verts, torch.tensor(faces), torch.stack(normals) @ rotation.T


def test_cube_face_normals_and_depth_ordering():
    # Turn the +x, +y and +z faces towards the viewer (+z, OpenGL camera), then project orthographically.
    ax, ay = 0.6, -0.7
    rx = torch.tensor(
        [[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]], dtype=torch.float32
    )
    ry = torch.tensor(
        [[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]], dtype=torch.float32
    )
    verts, faces, face_normals = _cube(rx @ ry)
    scale, size = 40.0, 96
    screen = torch.stack(
        [scale * verts[:, 0] + size / 2, -scale * verts[:, 1] + size / 2, scale * verts[:, 2]], -1
    )
    frags = rasterize(screen[None], faces, (size, size))
    normals = vertex_normals(verts[None], faces)
    # Area-weighted vertex normals of unshared vertices are the face normals.
    for f in range(6):
        np.testing.assert_allclose(normals[0, 4 * f].numpy(), face_normals[f].numpy(), atol=1e-5)
    nmap = normal_map(frags, normals, faces)[0]
    visible = frags.face[0][frags.mask[0]] // 2  # cube face of each drawn pixel
    expected = (face_normals[visible] + 1) / 2
    np.testing.assert_allclose(nmap[frags.mask[0]].numpy(), expected.numpy(), atol=1e-5)
    # Exactly the three faces turned towards the viewer are visible.
    assert set(visible.unique().tolist()) == {f for f in range(6) if face_normals[f, 2] > 0}
    # Background is black; depth is normalised per frame into [DEPTH_FLOOR, 1], brightest = nearest corner.
    assert (nmap[~frags.mask[0]] == 0).all()
    d = depth_map(frags)[0]
    assert d[frags.mask[0]].min() >= 0.2 - 1e-6 and d.max() == pytest.approx(1.0)
    near = torch.argmax(frags.depth[0].flatten())
    assert d.flatten()[near] == d.max()


def test_chunking_does_not_change_the_result():
    gen = torch.Generator().manual_seed(0)
    verts = torch.rand(2, 60, 3, generator=gen) * torch.tensor([64.0, 48.0, 1.0])
    faces = torch.randint(0, 60, (80, 3), generator=gen)
    big = rasterize(verts, faces, (48, 64))
    small = rasterize(verts, faces, (48, 64), max_candidates=16 * 32)  # 32 tiles per chunk: many chunks
    assert big.mask.sum() > 100
    assert torch.equal(big.face, small.face)
    torch.testing.assert_close(big.depth, small.depth)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    verts = torch.rand(3, 200, 3, generator=gen) * torch.tensor([80.0, 60.0, 1.0])
    faces = torch.randint(0, 200, (300, 3), generator=gen)
    cpu = rasterize(verts, faces, (60, 80))
    gpu = rasterize(verts.cuda(), faces.cuda(), (60, 80))
    assert (cpu.face == gpu.face.cpu()).float().mean() > 0.999  # ties at shared edges may differ
    torch.testing.assert_close(cpu.depth, gpu.depth.cpu(), atol=1e-4, rtol=0)

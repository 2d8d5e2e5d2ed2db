"""A small SMPL-format humanoid for tests, benchmarks and demos (the real SMPL cannot be redistributed).

It has the real SMPL's 24-joint skeleton (approximate rest positions of the neutral model, T-pose, y up,
metres, facing +z) and the same file keys and shapes as ``SMPL_NEUTRAL.pkl`` except V: each bone is an
8-sided prism (3 rings and 2 caps by default) around its segment, skinned rigidly to the bone's parent
joint as SMPL skins limbs; the head has an extra prism. ``J_regressor`` averages the ring centred on each
joint, so the regressed rest joints are exact. Shape: beta0 height, beta1 width, beta2 depth, beta3..
small smooth bumps. ``posedirs`` are zero. Five extra vertices (not in any face) mark nose, eyes and ears
for the fit (``landmark_vertex_ids``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from animlcm.stages.extract.smpl.model import NUM_JOINTS, save_model_npz

PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
REST_JOINTS = np.array(
    [
        [0.00, 0.00, 0.00],  # 0 pelvis
        [0.06, -0.09, 0.00],  # 1 L_hip
        [-0.06, -0.09, 0.00],  # 2 R_hip
        [0.00, 0.11, -0.01],  # 3 spine1
        [0.10, -0.47, 0.00],  # 4 L_knee
        [-0.10, -0.47, 0.00],  # 5 R_knee
        [0.00, 0.24, 0.00],  # 6 spine2
        [0.09, -0.87, -0.03],  # 7 L_ankle
        [-0.09, -0.87, -0.03],  # 8 R_ankle
        [0.00, 0.30, 0.01],  # 9 spine3
        [0.11, -0.93, 0.09],  # 10 L_foot
        [-0.11, -0.93, 0.09],  # 11 R_foot
        [0.00, 0.51, -0.01],  # 12 neck
        [0.07, 0.42, -0.01],  # 13 L_collar
        [-0.07, 0.42, -0.01],  # 14 R_collar
        [0.00, 0.58, 0.04],  # 15 head
        [0.17, 0.45, -0.01],  # 16 L_shoulder
        [-0.17, 0.45, -0.01],  # 17 R_shoulder
        [0.43, 0.45, -0.03],  # 18 L_elbow
        [-0.43, 0.45, -0.03],  # 19 R_elbow
        [0.68, 0.45, -0.03],  # 20 L_wrist
        [-0.68, 0.45, -0.03],  # 21 R_wrist
        [0.77, 0.45, -0.04],  # 22 L_hand
        [-0.77, 0.45, -0.04],  # 23 R_hand
    ],
    dtype=np.float64,
)
# Radius of the prism that ends at each joint (the bone parent -> joint), metres.
RADII = np.array(
    [0, 0.08, 0.08, 0.13, 0.075, 0.075, 0.13, 0.05, 0.05, 0.14, 0.04, 0.04]
    + [0.05, 0.06, 0.06, 0.05, 0.06, 0.06, 0.05, 0.05, 0.04, 0.04, 0.035, 0.035]
)


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors u, v with u x v = axis (right-handed), for laying out a ring around ``axis``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(axis, u)


def _prism(
    start: np.ndarray, end: np.ndarray, radius: float, offset: int, sides: int, rings: int
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and outward-wound faces of a ``sides``-sided prism from ``start`` to ``end``."""
    axis = end - start
    axis = axis / np.linalg.norm(axis)
    u, v = _frame(axis)
    angles = 2 * np.pi * np.arange(sides) / sides
    circle = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    ring_pts = [start + t * (end - start) + circle for t in np.linspace(0.0, 1.0, rings)]
    verts = np.concatenate([*ring_pts, start[None], end[None]])
    faces = []
    for r in range(rings - 1):
        for i in range(sides):
            a, b = r * sides + i, r * sides + (i + 1) % sides
            c, d = b + sides, a + sides
            faces += [(a, b, c), (a, c, d)]  # tangent x axis points outward
    cap0, cap1, last = rings * sides, rings * sides + 1, (rings - 1) * sides
    for i in range(sides):
        faces.append((cap0, (i + 1) % sides, i))
        faces.append((cap1, last + i, last + (i + 1) % sides))
    return verts, np.asarray(faces) + offset


def make_synthetic_smpl(seed: int = 0, sides: int = 8, rings: int = 3) -> dict[str, np.ndarray]:
    """The model as a dict with the SMPL keys (see the module docstring).

    ``sides=32, rings=9`` gives 13,824 faces, about the real SMPL's 13,776 (for rendering benchmarks).
    """
    verts, faces, owner = [], [], []
    j_regressor = np.zeros((NUM_JOINTS, 0))
    ring_of_joint: dict[int, np.ndarray] = {}
    count = 0
    segments = [(int(PARENTS[j]), j, REST_JOINTS[PARENTS[j]], REST_JOINTS[j], RADII[j]) for j in range(1, 24)]
    head_top = REST_JOINTS[15] + np.array([0.0, 0.20, 0.0])
    segments.append((15, -1, REST_JOINTS[15] - np.array([0.0, 0.04, 0.0]), head_top, 0.09))
    for parent, joint, start, end, radius in segments:
        v, f = _prism(start, end, float(radius), count, sides, rings)
        verts.append(v)
        faces.append(f)
        owner += [parent] * len(v)
        end_ring = count + (rings - 1) * sides + np.arange(sides)
        if joint >= 0:
            ring_of_joint[joint] = end_ring
        if parent == 0 and joint == 3:
            # the start ring of the spine is centred on the pelvis
            ring_of_joint[0] = count + np.arange(sides)
        count += len(v)
    # Face landmarks: nose, right eye, left eye, right ear, left ear (the person's right is -x).
    head = REST_JOINTS[15] + np.array([0.0, 0.08, 0.0])
    marks = head + np.array(
        [[0.0, -0.02, 0.09], [-0.035, 0.02, 0.08], [0.035, 0.02, 0.08], [-0.09, 0.0, 0.0], [0.09, 0.0, 0.0]]
    )
    verts.append(marks)
    owner += [15] * 5
    landmark_ids = np.arange(count, count + 5)
    count += 5

    v_template = np.concatenate(verts)
    num_v = len(v_template)
    j_regressor = np.zeros((NUM_JOINTS, num_v))
    for joint, ring in ring_of_joint.items():
        j_regressor[joint, ring] = 1.0 / len(ring)
    weights = np.zeros((num_v, NUM_JOINTS))
    weights[np.arange(num_v), owner] = 1.0

    rng = np.random.default_rng(seed)
    shapedirs = np.zeros((num_v, 3, 10))
    shapedirs[:, 1, 0] = 0.08 * v_template[:, 1]  # taller
    shapedirs[:, 0, 1] = 0.08 * v_template[:, 0]  # broader
    shapedirs[:, 2, 2] = 0.08 * v_template[:, 2]  # deeper
    for k in range(3, 10):  # smooth low-amplitude bumps so every beta does something
        freq = rng.normal(size=3) * 3
        shapedirs[:, :, k] = 0.005 * np.sin(v_template @ freq)[:, None] * rng.normal(size=3)
    kintree = np.stack([PARENTS, np.arange(NUM_JOINTS)]).astype(np.int64)
    return {
        "v_template": v_template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((num_v, 3, 207), dtype=np.float32),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": np.concatenate(faces).astype(np.int64),
        "landmark_vertex_ids": landmark_ids.astype(np.int64),
    }


def write_synthetic_smpl(model_dir: Path, seed: int = 0, sides: int = 8, rings: int = 3) -> Path:
    """Write ``model_dir/smpl/SMPL_NEUTRAL.npz`` (what ``--smpl-model model_dir`` expects)."""
    data = make_synthetic_smpl(seed, sides, rings)
    return save_model_npz(data, Path(model_dir) / "smpl" / "SMPL_NEUTRAL.npz")

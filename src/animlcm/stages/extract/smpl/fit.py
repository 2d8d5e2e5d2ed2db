"""SMPLify-style fit of SMPL to a video's 2D keypoints (and mediapipe world landmarks), batched over frames.

Camera: weak perspective per frame, ``u = s * x + tx``, ``v = -s * y + ty`` (pixels; SMPL's y is up, the
image's y is down; SMPL is fitted with zero translation and z points at the viewer). ``camera = (s, tx, ty)``.
``transl`` reports the equivalent perspective translation for a pinhole camera at the origin looking down -z
with focal length ``max(H, W)`` px and the principal point at the image centre: ``(X, Y, Z) = ((tx - cx) / s,
-(ty - cy) / s, -f / s)``.

Objective (summed, frames with a body only; lengths in metres by dividing pixels by the initial scale):
- reprojection: confidence-weighted squared distance of the 18 OpenPose coco18 points to their SMPL
  counterparts (neck = mid-shoulders; nose, eyes, ears = face vertices when the model names them);
- 3D (when mediapipe world landmarks are given): hip-centred SMPL joints vs hip-centred landmarks;
- pose prior: L2 on ``body_pose`` plus SMPLify's joint limits, a quadratic hinge that stops elbows and
  knees bending backwards (we have no GMM prior: the L2 keeps unobserved twists at rest instead);
- shape prior: L2 on ``betas``, one ``betas`` for the whole video;
- temporal smoothness: squared differences of consecutive frames' pose and camera.
L-BFGS (strong Wolfe line search) in two phases: camera and global orientation on the torso first,
then everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from smplx.lbs import batch_rodrigues

from animlcm.stages.extract.smpl.model import NUM_JOINTS, SmplBody

NUM_COCO = 18
# coco18 index -> SMPL joint (or "landmark k" for face vertices); neck is the mid-shoulder point.
_COCO_TO_SMPL = {
    2: 17, 3: 19, 4: 21,  # right shoulder, elbow, wrist
    5: 16, 6: 18, 7: 20,  # left shoulder, elbow, wrist
    8: 2, 9: 5, 10: 8,  # right hip, knee, ankle
    11: 1, 12: 4, 13: 7,  # left hip, knee, ankle
}  # fmt: skip
_COCO_TO_LANDMARK = {0: 0, 14: 1, 15: 2, 16: 3, 17: 4}  # nose, reye, leye, rear, lear
_TORSO = (2, 5, 8, 11)
# mediapipe pose landmark -> SMPL joint (shoulders, elbows, wrists, hips, knees, ankles) and coco18 index.
_MP_TO_SMPL = {11: 16, 12: 17, 13: 18, 14: 19, 15: 20, 16: 21, 23: 1, 24: 2, 25: 4, 26: 5, 27: 7, 28: 8}
_MP_TO_COCO = {11: 5, 12: 2, 13: 6, 14: 3, 15: 7, 16: 4, 23: 11, 24: 8, 25: 12, 26: 9, 27: 13, 28: 10}
# SMPLify's joint limits on body_pose (elbow y, knee x): sign * angle > 0 means bending the wrong way.
_LIMIT_IDX = (52, 55, 9, 12)
_LIMIT_SIGN = (1.0, -1.0, -1.0, -1.0)


@dataclass(frozen=True)
class FitConfig:
    """Weights and schedule of the fit (the defaults work for 128..768 px frames)."""

    conf_threshold: float = 0.2  # keypoints below this confidence are ignored
    min_points: int = 6  # a frame has a body with >= this many confident coco18 points ...
    min_torso: int = 2  # ... of which >= this many of the 2 shoulders and 2 hips
    iters_camera: int = 30  # phase 1: camera + global orientation, torso points only (L-BFGS evaluations)
    iters_full: int = 150  # phase 2: everything
    w_pose: float = 5e-4  # L2 on body_pose (radians^2)
    w_limit: float = 1.0  # elbow/knee hyperextension hinge
    w_shape: float = 1e-3  # L2 on betas
    w_smooth_pose: float = 1e-2  # consecutive-frame pose differences
    w_smooth_cam: float = 1e-1  # consecutive-frame camera differences (log-scale, metres)
    w_world: float = 1.0  # mediapipe world-landmark term


@dataclass
class FitResult:
    """Fitted parameters of the frames given to ``fit_smpl`` (all float32 numpy)."""

    betas: np.ndarray  # (10,)
    body_pose: np.ndarray  # (N, 69)
    global_orient: np.ndarray  # (N, 3)
    camera: np.ndarray  # (N, 3) s, tx, ty
    error_px: np.ndarray  # (N,) confidence-weighted mean reprojection error, pixels


class JointModel:
    """SMPL joints and face landmarks without skinning the whole mesh (what the fit needs, fast).

    Same maths as ``smplx.lbs`` (shape blend, joint regression, forward kinematics), but the kinematic chain
    is walked one tree level at a time (9 levels instead of 24 joints: the fit is overhead-bound on CPU).
    The five landmark vertices are skinned with their weights but without pose blend shapes, a sub-millimetre
    difference.
    """

    def __init__(self, body: SmplBody) -> None:
        module = body.module
        self.v_template = module.v_template
        self.shapedirs = module.shapedirs
        self.j_regressor = module.J_regressor
        parents = module.parents.tolist()
        depth = [0] * NUM_JOINTS
        for j in range(1, NUM_JOINTS):
            depth[j] = depth[parents[j]] + 1
        device = module.v_template.device
        self.parents = torch.tensor([max(p, 0) for p in parents], device=device)
        # Joints are produced level by level, in the order root, level 1, level 2, ...: remember where each
        # level's parents sit in that running order, and the permutation back to SMPL's joint order.
        order = [0]
        self.levels, self.parent_slots = [], []
        for d in range(1, max(depth) + 1):
            level = [j for j in range(NUM_JOINTS) if depth[j] == d]
            self.levels.append(torch.tensor(level, device=device))
            self.parent_slots.append(torch.tensor([order.index(parents[j]) for j in level], device=device))
            order += level
        self.perm = torch.tensor(np.argsort(order), device=device)
        self.landmarks = body.landmarks
        if self.landmarks is not None:
            self.lm_weights = module.lbs_weights[self.landmarks]  # (5, 24)

    def __call__(
        self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(joints (N,24,3), landmarks (N,5,3) or None) for shared ``betas`` (1,10) and per-frame pose."""
        batch = body_pose.shape[0]
        v_shaped = self.v_template + torch.einsum("l,vkl->vk", betas[0], self.shapedirs)
        rest = self.j_regressor @ v_shaped  # (24, 3)
        bones = torch.cat([rest[:1], rest[1:] - rest[self.parents[1:]]])  # root: its own position
        pose = torch.cat([global_orient, body_pose], dim=1).reshape(-1, 3)
        local = batch_rodrigues(pose).view(batch, NUM_JOINTS, 3, 3)
        rot = local[:, :1]
        pos = bones[None, :1].expand(batch, -1, -1)
        for level, slots in zip(self.levels, self.parent_slots, strict=True):
            prot, ppos = rot[:, slots], pos[:, slots]
            rot = torch.cat([rot, prot @ local[:, level]], dim=1)
            pos = torch.cat([pos, ppos + (prot @ bones[level][None, :, :, None]).squeeze(-1)], dim=1)
        rot, joints = rot[:, self.perm], pos[:, self.perm]
        if self.landmarks is None:
            return joints, None
        # Linear blend skinning of the landmarks: x = sum_k w_k (R_k (x_rest - rest_k) + joint_k).
        rest_lm = v_shaped[self.landmarks]  # (5, 3)
        rotated = torch.einsum("nkab,lb->nlka", rot, rest_lm)
        shift = joints - torch.einsum("nkab,kb->nka", rot, rest)
        landmarks = torch.einsum("lk,nlka->nla", self.lm_weights, rotated) + self.lm_weights @ shift
        return joints, landmarks


def body_present(keypoints: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """(F,) bool: frames whose coco18 points show a body (enough confident points, torso included)."""
    conf = keypoints[:, :NUM_COCO, 2] >= cfg.conf_threshold
    return (conf.sum(axis=1) >= cfg.min_points) & (conf[:, list(_TORSO)].sum(axis=1) >= cfg.min_torso)


def coco_from_smpl(joints: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
    """(N, 18, 3) model points in coco18 order (zeros where the model has no counterpart)."""
    out = joints.new_zeros(joints.shape[0], NUM_COCO, 3)
    for coco, smpl in _COCO_TO_SMPL.items():
        out[:, coco] = joints[:, smpl]
    out[:, 1] = 0.5 * (joints[:, 16] + joints[:, 17])
    if landmarks is not None:
        for coco, lm in _COCO_TO_LANDMARK.items():
            out[:, coco] = landmarks[:, lm]
    return out


def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Weak perspective: (N, K, 3) model points, (N, 3) camera (s, tx, ty) -> (N, K, 2) pixels."""
    s, tx, ty = camera[:, 0:1], camera[:, 1:2], camera[:, 2:3]
    return torch.stack([s * points[..., 0] + tx, -s * points[..., 1] + ty], dim=-1)


def _initial_camera(kp: np.ndarray, rest_coco: np.ndarray, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (s, tx, ty) from the 2D torso, and a facing-away flag (left shoulder left of the right)."""
    conf = kp[..., 2] >= cfg.conf_threshold
    xy = kp[..., :2]
    n = len(kp)
    scale = np.full(n, np.nan)
    # Torso sides first (rarely foreshortened), then the shoulder / hip widths.
    pairs = [(2, 8), (5, 11), (2, 5), (8, 11), (1, 8), (1, 11)]
    for f in range(n):
        ratios = []
        for a, b in pairs:
            if conf[f, a] and conf[f, b]:
                model = np.linalg.norm(rest_coco[a, :2] - rest_coco[b, :2])
                ratios.append(np.linalg.norm(xy[f, a] - xy[f, b]) / model)
            if len(ratios) >= 2 and (a, b) == (5, 11):
                break  # both torso sides seen: widths would only add foreshortening noise
        if ratios:
            scale[f] = max(ratios)
    if np.isnan(scale).all():
        scale[:] = 1.0
    scale = np.where(np.isnan(scale), np.nanmedian(scale), scale)
    scale = np.maximum(scale, 1e-3)

    camera = np.zeros((n, 3))
    camera[:, 0] = scale
    facing_away = np.zeros(n, dtype=bool)
    for f in range(n):
        anchors = [k for k in (8, 11, 2, 5) if conf[f, k]]
        centre_2d = xy[f, anchors].mean(axis=0)
        centre_3d = rest_coco[anchors].mean(axis=0)
        camera[f, 1] = centre_2d[0] - scale[f] * centre_3d[0]
        camera[f, 2] = centre_2d[1] + scale[f] * centre_3d[1]
        for left, right in ((5, 2), (11, 8)):
            if conf[f, left] and conf[f, right]:
                facing_away[f] = xy[f, left, 0] < xy[f, right, 0]
                break
    return camera, facing_away


def _smooth(x: torch.Tensor) -> torch.Tensor:
    return ((x[1:] - x[:-1]) ** 2).sum(dim=-1).mean() if len(x) > 1 else x.new_zeros(())


def fit_smpl(
    body: SmplBody,
    keypoints: np.ndarray,
    world_landmarks: np.ndarray | None = None,
    cfg: FitConfig | None = None,
    progress: bool = False,
) -> FitResult:
    """Fit SMPL to ``keypoints`` (N, K>=18, 3) of frames that show a body (see ``body_present``)."""
    cfg = cfg or FitConfig()
    device = body.faces.device
    joint_model = JointModel(body)
    n = len(keypoints)
    kp_np = keypoints[:, :NUM_COCO].astype(np.float64)

    # Per-point weights: confidence above the threshold; face points only when the model has landmarks.
    weight_np = np.where(kp_np[..., 2] >= cfg.conf_threshold, kp_np[..., 2], 0.0)
    if body.landmarks is None:
        weight_np[:, list(_COCO_TO_LANDMARK)] = 0.0

    zeros_pose = torch.zeros(1, 69, device=device)
    with torch.no_grad():
        rest_j, rest_lm = joint_model(
            torch.zeros(1, 10, device=device), zeros_pose, torch.zeros(1, 3, device=device)
        )
        rest_coco = coco_from_smpl(rest_j, rest_lm)[0].cpu().numpy()
    camera0, away = _initial_camera(kp_np, rest_coco, cfg)

    target = torch.as_tensor(kp_np[..., :2], dtype=torch.float32, device=device)
    weight = torch.as_tensor(weight_np, dtype=torch.float32, device=device)
    norm = torch.as_tensor(camera0[:, 0], dtype=torch.float32, device=device)  # pixels per metre, fixed

    betas = torch.zeros(1, 10, device=device, requires_grad=True)
    body_pose = torch.zeros(n, 69, device=device, requires_grad=True)
    orient0 = np.zeros((n, 3))
    orient0[away, 1] = math.pi  # turned around the vertical axis
    global_orient = torch.tensor(orient0, dtype=torch.float32, device=device, requires_grad=True)
    log_s = torch.tensor(np.log(camera0[:, 0]), dtype=torch.float32, device=device, requires_grad=True)
    trans = torch.tensor(camera0[:, 1:], dtype=torch.float32, device=device, requires_grad=True)

    world = None
    if world_landmarks is not None:
        world, world_w = _world_targets(world_landmarks, weight_np, device)

    limit_idx = torch.tensor(_LIMIT_IDX, device=device)
    limit_sign = torch.tensor(_LIMIT_SIGN, device=device)
    torso_mask = torch.zeros(NUM_COCO, device=device)
    torso_mask[list(_TORSO)] = 1.0

    def loss_fn(torso_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        joints, lm = joint_model(betas, body_pose, global_orient)
        camera = torch.cat([log_s.exp()[:, None], trans], dim=1)
        pred = project(coco_from_smpl(joints, lm), camera)
        w = weight * torso_mask if torso_only else weight
        sq = (((pred - target) / norm[:, None, None]) ** 2).sum(dim=-1)  # metres^2
        data = (w * sq).sum(dim=1).mean()
        total = data + cfg.w_smooth_cam * (_smooth(log_s[:, None]) + _smooth(trans / norm[:, None]))
        if not torso_only:
            limits = torch.relu(body_pose[:, limit_idx] * limit_sign) ** 2
            total = (
                total + cfg.w_pose * (body_pose**2).sum(dim=1).mean() + cfg.w_limit * limits.sum(dim=1).mean()
            )
            total = total + cfg.w_shape * (betas**2).sum()
            total = total + cfg.w_smooth_pose * (_smooth(body_pose) + _smooth(global_orient))
            if world is not None:
                centred = joints - 0.5 * (joints[:, 1:2] + joints[:, 2:3])
                idx = list(_MP_TO_SMPL.values())
                err = ((centred[:, idx] - world) ** 2).sum(dim=-1)
                total = total + cfg.w_world * (world_w * err).sum(dim=1).mean()
        err_px = ((pred - target) ** 2).sum(dim=-1).sqrt()
        return total, err_px

    phases = [(cfg.iters_camera, True, [global_orient, log_s, trans]), (cfg.iters_full, False, None)]
    all_params = [betas, body_pose, global_orient, log_s, trans]
    with _progress(progress, cfg.iters_camera + cfg.iters_full) as advance:
        for iters, torso_only, params in phases:
            if iters <= 0:
                continue
            # L-BFGS: the objective is smooth and small, and it converges in far fewer evaluations than Adam
            # (each evaluation is overhead-bound on CPU). One .step() runs up to ``iters`` evaluations.
            opt = torch.optim.LBFGS(
                params or all_params, lr=1.0, max_iter=iters, max_eval=int(iters * 1.25), history_size=20,
                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe",
            )  # fmt: skip

            def closure(torso_only: bool = torso_only, opt: torch.optim.Optimizer = opt) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                total, _ = loss_fn(torso_only)
                total.backward()
                advance()
                return total

            opt.step(closure)

    with torch.no_grad():
        _, err_px = loss_fn(False)
        wsum = weight.sum(dim=1).clamp(min=1e-8)
        error = (weight * err_px).sum(dim=1) / wsum
        camera = torch.cat([log_s.exp()[:, None], trans], dim=1)
    return FitResult(
        betas=betas.detach()[0].cpu().numpy().astype(np.float32),
        body_pose=body_pose.detach().cpu().numpy().astype(np.float32),
        global_orient=global_orient.detach().cpu().numpy().astype(np.float32),
        camera=camera.cpu().numpy().astype(np.float32),
        error_px=error.cpu().numpy().astype(np.float32),
    )


def _world_targets(
    world_landmarks: np.ndarray, weight_np: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hip-centred mediapipe world landmarks in SMPL axes (x, y up, z to viewer) and their weights."""
    wl = np.asarray(world_landmarks, dtype=np.float64)
    mp_idx = list(_MP_TO_SMPL)
    centred = wl[:, mp_idx] - 0.5 * (wl[:, 23:24] + wl[:, 24:25])
    centred = centred * np.array([1.0, -1.0, -1.0])  # mediapipe: y down, smaller z = nearer the camera
    w = weight_np[:, [_MP_TO_COCO[i] for i in mp_idx]]
    usable = np.isfinite(centred).all(axis=(1, 2)) & (np.abs(wl).sum(axis=(1, 2)) > 0)
    w = np.where(usable[:, None], w, 0.0)
    centred = np.nan_to_num(centred)
    return (
        torch.as_tensor(centred, dtype=torch.float32, device=device),
        torch.as_tensor(w, dtype=torch.float32, device=device),
    )


class _progress:
    """A rich progress bar over fit iterations, or nothing (``progress=False``)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):  # noqa: ANN204 - returns the advance callable
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task("fitting SMPL", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

"""Smooth random dance motions in the coco18 layout, and the camera that keeps the dancer in frame.

A motion is a kinematic tree driven by joint angles, each a sum of low-frequency sinusoids locked to a
per-motion tempo (so limbs move together like a dance, mirrored or alternating), plus short fast bursts
(a swung arm, a kick, a jump, a twist) so that frame-difference motion masks have something to find.
Forward kinematics runs in body units (about 1.0 tall, y down, feet on a floor at y = 0); a camera then
fits the whole clip into the frame with a margin, with a slow zoom and offset, so every keypoint and every
drawn pixel stays inside the frame for any frame size or aspect.

``dance_keypoints(seed, num_frames, size, fps)`` is also the built-in dance that drives ``animlcm render``
when the user gives no pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from animlcm.synth import layout as L
from animlcm.synth.identity import Proportions

DEFAULT_FPS = 16.0
MARGIN_PX = 2.0  # the drawn body keeps this far from the frame's border

# Facial features on the head sphere: (azimuth, elevation) in radians; azimuth > 0 is the dancer's left.
FACE_POINTS = {
    "nose": (0.0, -0.12),
    "eye": (0.4, 0.14),
    "ear": (1.75, 0.02),
    "mouth": (0.0, -0.5),
    "brow": (0.4, 0.36),
}
EAR_VISIBLE = -0.55  # an ear counts as visible while cos(azimuth + yaw) is above this


@dataclass(frozen=True)
class BodyPose:
    """One frame of a dancer: coco18 keypoints in pixels plus what the keypoints do not pin down."""

    keypoints: np.ndarray  # (18, 3) x, y pixels, visibility 1/0
    head_center: np.ndarray  # (2,) pixels
    head_radius: float  # pixels
    head_roll: float  # radians, in-plane tilt of the head (0 = upright)
    head_yaw: float  # radians, > 0 turns the face towards +x (image right)
    head_pitch: float  # radians, > 0 looks up
    body_yaw: float  # radians, > 0 turns the dancer's left side away from the camera
    unit: float  # pixels per body unit at this frame


@dataclass(frozen=True)
class DanceMotion:
    """A whole clip of poses; ``frame(i)`` gives the ``BodyPose`` the renderer needs."""

    keypoints: np.ndarray  # (F, 18, 3) float32
    head: np.ndarray  # (F, 6): cx, cy, radius, roll, yaw, pitch
    body_yaw: np.ndarray  # (F,)
    unit: np.ndarray  # (F,)

    def __len__(self) -> int:
        return len(self.keypoints)

    def frame(self, i: int) -> BodyPose:
        h = self.head[i]
        return BodyPose(
            keypoints=self.keypoints[i],
            head_center=h[:2].copy(),
            head_radius=float(h[2]),
            head_roll=float(h[3]),
            head_yaw=float(h[4]),
            head_pitch=float(h[5]),
            body_yaw=float(self.body_yaw[i]),
            unit=float(self.unit[i]),
        )


def _dir(a: np.ndarray) -> np.ndarray:
    """Unit vector at angle ``a`` from straight down, positive towards +x (image right): (..., 2)."""
    return np.stack([np.sin(a), np.cos(a)], axis=-1)


def _soft_clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Keep a joint in its range without the kinks a hard clip would put into the motion."""
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return mid + half * np.tanh((x - mid) / half)


class _Composer:
    """Builds the joint-angle signals of one motion from its generator (fixed draw order)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.tempo = rng.uniform(0.35, 0.75)  # Hz: the beat every limb locks onto

    def wave(self, amp: float, t: np.ndarray) -> np.ndarray:
        """A sum of sinusoids at 1/2, 1 and 2 beats, the faster ones weaker (smooth limbs)."""
        rng = self.rng
        out = np.zeros_like(t)
        for mult, weight in ((0.5, 1.0), (1.0, 0.7), (2.0, 0.25)):
            f = self.tempo * mult * rng.uniform(0.97, 1.03)
            out += (
                amp * weight * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            )
        return out / 1.5


# Degrees of freedom a burst can hit, with its amplitude range (radians or body units).
_BURST_DOFS = {
    "arm_l": 1.6,
    "arm_r": 1.6,
    "arms": 1.4,
    "elbow_l": 1.4,
    "elbow_r": 1.4,
    "kick_l": 0.7,
    "kick_r": 0.7,
    "jump": 0.12,
    "lean": 0.35,
    "yaw": 0.8,
    "step": 0.2,
}


def _bursts(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """Short fast moves: rise in ~0.1-0.25 s, hold, return slower; the first starts within 0.6 s."""
    out = {k: np.zeros_like(t) for k in _BURST_DOFS}
    start = rng.uniform(0.1, 0.6)
    names = list(_BURST_DOFS)
    for _ in range(64):  # far more than any clip needs; draws do not depend on the clip length
        dof = names[int(rng.integers(len(names)))]
        amp = _BURST_DOFS[dof] * rng.uniform(0.6, 1.0)
        if dof not in ("jump",):
            amp *= rng.choice([-1.0, 1.0])
        rise, hold, fall = rng.uniform(0.12, 0.25), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.6)
        x = t - start
        up = np.clip(x / rise, 0, 1)
        down = np.clip((x - rise - hold) / fall, 0, 1)
        env = _smoothstep(up) * (1 - _smoothstep(down))
        out[dof] += amp * env
        start += rise + hold + fall + rng.uniform(0.3, 1.8)
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def _fk(p: Proportions, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward kinematics in body units, root (mid-hip) at the origin: keypoints (F,18,2), head centre, tips.

    ``tips`` (F, 4, 2) are the hand and toe ends, used only to keep the drawing inside the frame.
    """
    n = len(a["lean"])
    k = np.zeros((n, L.NUM_KEYPOINTS, 2))
    lean, yaw = a["lean"], a["yaw"]
    down = _dir(lean)  # torso axis, neck -> hip
    perp = np.stack([np.cos(lean), -np.sin(lean)], -1)  # towards the dancer's left (+x facing camera)
    turn = np.maximum(np.cos(yaw), 0.35)[:, None]  # a turned body looks narrower
    root = np.zeros((n, 2))
    neck = root - p.torso_len * down
    k[:, L.NECK] = neck
    k[:, L.L_SHOULDER] = neck + perp * p.shoulder_w * turn
    k[:, L.R_SHOULDER] = neck - perp * p.shoulder_w * turn
    k[:, L.L_HIP] = root + perp * p.hip_w * turn
    k[:, L.R_HIP] = root - perp * p.hip_w * turn
    tips = np.zeros((n, 4, 2))
    for side, sign, (sh, el, wr) in (
        ("l", 1, (L.L_SHOULDER, L.L_ELBOW, L.L_WRIST)),
        ("r", -1, (L.R_SHOULDER, L.R_ELBOW, L.R_WRIST)),
    ):
        upper = lean + sign * a[f"arm_{side}"]
        fore = upper + sign * a[f"elbow_{side}"]
        short = a[f"reach_{side}"][:, None]  # an arm reaching towards the camera looks shorter
        k[:, el] = k[:, sh] + p.upper_arm * short * _dir(upper)
        k[:, wr] = k[:, el] + p.forearm * short * _dir(fore)
        tips[:, 0 if side == "l" else 1] = k[:, wr] + p.hand * _dir(fore)
    for side, sign, (hip, knee, ankle) in (
        ("l", 1, (L.L_HIP, L.L_KNEE, L.L_ANKLE)),
        ("r", -1, (L.R_HIP, L.R_KNEE, L.R_ANKLE)),
    ):
        thigh = sign * a[f"hip_{side}"]
        k[:, knee] = k[:, hip] + p.thigh * _dir(thigh)
        k[:, ankle] = k[:, knee] + p.shin * _dir(thigh - sign * a[f"knee_{side}"])
        tips[:, 2 if side == "l" else 3] = k[:, ankle] + p.foot * np.array([0.85 * sign, 0.5])
    # head: a sphere above the neck, tilted by lean + roll, features projected with yaw and pitch
    tilt = lean + a["roll"]
    center = neck - (p.neck_len + p.head_r) * _dir(tilt)
    face = face_points(center, p.head_r, tilt, a["head_yaw"], a["pitch"])
    for name, idx in (
        ("nose", L.NOSE),
        ("eye_r", L.R_EYE),
        ("eye_l", L.L_EYE),
        ("ear_r", L.R_EAR),
        ("ear_l", L.L_EAR),
    ):
        k[:, idx] = face[name][0]
    return k, center, tips


def face_points(
    center: np.ndarray,
    radius: float | np.ndarray,
    tilt: np.ndarray | float,
    yaw: np.ndarray | float,
    pitch: np.ndarray | float,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image positions (..., 2) and facing (cos of the angle to the camera, ...) of the facial features.

    Features sit on a sphere; ``*_l``/``*_r`` are the dancer's left/right. Shared by the pose and the
    renderer, so drawn eyes sit exactly on the eye keypoints.
    """
    tilt, yaw, pitch = np.asarray(tilt, float), np.asarray(yaw, float), np.asarray(pitch, float)
    radius = np.asarray(radius, float)[..., None]
    right = np.stack([np.cos(tilt), -np.sin(tilt)], -1)  # head's +x axis in the image
    up = -_dir(tilt)
    out = {}
    for name, (az, el) in FACE_POINTS.items():
        for side, s in (("l", 1.0), ("r", -1.0)) if az else (("", 1.0),):
            ang = s * az + yaw
            elev = el + pitch
            x = np.sin(ang) * np.cos(elev)
            y = np.sin(elev)
            pos = center + radius * (x[..., None] * right + y[..., None] * up)
            out[f"{name}_{side}" if side else name] = (pos, np.cos(ang) * np.cos(elev))
    return out


def _angles(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    c = _Composer(rng)
    w = c.wave
    a: dict[str, np.ndarray] = {}
    # arms: a shared wave mirrored (both up) or alternating (one up, one down), plus each arm's own
    mirror = rng.choice([-1.0, 1.0])
    base_arm = rng.uniform(0.3, 1.2)
    shared = w(1.0, t)
    a["arm_l"] = base_arm + shared + w(0.6, t)
    a["arm_r"] = base_arm + mirror * shared + w(0.6, t)
    a["elbow_l"] = rng.uniform(0.2, 1.2) + w(0.8, t)
    a["elbow_r"] = rng.uniform(0.2, 1.2) + w(0.8, t)
    a["reach_l"] = 0.85 + w(0.15, t)
    a["reach_r"] = 0.85 + w(0.15, t)
    legs = w(0.2, t)
    a["hip_l"] = rng.uniform(0.02, 0.2) + legs + w(0.12, t)
    a["hip_r"] = rng.uniform(0.02, 0.2) - mirror * legs + w(0.12, t)
    a["knee_l"] = rng.uniform(0.0, 0.4) + w(0.35, t)
    a["knee_r"] = rng.uniform(0.0, 0.4) + w(0.35, t)
    a["lean"] = w(0.12, t)
    a["yaw"] = rng.uniform(-0.3, 0.3) + w(0.4, t)
    a["roll"] = w(0.15, t)
    a["head_yaw"] = w(0.3, t)
    a["pitch"] = w(0.12, t)
    a["sway"] = w(0.12, t)
    a["zoom"] = w(0.04, t)
    b = _bursts(rng, t)
    for side in "lr":
        a[f"arm_{side}"] = _soft_clip(a[f"arm_{side}"] + b[f"arm_{side}"] + b["arms"], -0.25, 2.9)
        a[f"elbow_{side}"] = _soft_clip(a[f"elbow_{side}"] + b[f"elbow_{side}"], -0.3, 2.3)
        a[f"reach_{side}"] = _soft_clip(a[f"reach_{side}"], 0.6, 1.0)
        a[f"hip_{side}"] = _soft_clip(a[f"hip_{side}"] + np.abs(b[f"kick_{side}"]), -0.2, 0.9)
        a[f"knee_{side}"] = _soft_clip(a[f"knee_{side}"], -0.05, 0.9)
    a["lean"] = _soft_clip(a["lean"] + b["lean"], -0.4, 0.4)
    a["yaw"] = _soft_clip(a["yaw"] + b["yaw"], -1.0, 1.0)
    a["head_yaw"] = _soft_clip(0.6 * a["yaw"] + a["head_yaw"], -0.9, 0.9)
    a["roll"] = _soft_clip(a["roll"], -0.35, 0.35)
    a["jump"] = b["jump"]
    a["sway"] = a["sway"] + b["step"]
    return a


def _pad(p: Proportions) -> np.ndarray:
    """How far the drawing reaches beyond each keypoint (body units): limb radii, hair, hands, shoes."""
    pad = np.full(L.NUM_KEYPOINTS, 0.07)
    pad[[L.NOSE, L.R_EYE, L.L_EYE, L.R_EAR, L.L_EAR]] = 0.8 * p.head_r
    return pad


def _fit(
    world: list[np.ndarray],
    pads: list[np.ndarray],
    zoom: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A camera for the whole clip: pixel = offset + scale_t * (world - centre), every padded point inside.

    The worst frame of the clip at the largest zoom fits inside the margin, so no frame can leave it.
    """
    h, w = size
    lo = np.min([np.min(q - r[None, :, None], axis=(0, 1)) for q, r in zip(world, pads, strict=True)], axis=0)
    hi = np.max([np.max(q + r[None, :, None], axis=(0, 1)) for q, r in zip(world, pads, strict=True)], axis=0)
    ext = np.maximum(hi - lo, 1e-6)
    avail = np.array([w - 1 - 2 * MARGIN_PX, h - 1 - 2 * MARGIN_PX])
    zmax = float(zoom.max())
    scale = float(np.min(avail / ext)) * rng.uniform(0.8, 0.97) / zmax
    slack = np.maximum(avail - scale * zmax * ext, 0)
    offset = np.array([(w - 1) / 2, (h - 1) / 2]) + (rng.uniform(-0.5, 0.5, 2) * slack)
    return offset, (lo + hi) / 2, scale


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def dance(
    seed: int | np.random.SeedSequence,
    num_frames: int,
    size: int | tuple[int, int],
    fps: float = DEFAULT_FPS,
    proportions: Proportions | None = None,
) -> DanceMotion:
    """A dance of ``num_frames`` frames in a frame of ``size`` (int, or (height, width)) pixels.

    Deterministic in (seed, num_frames, size, fps, proportions); time runs in seconds, so a motion plays at
    the same speed at any fps.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    p = proportions or Proportions()
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / float(fps)
    a = _angles(rng, t)
    rel, head_rel, tips_rel = _fk(p, a)
    # stand on the floor (y = 0): the lower ankle touches it unless jumping
    lowest = np.max(rel[:, [L.L_ANKLE, L.R_ANKLE], 1], axis=1)
    root = np.stack([a["sway"], -lowest - a["jump"]], -1)[:, None, :]
    kp = rel + root
    head = head_rel + root[:, 0]
    tips = tips_rel + root
    zoom = 1.0 + a["zoom"]
    offset, centre, scale = _fit(
        [kp, head[:, None], tips],
        [_pad(p), np.array([1.45 * p.head_r]), np.array([0.04])],
        zoom,
        _as_hw(size),
        rng,
    )
    s = (scale * zoom)[:, None, None]
    pix = offset + s * (kp - centre)
    head_pix = offset + s[:, 0] * (head - centre)
    keypoints = np.ones((num_frames, L.NUM_KEYPOINTS, 3), np.float32)
    keypoints[..., :2] = pix
    # an ear turned away from the camera is hidden behind the head
    for idx, sign in ((L.L_EAR, 1.0), (L.R_EAR, -1.0)):
        facing = np.cos(sign * FACE_POINTS["ear"][0] + a["head_yaw"]) * np.cos(
            FACE_POINTS["ear"][1] + a["pitch"]
        )
        keypoints[:, idx, 2] = (facing > EAR_VISIBLE).astype(np.float32)
    unit = scale * zoom
    head_arr = np.stack(
        [head_pix[:, 0], head_pix[:, 1], p.head_r * unit, a["lean"] + a["roll"], a["head_yaw"], a["pitch"]],
        -1,
    )
    return DanceMotion(keypoints=keypoints, head=head_arr, body_yaw=a["yaw"].copy(), unit=unit)


def dance_keypoints(
    seed: int | np.random.SeedSequence,
    num_frames: int,
    size: int | tuple[int, int],
    fps: float = DEFAULT_FPS,
    proportions: Proportions | None = None,
) -> np.ndarray:
    """The dance's coco18 keypoints, float32 (F, 18, 3): x, y in pixels of a ``size`` frame, visibility."""
    return dance(seed, num_frames, size, fps, proportions).keypoints


def normalised_dance_keypoints(
    seed: int | np.random.SeedSequence, num_frames: int, fps: float = DEFAULT_FPS, aspect: float = 1.0
) -> np.ndarray:
    """The dance in [0, 1] frame coordinates (x / width, y / height); ``aspect`` = width / height."""
    h = 1000
    w = max(int(round(h * aspect)), 1)
    kp = dance_keypoints(seed, num_frames, (h, w), fps).copy()
    kp[..., 0] /= w - 1
    kp[..., 1] /= h - 1
    return kp


def neutral_pose(
    size: int | tuple[int, int], proportions: Proportions | None = None, fill: float = 0.85
) -> BodyPose:
    """A frontal, relaxed A-pose centred in the frame: the pose of an identity's reference image."""
    p = proportions or Proportions()
    one = np.zeros(1)
    a = {"lean": one, "yaw": one, "roll": one, "head_yaw": one, "pitch": one + 0.03}
    for side in "lr":
        a |= {
            f"arm_{side}": one + 0.35,
            f"elbow_{side}": one + 0.15,
            f"reach_{side}": one + 1.0,
            f"hip_{side}": one + 0.07,
            f"knee_{side}": one,
        }
    rel, head, tips = _fk(p, a)
    lowest = np.max(rel[:, [L.L_ANKLE, L.R_ANKLE], 1], axis=1)
    root = np.stack([one, -lowest], -1)[:, None, :]
    kp, head, tips = rel + root, head + root[:, 0], tips + root
    h, w = _as_hw(size)
    pts = np.concatenate(
        [
            kp[0] - _pad(p)[:, None],
            kp[0] + _pad(p)[:, None],
            head - 1.45 * p.head_r,
            head + 1.45 * p.head_r,
            tips[0],
        ]
    )
    lo, hi = pts.min(0), pts.max(0)
    avail = np.array([w - 1 - 2 * MARGIN_PX, h - 1 - 2 * MARGIN_PX])
    scale = float(np.min(avail / (hi - lo))) * fill
    offset = np.array([(w - 1) / 2, (h - 1) / 2])
    centre = (lo + hi) / 2
    keypoints = np.ones((L.NUM_KEYPOINTS, 3), np.float32)
    keypoints[:, :2] = offset + scale * (kp[0] - centre)
    head_pix = offset + scale * (head[0] - centre)
    return BodyPose(
        keypoints=keypoints,
        head_center=head_pix,
        head_radius=p.head_r * scale,
        head_roll=0.0,
        head_yaw=0.0,
        head_pitch=0.03,
        body_yaw=0.0,
        unit=scale,
    )

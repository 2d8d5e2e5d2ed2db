"""Rendering a dancer: body parts as signed-distance shapes, composited with analytic anti-aliasing.

Every part (tapered limb capsules, the torso quad, the head ellipse, hair, face features) is a signed
distance field evaluated only inside the part's bounding box; coverage ``clip(0.5 - sd, 0, 1)`` gives
exact-enough anti-aliased edges without supersampling. Textures are evaluated in part-local coordinates
(u along the part, v across, in body units), so stripes and dots move and stretch with the limb, and a
soft cylinder shading makes limbs read as round. Parts are drawn back to front: hair behind the head, the far
arm behind the torso when the dancer is turned, legs, torso, head, then the arms in front.

The canvas also keeps a per-pixel body-part label map (``layout.PART_NAMES``): a pixel takes the label of
the last part painted over it with coverage >= 0.5, so labels follow the same occlusion order as colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from animlcm.synth import layout as L
from animlcm.synth.identity import RGB, Identity, Texture
from animlcm.synth.motion import BodyPose, face_points, neutral_pose

_BEHIND_YAW = 0.25  # a turned dancer's far arm goes behind the torso beyond this yaw


class Canvas:
    """A float32 RGB image plus a coverage mask and a body-part label map of everything painted on it.

    ``part`` is the label the next shapes paint with; the body-part functions set it before drawing.
    """

    def __init__(self, background: np.ndarray):
        self.img = np.array(background, dtype=np.float32, copy=True)
        self.h, self.w = self.img.shape[:2]
        self.cover = np.zeros((self.h, self.w), np.float32)
        self.labels = np.zeros((self.h, self.w), np.uint8)
        self.part = L.BACKGROUND

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """The pixel box [lo, hi] clipped to the frame, with pixel-centre coordinates (rows, cols)."""
        x0, y0 = max(int(np.floor(lo[0])) - 1, 0), max(int(np.floor(lo[1])) - 1, 0)
        x1, y1 = min(int(np.ceil(hi[0])) + 2, self.w), min(int(np.ceil(hi[1])) + 2, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        # keypoint convention: pixel (row i, col j) has its centre at (x=j, y=i)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        return slice(y0, y1), slice(x0, x1), xs, ys

    def paint(self, rows: slice, cols: slice, sd: np.ndarray, colour: np.ndarray) -> None:
        alpha = np.clip(0.5 - sd, 0.0, 1.0)[..., None]
        if not alpha.any():
            return
        region = self.img[rows, cols]
        region *= 1 - alpha
        region += alpha * colour
        np.maximum(self.cover[rows, cols], alpha[..., 0], out=self.cover[rows, cols])
        # the same threshold as "covered" (cover >= 0.5), so label > 0 exactly where the dancer is opaque
        self.labels[rows, cols][alpha[..., 0] >= 0.5] = self.part


def _tex(tex: Texture, u: np.ndarray, v: np.ndarray, px_per_unit: float) -> np.ndarray:
    """Texture colour (..., 3) at part-local body-unit coordinates (u, v)."""
    c1, c2 = np.asarray(tex.c1, np.float32), np.asarray(tex.c2, np.float32)
    if tex.kind == "solid":
        return np.broadcast_to(c1, (*np.broadcast(u, v).shape, 3))
    ca, sa = np.cos(tex.angle), np.sin(tex.angle)
    s = u * ca + v * sa
    q = -u * sa + v * ca
    p = tex.period
    # edges about one pixel wide: sharp but anti-aliased at any scale
    sharp = max(p * px_per_unit / np.pi, 1.0)
    if tex.kind == "stripes":
        m = 0.5 + 0.5 * np.clip(sharp * np.sin(2 * np.pi * s / p), -1, 1)
    elif tex.kind == "dots":
        ds, dq = s / p - np.round(s / p), q / p - np.round(q / p)
        d = np.sqrt(ds * ds + dq * dq) * p
        m = np.clip((0.3 * p - d) * px_per_unit + 0.5, 0, 1)
    elif tex.kind == "gradient":
        m = 0.5 + 0.5 * np.sin(s / p)
    elif tex.kind == "checker":
        m = 0.5 + 0.5 * np.clip(sharp * np.sin(np.pi * s / p) * np.sin(np.pi * q / p), -1, 1)
    else:
        raise ValueError(f"unknown texture kind {tex.kind!r}")
    m = m[..., None].astype(np.float32)
    return c1 * (1 - m) + c2 * m


def _solid(colour: RGB) -> Texture:
    return Texture(kind="solid", c1=colour, c2=colour)


def _shade(n: np.ndarray) -> np.ndarray:
    """Cylinder shading across a part: n = -1..1 from one edge to the other; light from the upper left."""
    n = np.clip(n, -1, 1)
    return (0.74 + 0.26 * np.sqrt(1 - n * n) - 0.06 * n)[..., None].astype(np.float32)


def capsule(
    cv: Canvas, a: np.ndarray, b: np.ndarray, ra: float, rb: float, tex: Texture, unit: float
) -> None:
    """A tapered limb from ``a`` (radius ``ra``) to ``b`` (radius ``rb``), pixels."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    r = max(ra, rb)
    win = cv.window(np.minimum(a, b) - r, np.maximum(a, b) + r)
    if win is None:
        return
    rows, cols, xs, ys = win
    d = b - a
    length2 = max(float(d @ d), 1e-6)
    px, py = xs - a[0], ys - a[1]
    along = (px * d[0] + py * d[1]) / length2
    t = np.clip(along, 0, 1)
    across = (px * d[1] - py * d[0]) / np.sqrt(length2)  # signed distance from the axis
    dx, dy = px - t * d[0], py - t * d[1]
    rad = ra + (rb - ra) * t
    sd = np.sqrt(dx * dx + dy * dy) - rad
    colour = _tex(tex, along * np.sqrt(length2) / unit, across / unit, unit) * _shade(across / rad)
    cv.paint(rows, cols, sd, colour)


def ellipse(
    cv: Canvas,
    c: np.ndarray,
    rx: float,
    ry: float,
    tilt: float,
    tex: Texture,
    unit: float,
    shade: bool = True,
    clip: tuple[float, float] | None = None,
    hairline: tuple[float, float, float] | None = None,
) -> None:
    """An ellipse centred at ``c`` rotated by ``tilt`` (radians, like the head).

    ``clip=(ny, offset)`` keeps only the part with local y (down) > offset (a neckline); ``hairline=(y0, k,
    x0)`` keeps the part above y = y0 + k (x - x0)^2 (a hair cap), all in local pixel units.
    """
    c = np.asarray(c, np.float32)
    r = max(rx, ry)
    win = cv.window(c - r, c + r)
    if win is None or rx <= 0 or ry <= 0:
        return
    rows, cols, xs, ys = win
    ct, st = np.cos(tilt), np.sin(tilt)
    px, py = xs - c[0], ys - c[1]
    lx = px * ct - py * st  # head-local x (right) and y (down)
    ly = px * st + py * ct
    k = np.sqrt((lx / rx) ** 2 + (ly / ry) ** 2)
    sd = (k - 1) * min(rx, ry)
    if clip is not None:
        sd = np.maximum(sd, clip[1] - ly)
    if hairline is not None:
        y0, kk, x0 = hairline
        sd = np.maximum(sd, ly - (y0 + kk * (lx - x0) ** 2))
    colour = _tex(tex, ly / unit, lx / unit, unit)
    if shade:
        colour = colour * _shade(lx / rx)
    cv.paint(rows, cols, sd, colour)


def quad(
    cv: Canvas,
    pts: np.ndarray,
    origin: np.ndarray,
    axis: np.ndarray,
    half_width: float,
    textures: list[tuple[float, Texture]],
    unit: float,
) -> None:
    """A convex quadrilateral (4, 2); texture by distance ``u`` along ``axis`` from ``origin``.

    ``textures`` is [(u_start, texture), ...] in body units: e.g. shirt from 0, trousers from the waist.
    """
    pts = np.asarray(pts, np.float32)
    win = cv.window(pts.min(0), pts.max(0))
    if win is None:
        return
    rows, cols, xs, ys = win
    # signed distance of a convex polygon: the largest signed distance to its edge lines
    area = sum(pts[i, 0] * pts[(i + 1) % 4, 1] - pts[(i + 1) % 4, 0] * pts[i, 1] for i in range(4))
    orient = 1.0 if area > 0 else -1.0
    sd = None
    for i in range(4):
        p0, p1 = pts[i], pts[(i + 1) % 4]
        e = p1 - p0
        n = orient * np.array([e[1], -e[0]]) / max(float(np.hypot(*e)), 1e-6)  # outward normal
        dist = (xs - p0[0]) * n[0] + (ys - p0[1]) * n[1]
        sd = dist if sd is None else np.maximum(sd, dist)
    px, py = xs - origin[0], ys - origin[1]
    u = (px * axis[0] + py * axis[1]) / unit
    v = (-px * axis[1] + py * axis[0]) / unit
    colour = _tex(textures[0][1], u, v, unit)
    for start, tex in textures[1:]:
        colour = np.where((u >= start)[..., None], _tex(tex, u, v, unit), colour)
    colour = colour * _shade(v * unit / half_width)
    cv.paint(rows, cols, sd, colour)


# --------------------------------------------------------------------------------------------- body parts


def _arm(cv: Canvas, ident: Identity, kp: np.ndarray, side: str, unit: float) -> None:
    b = ident.body
    sh, el, wr = (L.L_SHOULDER, L.L_ELBOW, L.L_WRIST) if side == "l" else (L.R_SHOULDER, L.R_ELBOW, L.R_WRIST)
    sleeve = ident.sleeve_left if side == "l" else ident.sleeve_right
    skin = _solid(ident.skin)
    r_up, r_el, r_wr = b.arm_r * 1.15 * unit, b.arm_r * 0.95 * unit, b.arm_r * 0.7 * unit
    upper = skin if ident.sleeves == "none" else sleeve
    fore = ident.cuff if ident.sleeves == "long" else skin
    cv.part = L.LEFT_ARM if side == "l" else L.RIGHT_ARM
    capsule(cv, kp[el, :2], kp[wr, :2], r_el, r_wr, fore, unit)
    capsule(cv, kp[sh, :2], kp[el, :2], r_up, r_el, upper, unit)
    if ident.sleeves == "short":  # bare forearm below a short sleeve: a short skin stub over the elbow
        capsule(
            cv,
            kp[el, :2] + 0.35 * (kp[sh, :2] - kp[el, :2]),
            kp[el, :2],
            r_el * 0.98,
            r_el * 0.98,
            skin,
            unit,
        )
        capsule(cv, kp[el, :2], kp[wr, :2], r_el, r_wr, skin, unit)
    _hand(cv, ident, kp[el, :2], kp[wr, :2], unit)


def _hand(cv: Canvas, ident: Identity, elbow: np.ndarray, wrist: np.ndarray, unit: float) -> None:
    d = wrist - elbow
    d = d / max(float(np.hypot(*d)), 1e-6)
    hand = ident.body.hand * unit
    colour = _solid(ident.gloves if ident.gloves is not None else ident.skin)
    cv.part = L.HANDS
    palm = wrist + d * hand * 0.45
    ang = np.arctan2(d[0], d[1])
    # four fingers fanned around the forearm direction, then the palm over their roots
    for k, spread in enumerate((-0.45, -0.15, 0.15, 0.45)):
        a = ang + spread
        tip = palm + np.array([np.sin(a), np.cos(a)]) * hand * (0.75 if k in (0, 3) else 0.85)
        capsule(cv, palm, tip, hand * 0.13, hand * 0.11, colour, unit)
    capsule(cv, wrist, palm, hand * 0.28, hand * 0.36, colour, unit)


def _leg(cv: Canvas, ident: Identity, kp: np.ndarray, side: str, unit: float) -> None:
    b = ident.body
    hip, knee, ankle = (L.L_HIP, L.L_KNEE, L.L_ANKLE) if side == "l" else (L.R_HIP, L.R_KNEE, L.R_ANKLE)
    skin = _solid(ident.skin)
    r_hip, r_knee, r_ank = b.leg_r * 1.15 * unit, b.leg_r * 0.85 * unit, b.leg_r * 0.6 * unit
    thigh = ident.pants if ident.lower == "pants" else skin
    shin = ident.shins if (ident.lower == "pants" or ident.boots) else skin
    sign = 1.0 if side == "l" else -1.0
    toe = kp[ankle, :2] + np.array([0.85 * sign, 0.5]) * b.foot * unit
    cv.part = L.LEFT_LEG if side == "l" else L.RIGHT_LEG
    capsule(cv, kp[knee, :2], kp[ankle, :2], r_knee, r_ank, shin, unit)
    capsule(cv, kp[hip, :2], kp[knee, :2], r_hip, r_knee, thigh, unit)
    if ident.lower == "shorts":  # shorts cover the top of the thigh
        capsule(
            cv,
            kp[hip, :2],
            kp[hip, :2] + 0.45 * (kp[knee, :2] - kp[hip, :2]),
            r_hip * 1.08,
            r_knee * 1.15,
            ident.pants,
            unit,
        )
    cv.part = L.FEET
    capsule(cv, kp[ankle, :2], toe, r_ank * 1.1, r_ank * 0.95, _solid(ident.shoes), unit)


def _torso(cv: Canvas, ident: Identity, kp: np.ndarray, unit: float) -> tuple[np.ndarray, np.ndarray]:
    b = ident.body
    neck = kp[L.NECK, :2]
    mid_hip = (kp[L.L_HIP, :2] + kp[L.R_HIP, :2]) / 2
    axis = mid_hip - neck
    axis = axis / max(float(np.hypot(*axis)), 1e-6)
    perp = np.array([axis[1], -axis[0]])  # towards the dancer's left when facing the camera
    ls, rs, lh, rh = kp[L.L_SHOULDER, :2], kp[L.R_SHOULDER, :2], kp[L.L_HIP, :2], kp[L.R_HIP, :2]
    sw, hw = b.arm_r * unit * 0.9, b.leg_r * unit * 0.95
    up = -axis * b.arm_r * unit * 0.4
    pts = np.array([rs - perp * sw + up, ls + perp * sw + up, lh + perp * hw, rh - perp * hw])
    torso_len = float(np.hypot(*(mid_hip - neck))) / unit
    waist = b.waist * torso_len
    lower = ident.pants
    layers = [(0.0, ident.shirt), (waist, lower)]
    if ident.belt is not None:
        layers = [(0.0, ident.shirt), (waist, _solid(ident.belt)), (waist + 0.025, lower)]
    half = float(np.hypot(*(ls - rs))) / 2 + sw
    cv.part = L.TORSO
    quad(cv, pts, neck, axis, half, layers, unit)
    return axis, perp


def _skirt(
    cv: Canvas, ident: Identity, kp: np.ndarray, axis: np.ndarray, perp: np.ndarray, unit: float
) -> None:
    b = ident.body
    neck = kp[L.NECK, :2]
    mid_hip = (kp[L.L_HIP, :2] + kp[L.R_HIP, :2]) / 2
    waist = neck + (mid_hip - neck) * b.waist
    knees = (kp[L.L_KNEE, :2] + kp[L.R_KNEE, :2]) / 2
    hem_c = mid_hip + 0.75 * (knees - mid_hip)
    spread = (
        max(float(np.hypot(*(kp[L.L_KNEE, :2] - kp[L.R_KNEE, :2]))) / 2, b.hip_w * unit)
        + b.leg_r * unit * 1.2
    )
    wide = float(np.hypot(*(kp[L.L_HIP, :2] - kp[L.R_HIP, :2]))) / 2 + b.leg_r * unit
    pts = np.array([waist - perp * wide, waist + perp * wide, hem_c + perp * spread, hem_c - perp * spread])
    cv.part = L.TORSO
    quad(cv, pts, waist, axis, spread, [(0.0, ident.pants)], unit)


def _head(cv: Canvas, ident: Identity, pose: BodyPose, unit: float, axis: np.ndarray) -> None:
    c, r, tilt = pose.head_center, pose.head_radius, pose.head_roll
    yaw, pitch = pose.head_yaw, pose.head_pitch
    kp = pose.keypoints
    skin, hair = _solid(ident.skin), _solid(ident.hair)
    up = np.array([-np.sin(tilt), -np.cos(tilt)])
    side = np.array([np.cos(tilt), -np.sin(tilt)])
    shift = r * np.sin(yaw) * 0.35  # the skull's outline shifts a little against the face when turned
    cv.part = L.HEAD
    if ident.hair_style == "bun":
        ellipse(cv, c + up * r * 1.0 - side * shift, r * 0.38, r * 0.38, tilt, hair, unit)
    # neck: from the shoulders' centre up into the head
    capsule(cv, kp[L.NECK, :2] + axis * r * 0.1, c, r * 0.36, r * 0.4, skin, unit)
    for idx in (L.L_EAR, L.R_EAR):
        if kp[idx, 2] > 0:
            ellipse(cv, kp[idx, :2], r * 0.2, r * 0.3, tilt, skin, unit)
    ellipse(cv, c, r * 0.9, r * 1.02, tilt, skin, unit)
    # hair cap: the top of a slightly larger ellipse, above a parabolic hairline that follows the yaw
    if ident.hair_style != "bald":
        y0 = {"bob": -0.08, "long": -0.25}.get(ident.hair_style, -0.36) * r
        ellipse(
            cv,
            c - up * r * 0.05 - side * shift,
            r * 0.98,
            r * 1.1,
            tilt,
            hair,
            unit,
            hairline=(y0, 0.4 / r, r * np.sin(yaw) * 0.8),
        )
    feats = face_points(c, r, tilt, yaw, pitch)
    for s in ("l", "r"):
        pos, facing = feats[f"eye_{s}"]
        if facing > 0.15:
            w = max(facing, 0.3)
            ellipse(cv, pos, r * 0.21 * w, r * 0.17, tilt, _solid((0.97, 0.97, 0.97)), unit, shade=False)
            ellipse(
                cv,
                pos + side * r * 0.04 * np.sin(yaw),
                r * 0.12 * w,
                r * 0.13,
                tilt,
                _solid(ident.eyes),
                unit,
                shade=False,
            )
            ellipse(
                cv,
                pos + side * r * 0.04 * np.sin(yaw),
                r * 0.06 * w,
                r * 0.065,
                tilt,
                _solid((0.02, 0.02, 0.02)),
                unit,
                shade=False,
            )
        bpos, bfacing = feats[f"brow_{s}"]
        if bfacing > 0.15:
            w = max(bfacing, 0.3)
            capsule(
                cv,
                bpos - side * r * 0.17 * w,
                bpos + side * r * 0.17 * w,
                r * 0.05,
                r * 0.05,
                _solid(tuple(0.7 * x for x in ident.hair)),
                unit,
            )
    npos, nfacing = feats["nose"]
    if nfacing > 0:
        ellipse(
            cv, npos, r * 0.09, r * 0.07, tilt, _solid(tuple(0.8 * x for x in ident.skin)), unit, shade=False
        )
    mpos, mfacing = feats["mouth"]
    if mfacing > 0:
        ellipse(cv, mpos, r * 0.3 * max(mfacing, 0.3), r * 0.09, tilt, _solid(ident.lips), unit, shade=False)


def draw_body(cv: Canvas, ident: Identity, pose: BodyPose) -> None:
    """Paint one dancer onto a canvas, back to front."""
    kp = np.asarray(pose.keypoints, np.float32)
    unit = pose.unit
    far, near = ("l", "r") if pose.body_yaw > 0 else ("r", "l")
    behind = abs(pose.body_yaw) > _BEHIND_YAW
    if ident.hair_style == "long":  # long hair hangs behind everything
        r, tilt = pose.head_radius, pose.head_roll
        up = np.array([-np.sin(tilt), -np.cos(tilt)])
        cv.part = L.HEAD
        ellipse(cv, pose.head_center - up * r * 0.6, r * 1.15, r * 1.5, tilt, _solid(ident.hair), unit)
    if behind:
        _arm(cv, ident, kp, far, unit)
    _leg(cv, ident, kp, far, unit)
    _leg(cv, ident, kp, near, unit)
    axis, perp = _torso(cv, ident, kp, unit)
    if ident.lower == "skirt":
        _skirt(cv, ident, kp, axis, perp, unit)
    _head(cv, ident, pose, unit, axis)
    if not behind:
        _arm(cv, ident, kp, far, unit)
    _arm(cv, ident, kp, near, unit)


@dataclass(frozen=True)
class DrawnFrame:
    """One drawn frame: uint8 RGB (H, W, 3), the dancer's coverage float32 (H, W) in [0, 1], and the
    body-part labels uint8 (H, W) (``layout.PART_NAMES``; 0 where coverage < 0.5)."""

    frame: np.ndarray
    cover: np.ndarray
    labels: np.ndarray


def draw_layers(ident: Identity, pose: BodyPose, background: np.ndarray) -> DrawnFrame:
    """``ident`` in ``pose`` over a float [0, 1] ``background``: the frame with its coverage and labels."""
    cv = Canvas(background)
    draw_body(cv, ident, pose)
    frame = (np.clip(cv.img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return DrawnFrame(frame=frame, cover=cv.cover, labels=cv.labels)


def draw_frame(
    ident: Identity,
    pose: BodyPose,
    background: np.ndarray,
    *,
    return_mask: bool = False,
    return_labels: bool = False,
):
    """One uint8 RGB frame (H, W, 3) of ``ident`` in ``pose`` over a float [0, 1] ``background``.

    With ``return_mask`` also the dancer's coverage (H, W) float32 in [0, 1]; with ``return_labels`` also
    the body-part labels uint8 (H, W); both: ``(frame, mask, labels)``.
    """
    drawn = draw_layers(ident, pose, background)
    extra = [a for a, want in ((drawn.cover, return_mask), (drawn.labels, return_labels)) if want]
    return (drawn.frame, *extra) if extra else drawn.frame


def reference_image(
    ident: Identity, size: int | tuple[int, int], background: np.ndarray | None = None
) -> np.ndarray:
    """The identity in a frontal relaxed pose, centred: a reference image for ``animlcm render``.

    The default background is a soft light-grey gradient (a studio wall).
    """
    pose = neutral_pose(size, ident.body)
    if background is None:
        h, w = (size, size) if isinstance(size, int) else size
        g = np.linspace(0.92, 0.78, h, dtype=np.float32)[:, None, None]
        background = np.broadcast_to(g * np.ones((1, w, 3), np.float32), (h, w, 3))
    return draw_frame(ident, pose, background)

"""Static per-clip backgrounds: a wall gradient with shapes, a patterned floor, and a little noise.

The camera does not move, so one background image serves a whole clip and only the dancer changes between
frames (which is what the motion masks should find). Float32 RGB in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

_SHIFT = 4  # OpenCV sub-pixel bits: coordinates are multiplied by 16


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)), np.float32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * (1 << _SHIFT))), int(round(y * (1 << _SHIFT)))


def make_background(
    rng: np.random.Generator, size: tuple[int, int], floor_y: float | None = None
) -> np.ndarray:
    """One background of ``size`` = (height, width); all draws come from ``rng`` in a fixed order.

    ``floor_y`` (pixels): where the dancer's feet touch the floor; the horizon is then put above it, so
    the dancer stands on the floor instead of floating in front of the wall.
    """
    h, w = size
    ys = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None, None]
    xs = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :, None]
    # wall: muted colours so that the (saturated) clothes stand out, as in most dance footage
    top, bottom = _colour(rng, (0.05, 0.5), (0.3, 0.95)), _colour(rng, (0.05, 0.5), (0.3, 0.95))
    tilt = rng.uniform(-0.4, 0.4)
    g = np.clip(ys + tilt * (xs - 0.5), 0, 1)
    img = (top * (1 - g) + bottom * g).astype(np.float32)
    img = np.broadcast_to(img, (h, w, 3)).copy()

    horizon = rng.uniform(0.55, 0.85) * h
    if floor_y is not None:
        horizon = float(np.clip(floor_y - (horizon / h - 0.45) * 0.5 * h, 0.35 * h, 0.92 * h))
    # wall decorations: discs, boxes, triangles, a window frame
    for _ in range(int(rng.integers(3, 9))):
        c = _colour(rng, (0.1, 0.7), (0.2, 1.0))
        alpha = rng.uniform(0.3, 0.9)
        layer = img.copy()
        kind = int(rng.integers(4))
        cx, cy = rng.uniform(0, w), rng.uniform(0, horizon)
        r = rng.uniform(0.04, 0.2) * min(h, w)
        col = tuple(float(v) for v in c)
        if kind == 0:
            cv2.circle(layer, _pt(cx, cy), int(r * (1 << _SHIFT)), col, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            rect = np.array(
                [
                    _pt(cx - r, cy - r * 0.7),
                    _pt(cx + r, cy - r * 0.7),
                    _pt(cx + r, cy + r * 0.7),
                    _pt(cx - r, cy + r * 0.7),
                ],
                np.int32,
            )
            cv2.fillPoly(layer, [rect], col, cv2.LINE_AA, _SHIFT)
        elif kind == 2:
            ang = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
            tri = np.array([_pt(cx + r * np.cos(a), cy + r * np.sin(a)) for a in ang], np.int32)
            cv2.fillPoly(layer, [tri], col, cv2.LINE_AA, _SHIFT)
        else:
            th = max(1, int(round(0.012 * min(h, w) * (1 << _SHIFT))))
            rect = np.array(
                [_pt(cx - r, cy - r), _pt(cx + r, cy - r), _pt(cx + r, cy + r), _pt(cx - r, cy + r)]
            )
            cv2.polylines(
                layer, [rect.astype(np.int32)], True, col, max(1, th >> _SHIFT) + 1, cv2.LINE_AA, _SHIFT
            )
            cv2.line(layer, _pt(cx, cy - r), _pt(cx, cy + r), col, max(1, th >> _SHIFT), cv2.LINE_AA, _SHIFT)
        img = img * (1 - alpha) + layer * alpha

    # floor below the horizon: plain, planks converging to a vanishing point, or a checkerboard
    floor_a, floor_b = _colour(rng, (0.05, 0.6), (0.2, 0.8)), _colour(rng, (0.05, 0.6), (0.2, 0.8))
    kind = int(rng.integers(3))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    depth = np.maximum(yy - horizon, 0) / max(h - horizon, 1)  # 0 at the horizon, 1 at the bottom
    persp = (xx - w / 2) / np.maximum(depth, 0.05)
    # patterns fade out towards the horizon, where their period would drop below a few pixels (moire)
    fade = np.clip(0.15 * w * depth / 6 - 0.5, 0, 1) * rng.uniform(0.4, 0.8)
    if kind == 0:
        mix = np.broadcast_to(depth, (h, w))
    elif kind == 1:
        mix = 0.5 + 0.5 * fade * np.clip(3 * np.sin(2 * np.pi * persp / (0.15 * w)), -1, 1)
    else:
        wave = np.sin(2 * np.pi * persp / (0.2 * w)) * np.sin(2 * np.pi / (depth + 0.25) * 0.6)
        mix = 0.5 + 0.5 * fade * np.clip(4 * wave, -1, 1)
    floor = floor_a * (1 - mix[..., None]) + floor_b * mix[..., None]
    floor_alpha = np.clip(yy - horizon + 0.5, 0, 1)[..., None]
    img = img * (1 - floor_alpha) + floor * floor_alpha

    # lighting and grain: smooth blotches plus a fixed fine noise
    coarse = rng.normal(0, 1, (4, 4, 1)).astype(np.float32)
    blotch = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, 1)
    img = img * (1 + 0.06 * blotch) + rng.normal(0, 0.012, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)

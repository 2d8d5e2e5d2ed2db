"""DanceLCM eq. 6: the motion mask, from frame differences, reduced to latent resolution.

M = {(i, j) : |v_t - v_{t+1}| > delta  OR  |v_t - v_{t-1}| > delta} on frames in [0, 1]. A pixel moves
when any of its channels does; the first and last frames use their one neighbour (a single frame has no
motion); a latent cell is in M when any pixel it covers is (DESIGN section 4).
"""

from __future__ import annotations

import numpy as np


def pixel_motion_mask(frames: np.ndarray, delta: float) -> np.ndarray:
    """float frames (F, H, W, C) in [0, 1] -> bool (F, H, W)."""
    frames = np.asarray(frames, dtype=np.float32)
    n = len(frames)
    mask = np.zeros(frames.shape[:3], dtype=bool)
    if n < 2:
        return mask
    # moved[t] = some channel of frame t+1 differs from frame t by more than delta
    moved = (np.abs(frames[1:] - frames[:-1]) > delta).any(axis=-1)
    mask[:-1] |= moved  # |v_t - v_{t+1}| > delta
    mask[1:] |= moved  # |v_t - v_{t-1}| > delta
    return mask


def reduce_to_latent(mask: np.ndarray, latent_hw: tuple[int, int]) -> np.ndarray:
    """bool (F, H, W) -> bool (F, h, w): a cell is set when any pixel in its (H/h) x (W/w) block is."""
    n, height, width = mask.shape
    h, w = latent_hw
    if height % h or width % w:
        raise ValueError(f"frame size {height}x{width} is not a multiple of the latent size {h}x{w}")
    return mask.reshape(n, h, height // h, w, width // w).any(axis=(2, 4))


def motion_mask(frames: np.ndarray, delta: float, latent_hw: tuple[int, int]) -> np.ndarray:
    """DanceLCM eq. 6 at latent resolution: float frames (F, H, W, C) in [0, 1] -> bool (F, h, w)."""
    return reduce_to_latent(pixel_motion_mask(frames, delta), latent_hw)


def motion_mask_uint8(frames: np.ndarray, delta: float, latent_hw: tuple[int, int]) -> np.ndarray:
    """The same for uint8 frames (F, H, W, 3) without float copies.

    |a - b| / 255 > delta  iff  |a - b| > 255 delta, exactly (the float form rounds at the boundary).
    """
    import cv2

    frames = np.asarray(frames, dtype=np.uint8)
    n = len(frames)
    mask = np.zeros(frames.shape[:3], dtype=bool)
    threshold = 255.0 * delta
    for t in range(n - 1):
        moved = (cv2.absdiff(frames[t], frames[t + 1]) > threshold).any(axis=-1)
        mask[t] |= moved
        mask[t + 1] |= moved
    return reduce_to_latent(mask, latent_hw)

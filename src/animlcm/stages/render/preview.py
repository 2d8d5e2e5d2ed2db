"""The preview grid written next to every render: reference | skeletons over generated frames.

Layout (one glance answers "did it follow the pose, did it keep the person"):

    reference | pose f0  | pose f1  | ... | pose fN
              | frame f0 | frame f1 | ... | frame fN
"""

from __future__ import annotations

import numpy as np

LABEL_H = 14  # pixels of caption strip above each cell
GAP = 2


def pick_frames(num_frames: int, count: int = 4) -> list[int]:
    """``count`` frame indices spread evenly from the first to the last frame."""
    if num_frames <= count:
        return list(range(num_frames))
    return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]


def _caption(cell: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = cell.shape[:2]
    strip = Image.new("RGB", (w, LABEL_H), (32, 32, 32))
    ImageDraw.Draw(strip).text((3, 1), text, fill=(235, 235, 235))
    return np.concatenate([np.asarray(strip), cell], axis=0)


def side_by_side(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Clips next to each other, each under its caption: [(caption, uint8 (F, H, W, 3))] -> uint8
    (F, LABEL_H + H, sum of W, 3), as long as the shortest clip."""
    n = min(len(frames) for _, frames in panels)
    columns = []
    for text, frames in panels:
        strip = _caption(np.zeros((0, frames.shape[2], 3), np.uint8), text)  # the same for every frame
        columns.append(np.concatenate([np.broadcast_to(strip, (n, *strip.shape)), frames[:n]], axis=1))
    return np.concatenate(columns, axis=2)


def preview_grid(
    reference: np.ndarray, skeletons: np.ndarray, frames: np.ndarray, count: int = 4
) -> np.ndarray:
    """uint8 (H, W, 3) reference, (F, H, W, 3) skeletons and generated frames -> one uint8 image."""
    idx = pick_frames(len(frames), count)
    h, w = frames.shape[1:3]
    top = [_caption(reference, "reference")] + [_caption(skeletons[i], f"pose {i}") for i in idx]
    bottom = [np.full((h + LABEL_H, w, 3), 255, np.uint8)] + [_caption(frames[i], f"frame {i}") for i in idx]
    ch, cw = h + LABEL_H, w
    rows, cols = 2, len(top)
    grid = np.full((rows * ch + (rows + 1) * GAP, cols * cw + (cols + 1) * GAP, 3), 255, np.uint8)
    for r, row in enumerate((top, bottom)):
        for c, cell in enumerate(row):
            y, x = GAP + r * (ch + GAP), GAP + c * (cw + GAP)
            grid[y : y + ch, x : x + cw] = cell
    return grid

"""Long videos as overlapping context windows, blended per frame (pure functions of tensors).

A sampler sees one denoiser over all F frames: ``windowed_denoiser`` runs the real denoiser on each window and
blends the x0 predictions with per-frame weights that ramp up/down across each overlap and sum to 1 at every
frame, so a window boundary never shows as a seam (AnimateDiff-style "context" sampling).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from animlcm.errors import AnimlcmError


def context_windows(num_frames: int, window: int, overlap: int) -> list[range]:
    """Frame ranges of length ``window`` (or ``num_frames`` if shorter), stride ``window - overlap``.

    The last window is shifted back to end at the last frame, so every frame is covered and every window
    has the full length the motion modules were trained on.
    """
    if num_frames < 1:
        raise AnimlcmError("no frames to render")
    if window < 1 or not 0 <= overlap < window:
        raise AnimlcmError(
            f"context window {window} with overlap {overlap}: need window >= 1, 0 <= overlap < window"
        )
    if num_frames <= window:
        return [range(0, num_frames)]
    stride = window - overlap
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [range(s, s + window) for s in starts]


def window_weights(windows: list[range], num_frames: int, overlap: int) -> torch.Tensor:
    """(n_windows, F) blend weights: a linear ramp over ``overlap`` frames at each window edge, then
    normalised so that the weights of every frame sum to exactly 1."""
    weights = torch.zeros(len(windows), num_frames, dtype=torch.float64)
    ramp = overlap + 1
    for k, win in enumerate(windows):
        n = len(win)
        pos = torch.arange(n, dtype=torch.float64)
        w = torch.minimum((pos + 1) / ramp, (n - pos) / ramp).clamp(max=1.0)
        weights[k, win.start : win.stop] = w
    return weights / weights.sum(0, keepdim=True)


def blend(window_outputs: list[torch.Tensor], windows: list[range], weights: torch.Tensor) -> torch.Tensor:
    """Per-window tensors (B, C, Fw, h, w) -> the blended (B, C, F, h, w)."""
    first = window_outputs[0]
    b, c, _, h, w = first.shape
    num_frames = weights.shape[1]
    out = torch.zeros(b, c, num_frames, h, w, dtype=torch.float32, device=first.device)
    for k, (y, win) in enumerate(zip(window_outputs, windows, strict=True)):
        wk = weights[k, win.start : win.stop].to(device=first.device, dtype=torch.float32)
        out[:, :, win.start : win.stop] += y.float() * wk.view(1, 1, -1, 1, 1)
    return out.to(first.dtype)


def windowed_denoiser(
    denoise_window: Callable[[torch.Tensor, torch.Tensor, range], torch.Tensor],
    num_frames: int,
    window: int,
    overlap: int,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap ``denoise_window(x_t_window, t, frames) -> x0_window`` into ``denoise(x_t, t) -> x0`` over all
    frames. With one window (the usual short clip) it is a plain pass-through."""
    windows = context_windows(num_frames, window, overlap)
    weights = window_weights(windows, num_frames, overlap)
    if len(windows) == 1:
        return lambda x_t, t: denoise_window(x_t, t, windows[0])

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outs = [denoise_window(x_t[:, :, win.start : win.stop], t, win) for win in windows]
        return blend(outs, windows, weights)

    return denoise

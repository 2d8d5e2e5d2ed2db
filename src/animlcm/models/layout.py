"""The one conversion between clip layout ``(B, C, F, h, w)`` and frames-as-batch ``(B*F, C, h, w)``.

``(B, C, F, h, w)`` is what diffusers' ``UNetMotionModel`` takes; frames-as-batch is what every 2D module
(VAE, pose guider, reference net, spatial-only UNet) takes. Frame ``f`` of clip ``b`` is row ``b*F + f``,
the order ``UNetMotionModel`` uses internally, so the two layouts can be mixed freely.
"""

from __future__ import annotations

import torch


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, h, w)`` -> ``(B*F, C, h, w)``."""
    if x.ndim != 5:
        raise ValueError(f"frames_to_batch wants (B, C, F, h, w), got shape {tuple(x.shape)}")
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*F, C, h, w)`` -> ``(B, C, F, h, w)``."""
    if x.ndim != 4 or x.shape[0] % num_frames:
        raise ValueError(f"batch_to_frames wants (B*{num_frames}, C, h, w), got shape {tuple(x.shape)}")
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)

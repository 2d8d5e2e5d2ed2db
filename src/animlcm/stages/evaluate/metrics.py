"""Frame metrics against the real frames: L1, PSNR, SSIM (torchmetrics), all on [0, 1] pixels.

PSNR and SSIM are computed per frame and averaged over frames (the convention of the animation papers'
tables), L1 is the mean absolute error over all pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from animlcm.errors import AnimlcmError


def to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (F, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def frame_metrics(pred: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """uint8 (F, H, W, 3) generated vs real frames -> {"l1", "psnr", "ssim"}."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if pred.shape != real.shape:
        raise AnimlcmError(
            f"metrics: generated frames {pred.shape} and real frames {real.shape} differ in shape"
        )
    p, r = to_unit(pred), to_unit(real)
    l1 = (p - r).abs().mean().item()
    psnr = peak_signal_noise_ratio(p, r, data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean").item()
    ssim = structural_similarity_index_measure(p, r, data_range=1.0).item()
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def mean_rows(per_video: list[dict[str, float]]) -> dict[str, float]:
    """Average each metric over videos (keys missing from some videos are averaged where present)."""
    keys = sorted({k for d in per_video for k in d})
    return {k: float(np.mean([d[k] for d in per_video if k in d])) for k in keys}

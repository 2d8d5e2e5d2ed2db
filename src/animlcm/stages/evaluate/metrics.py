"""Frame metrics against the real frames: L1, PSNR, SSIM (torchmetrics), all on [0, 1] pixels.

PSNR and SSIM are computed per frame and averaged over frames (the convention of the animation papers'
tables), L1 is the mean absolute error over all pixels.

Appearance, where the ground truth has body-part label maps (synthetic clips): the per-part colour error
(how far each part's mean colour is from the truth's, inside the truth's part mask) and PSNR over the
person's and over the background's pixels, each a pure function of the arrays.
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


MIN_PART_PIXELS = 16  # a part smaller than this in a frame (hidden, or a sliver) has no reliable mean colour


def _check_labels(pred: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
    if pred.shape != real.shape or labels.shape != real.shape[:3]:
        raise AnimlcmError(
            f"metrics: generated frames {pred.shape}, real frames {real.shape} and part labels "
            f"{labels.shape} do not match (labels must be (F, H, W) of the frames)"
        )


def part_colour_errors(
    pred: np.ndarray, real: np.ndarray, labels: np.ndarray, min_pixels: int = MIN_PART_PIXELS
) -> dict[int, float]:
    """Per body part p > 0 of ``labels`` (F, H, W): the Euclidean RGB distance (0-255 units) between the
    mean colour of ``pred`` and of ``real`` (uint8 (F, H, W, 3)) inside the mask ``labels == p``, averaged
    over the frames where that mask has at least ``min_pixels`` pixels; parts with no such frame are absent.
    """
    _check_labels(pred, real, labels)
    p64, r64 = pred.astype(np.float64), real.astype(np.float64)
    errors: dict[int, float] = {}
    for part in np.unique(labels):
        if part == 0:
            continue
        mask = labels == part
        count = mask.sum(axis=(1, 2))
        seen = count >= min_pixels
        if not seen.any():
            continue
        m, n = mask[seen][..., None], count[seen][:, None]
        diff = (p64[seen] * m).sum(axis=(1, 2)) / n - (r64[seen] * m).sum(axis=(1, 2)) / n
        errors[int(part)] = float(np.linalg.norm(diff, axis=-1).mean())
    return errors


def masked_psnr(pred: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR (dB, [0, 1] pixels) over the pixels where ``mask`` (F, H, W) is true, per frame and averaged over
    the frames that have any such pixel (the per-frame convention of ``frame_metrics``); None when none has.
    Identical pixels give inf, as ``frame_metrics`` does."""
    _check_labels(pred, real, mask)
    count = mask.sum(axis=(1, 2))
    seen = count > 0
    if not seen.any():
        return None
    sq = ((pred.astype(np.float64) - real.astype(np.float64)) / 255.0) ** 2
    mse = (sq[seen] * mask[seen][..., None]).sum(axis=(1, 2, 3)) / (3 * count[seen])
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(1.0 / mse)))


def appearance_metrics(
    pred: np.ndarray, real: np.ndarray, labels: np.ndarray, names: tuple[str, ...] | list[str] = ()
) -> dict:
    """One clip against its truth and the truth's part labels: ``part_colour_errors`` {part name: error},
    ``part_colour_error`` (their mean; None when no part was seen), ``psnr_person`` (labels > 0) and
    ``psnr_background`` (labels == 0), the PSNRs None where the clip has no such pixel."""
    per_part = part_colour_errors(pred, real, labels)
    named = {(names[p] if p < len(names) else f"part{p}"): e for p, e in per_part.items()}
    return {
        "part_colour_errors": named,
        "part_colour_error": float(np.mean(list(named.values()))) if named else None,
        "psnr_person": masked_psnr(pred, real, labels > 0),
        "psnr_background": masked_psnr(pred, real, labels == 0),
    }


def mean_appearance(per_clip: list[dict]) -> dict:
    """``appearance_metrics`` of several clips -> one row's values: each PSNR and each part's colour error
    averaged over the clips that have it, and ``part_colour_error`` the mean over the parts of that average.
    No clips (no labels): every value None."""
    out: dict = {
        "part_colour_error": None,
        "psnr_person": None,
        "psnr_background": None,
        "part_colour_errors": None,
    }
    if not per_clip:
        return out
    for key in ("psnr_person", "psnr_background"):
        values = [c[key] for c in per_clip if c[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    parts = {name: [] for c in per_clip for name in c["part_colour_errors"]}
    for c in per_clip:
        for name, err in c["part_colour_errors"].items():
            parts[name].append(err)
    out["part_colour_errors"] = {name: float(np.mean(v)) for name, v in parts.items()}
    if parts:
        out["part_colour_error"] = float(np.mean(list(out["part_colour_errors"].values())))
    return out


def mean_rows(per_video: list[dict[str, float]]) -> dict[str, float]:
    """Average each metric over videos (keys missing from some videos are averaged where present)."""
    keys = sorted({k for d in per_video for k in d})
    return {k: float(np.mean([d[k] for d in per_video if k in d])) for k in keys}

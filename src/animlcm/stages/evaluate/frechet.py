"""FID and FVD: Fréchet distances between feature statistics of generated and real frames / clips.

The feature networks cannot be downloaded here, so the user passes them as TorchScript files, the form the
field already ships them in: clean-fid's ``inception-2015-12-05.pt`` (FID, 2048-d pool features) and
StyleGAN-V's ``i3d_torchscript.pt`` (FVD, 400-d logits). ``torch.jit.load`` runs TorchScript, never pickled
Python objects. Each network is called as ``net(x, **kwargs)`` on a float batch: frames (N, 3, S, S) in
[0, 255] for FID, clips (N, 3, T, S, S) in [-1, 1] for FVD (their published input conventions), and must
return (N, D) features. With few clips the covariance is rank-deficient: the distance is still defined
(the trace of the matrix square root is taken over non-negative eigenvalues), but it is biased; report N.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from animlcm.errors import AnimlcmError


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features -> mean (D,) and covariance (D, D), in float64 (unbiased; zero for N = 1)."""
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    sigma = centred.T @ centred / max(len(f) - 1, 1)
    return mu, sigma


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with Tr((S1 S2)^(1/2)) = Tr((√S1 S2 √S1)^(1/2))."""
    root1 = _sqrt_psd(sigma1.double())
    middle = root1 @ sigma2.double() @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1.double() - mu2.double()
    return float(diff @ diff + torch.trace(sigma1.double()) + torch.trace(sigma2.double()) - 2 * trace_sqrt)


def load_feature_net(path: Path, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise AnimlcmError(
            f"{path}: feature network not found; pass a TorchScript file (see `animlcm eval --help`)"
        )
    try:
        net = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # a wrong file fails inside TorchScript with long messages: keep one line
        raise AnimlcmError(
            f"{path}: not a TorchScript network ({type(exc).__name__}); FID wants clean-fid's "
            "inception-2015-12-05.pt, FVD StyleGAN-V's i3d_torchscript.pt"
        ) from None
    return net.eval()


@torch.no_grad()
def fid_features(net, frames: np.ndarray, size: int = 299, batch: int = 32, **kwargs) -> torch.Tensor:
    """uint8 (N, H, W, 3) frames -> (N, D) features of the FID network (inputs resized to size, 0..255)."""
    device = next(iter(net.parameters()), torch.empty(0)).device
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.array(frames[i : i + batch])).permute(0, 3, 1, 2).float().to(device)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(net(x, **kwargs).flatten(1).double().cpu())
    return torch.cat(out)


@torch.no_grad()
def fvd_features(net, clips: list[np.ndarray], size: int = 224, **kwargs) -> torch.Tensor:
    """uint8 clips (T, H, W, 3) -> (N, D) features of the FVD network (resized to size, in [-1, 1])."""
    device = next(iter(net.parameters()), torch.empty(0)).device
    out = []
    for clip in clips:
        x = torch.from_numpy(np.array(clip)).permute(0, 3, 1, 2).float().to(device)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) / 127.5 - 1.0
        out.append(net(x.permute(1, 0, 2, 3)[None], **kwargs).flatten(1).double().cpu())
    return torch.cat(out)


# both published TorchScript networks return their features when asked this way
FEATURE_KWARGS = {"return_features": True}


def fid(net, generated: np.ndarray, real: np.ndarray, size: int = 299) -> float:
    gen, ref = (fid_features(net, x, size, **FEATURE_KWARGS) for x in (generated, real))
    return frechet_distance(*feature_stats(gen), *feature_stats(ref))


def fvd(net, generated: list[np.ndarray], real: list[np.ndarray], size: int = 224) -> float:
    gen, ref = (fvd_features(net, x, size, **FEATURE_KWARGS) for x in (generated, real))
    return frechet_distance(*feature_stats(gen), *feature_stats(ref))

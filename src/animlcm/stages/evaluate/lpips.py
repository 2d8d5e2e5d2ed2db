"""LPIPS (Zhang et al. 2018, AlexNet variant) from a user-supplied safetensors file: no downloads.

The file holds torchvision AlexNet's ``features.{0,3,6,8,10}.{weight,bias}`` and LPIPS' linear heads
``lin{0..4}.model.1.weight`` (the keys of the official ``alex.pth``), e.g. made with::

    alex = torchvision.models.alexnet(weights="DEFAULT").state_dict()
    sd = {k: v for k, v in alex.items() if k.startswith("features")}
    sd |= torch.load("lpips/weights/v0.1/alex.pth")
    safetensors.torch.save_file(sd, "lpips_alex.safetensors")

Channel counts are read from the tensors, so a small stand-in with the same layout works in tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from animlcm.errors import AnimlcmError

# AlexNet's feature convs: (index in torchvision's `features`, stride, padding, max-pool before it)
ALEX_LAYERS = ((0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False))
# LPIPS' ScalingLayer constants (inputs in [-1, 1])
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class AlexLPIPS(torch.nn.Module):
    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.convs = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        self.lins = torch.nn.ParameterList()
        for k, (idx, _, _, _) in enumerate(ALEX_LAYERS):
            for key in (f"features.{idx}.weight", f"features.{idx}.bias", f"lin{k}.model.1.weight"):
                if key not in state:
                    raise KeyError(key)
            self.convs.append(
                torch.nn.Parameter(state[f"features.{idx}.weight"].float(), requires_grad=False)
            )
            self.biases.append(torch.nn.Parameter(state[f"features.{idx}.bias"].float(), requires_grad=False))
            self.lins.append(torch.nn.Parameter(state[f"lin{k}.model.1.weight"].float(), requires_grad=False))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for (_, stride, pad, pool), w, b in zip(ALEX_LAYERS, self.convs, self.biases, strict=True):
            if pool:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(F.conv2d(x, w, b, stride=stride, padding=pad))
            feats.append(x)
        return feats

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) in [0, 1] -> (N,) LPIPS distances."""
        a = ((a * 2 - 1) - SHIFT.to(a)) / SCALE.to(a)
        b = ((b * 2 - 1) - SHIFT.to(b)) / SCALE.to(b)
        total = torch.zeros(a.shape[0], device=a.device)
        for fa, fb, lin in zip(self.features(a), self.features(b), self.lins, strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total += F.conv2d((na - nb) ** 2, lin).mean(dim=(1, 2, 3))
        return total


def load_lpips(path: Path) -> AlexLPIPS:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AnimlcmError(
            f"{path}: LPIPS weights not found; pass a safetensors file (see animlcm/stages/evaluate/lpips.py)"
        )
    try:
        return AlexLPIPS(load_file(str(path))).eval()
    except KeyError as exc:
        raise AnimlcmError(
            f"{path}: not an LPIPS-AlexNet weights file (missing {exc.args[0]}); "
            "see animlcm/stages/evaluate/lpips.py for how to make one"
        ) from None
    except Exception as exc:
        raise AnimlcmError(
            f"{path}: cannot read LPIPS weights ({exc.__class__.__name__}); pass a safetensors file"
        ) from None

"""What the denoiser is conditioned on, computed once per clip: image tokens and reference-net features.

- tokens: the CLIP image embedding of the reference (one token, as Animate Anyone uses it) followed, when
  enabled, by DanceLCM face tokens (the VAE latent of the 256x256 face crop, patchified and projected to
  the cross-attention width);
- reference: the reference net's spatial self-attention inputs, one tensor per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

# CLIPImageProcessor's normalisation for the OpenAI CLIP encoders.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Conditioning:
    """Conditioning shared by every denoiser call on a clip (teacher, target, student; every step).

    ``tokens (B, L, D)``; ``reference``: per-layer ``(B, L_i, C_i)``; ``dropped``: the CFG-unconditional
    branch (zero tokens, no reference K/V; the pose is not part of it and stays).
    """

    tokens: torch.Tensor
    reference: list[torch.Tensor] = field(default_factory=list)
    dropped: bool = False
    reference_rows: torch.Tensor | None = None
    """``(B,)`` bool: the rows that attend to their reference features (None: every row, unless
    ``dropped``). The others are unconditional rows of a batched CFG call (:meth:`with_uncond`)."""

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def uncond(self) -> Conditioning:
        """The unconditional branch for classifier-free guidance: zero image tokens, reference dropped."""
        return Conditioning(tokens=torch.zeros_like(self.tokens), reference=[], dropped=True)

    def with_uncond(self) -> Conditioning:
        """This conditioning and its unconditional branch in one batch of 2B rows (``[cond; uncond]``): one
        network call for both CFG branches. The uncond rows get zero image tokens and their reference keys
        masked out of self-attention, which is what dropping them means."""
        if self.dropped or self.reference_rows is not None:
            raise ValueError("with_uncond: needs a plain conditional Conditioning")
        b = self.batch_size
        rows = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)])
        return Conditioning(
            tokens=torch.cat([self.tokens, torch.zeros_like(self.tokens)]),
            reference=[torch.cat([r, r]) for r in self.reference],
            reference_rows=rows.to(self.tokens.device),
        )

    def repeat(self, n: int) -> Conditioning:
        """Tile the batch ``n`` times (like ``Tensor.repeat``): item ``i`` ends up at rows ``i, i+B, ...``."""
        rows = None if self.reference_rows is None else self.reference_rows.repeat(n)
        return Conditioning(
            tokens=self.tokens.repeat(n, 1, 1),
            reference=[r.repeat(n, 1, 1) for r in self.reference],
            dropped=self.dropped,
            reference_rows=rows,
        )

    def select(self, index: torch.Tensor | slice | list[int]) -> Conditioning:
        """Rows ``index`` of the batch (e.g. one clip of a batch)."""
        rows = None if self.reference_rows is None else self.reference_rows[index]
        return Conditioning(self.tokens[index], [r[index] for r in self.reference], self.dropped, rows)

    def to(self, device=None, dtype=None) -> Conditioning:
        return replace(
            self,
            tokens=self.tokens.to(device=device, dtype=dtype),
            reference=[r.to(device=device, dtype=dtype) for r in self.reference],
        )

    def detach(self) -> Conditioning:
        return replace(self, tokens=self.tokens.detach(), reference=[r.detach() for r in self.reference])


class FaceProjector(nn.Module):
    """DanceLCM face tokens: face latent ``(B, 4, 32, 32)`` -> ``(B, (32/p)^2, D)``.

    A stride-``p`` conv is patchify + linear in one op; the learned position embedding tells the
    cross-attention where on the face each token sits (attention itself is order-blind).
    ``zero_init``: the final LayerNorm's gain starts at zero (LayerScale / adaLN-Zero style), so a fresh
    projector outputs zero tokens; under decoupled face attention (``reference.py``) those add exactly
    nothing, and the network starts as the one without face tokens. Gradients still reach the gain at once.
    """

    def __init__(
        self,
        latent_channels: int,
        width: int,
        patch_size: int = 4,
        latent_size: int = 32,
        zero_init: bool = False,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.latent_size = latent_size
        self.proj = nn.Conv2d(latent_channels, width, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, (latent_size // patch_size) ** 2, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        if zero_init:
            nn.init.zeros_(self.norm.weight)  # the bias starts at zero already

    @property
    def num_tokens(self) -> int:
        return (self.latent_size // self.patch_size) ** 2

    def forward(self, face_latent: torch.Tensor) -> torch.Tensor:
        if face_latent.shape[-2:] != (self.latent_size, self.latent_size):
            raise ValueError(
                f"face latent {tuple(face_latent.shape)}: expected "
                f"(B, 4, {self.latent_size}, {self.latent_size}), "
                "the VAE latent of the 256x256 face crop"
            )
        x = self.proj(face_latent.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)
        return self.norm(x + self.pos_embed)


def clip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] -> CLIP input: resized to ``size x size`` (as Moore's pipeline does),
    normalised."""
    x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x.clamp(0, 1) - mean) / std

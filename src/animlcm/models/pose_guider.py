"""The pose guider: one small conv encoder per guidance map, summed, added right after the UNet's ``conv_in``.

Each encoder has exactly the parameter names and shapes of Moore-AnimateAnyone's ``PoseGuider``
(``conv_in``, ``blocks.0-5``, ``conv_out``; ``../shared/data/teacher_layouts/moore_pose_guider.json``) and,
with ``champ_attention``, Champ's ``GuidanceEncoder`` attention layers (``attentions.0-5``,
``guidance_attention``; ``champ_guidance_encoder_*.json``), so their checkpoints load unchanged as
``pose_guider.encoders.<map>.<their key>``.

The features enter the denoiser through :class:`PoseConditionedConv`, a ``nn.Conv2d`` that replaces
``unet.conv_in`` and adds the features set for the current call: the UNet is not forked and its
state-dict keys (``conv_in.weight``, ``conv_in.bias``) do not change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from animlcm.models.layout import frames_to_batch

POSE_MAPS = ("skeleton", "depth", "normal", "semantic")


@dataclass(frozen=True)
class PoseGuiderConfig:
    """Sizes of the pose guider (Moore/Champ defaults at SD1.5 size)."""

    maps: tuple[str, ...] = ("skeleton",)
    embedding_channels: int = 320  # = the denoiser's conv_in output channels
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    champ_attention: bool = False  # Champ's GuidanceEncoder self-attention layers
    attention_num_heads: int = 8

    def to_dict(self) -> dict:
        return {
            "maps": list(self.maps),
            "embedding_channels": self.embedding_channels,
            "block_out_channels": list(self.block_out_channels),
            "champ_attention": self.champ_attention,
            "attention_num_heads": self.attention_num_heads,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PoseGuiderConfig:
        return cls(
            maps=tuple(d["maps"]),
            embedding_channels=int(d["embedding_channels"]),
            block_out_channels=tuple(d["block_out_channels"]),
            champ_attention=bool(d.get("champ_attention", False)),
            attention_num_heads=int(d.get("attention_num_heads", 8)),
        )


def _champ_attention(channels: int, heads: int, groups: int) -> nn.Module:
    """Champ's ``Transformer3DModel`` without temporal attention is diffusers' ``Transformer2DModel``
    (GroupNorm ``norm``, 1x1 conv ``proj_in``/``proj_out``, one self-attention block): same names, shapes."""
    from diffusers import Transformer2DModel

    return Transformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=channels // heads,
        in_channels=channels,
        norm_num_groups=groups,
    )


class PoseEncoder(nn.Module):
    """One guidance map ``(N, 3, H, W)`` in [0, 1] -> features ``(N, C, H/8, W/8)``; Moore's layout."""

    def __init__(self, cfg: PoseGuiderConfig):
        super().__init__()
        ch = list(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(3, ch[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.champ_attention = cfg.champ_attention
        if cfg.champ_attention:
            heads = cfg.attention_num_heads
            self.attentions = nn.ModuleList()
            for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
                # Champ: GroupNorm(1) after the same-width conv, GroupNorm(32) after the strided one; gcd
                # keeps that at SD1.5 size and still divides the tiny widths.
                self.attentions.append(_champ_attention(c_in, heads, 1))
                self.attentions.append(_champ_attention(c_out, heads, math.gcd(32, c_out)))
            # Present in Champ's checkpoints but unused by its forward; kept so that they import strictly.
            self.guidance_attention = _champ_attention(ch[-1], heads, math.gcd(32, ch[-1]))
        self.conv_out = nn.Conv2d(ch[-1], cfg.embedding_channels, kernel_size=3, padding=1)
        # Zero output: a fresh guider leaves the denoiser unchanged (ControlNet-style start).
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        if self.champ_attention:
            # Champ's forward uses only its last attention layer ("FIXME: Temporarily only use the last").
            x = self.attentions[-1](x).sample
        return self.conv_out(x)


class PoseGuider(nn.Module):
    """Per-map encoders in ``encoders`` (a ``ModuleDict`` keyed by map name), outputs summed."""

    def __init__(self, cfg: PoseGuiderConfig):
        super().__init__()
        unknown = [m for m in cfg.maps if m not in POSE_MAPS]
        if unknown or not cfg.maps:
            raise ValueError(f"pose maps {list(cfg.maps)}: each must be one of {', '.join(POSE_MAPS)}")
        self.config = cfg
        self.encoders = nn.ModuleDict({name: PoseEncoder(cfg) for name in cfg.maps})

    @property
    def maps(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def forward(self, pose: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{map: (B, 3, F, H, W)}`` in [0, 1] -> summed features ``(B*F, C, H/8, W/8)``."""
        if set(pose) != set(self.encoders):
            raise ValueError(
                f"pose maps given {sorted(pose)} but this network's pose guider takes {sorted(self.maps)}"
            )
        param = self.encoders[self.maps[0]].conv_in.weight
        out = None
        for name, enc in self.encoders.items():
            x = pose[name]
            x = frames_to_batch(x) if x.ndim == 5 else x
            y = enc(x.to(param.device, param.dtype))
            out = y if out is None else out + y
        return out


class PoseConditionedConv(nn.Conv2d):
    """``unet.conv_in`` that adds the pose features set for the current call (``None``: plain conv).

    Subclassing ``nn.Conv2d`` keeps the parameter names ``weight``/``bias``, so the UNet's state dict is
    that of a plain diffusers model. The features are set only inside :meth:`adding`, by the network's
    forward, and cleared in ``finally``: nothing survives a call.
    """

    residual: torch.Tensor | None = None

    @classmethod
    def wrap(cls, conv: nn.Conv2d) -> PoseConditionedConv:
        if isinstance(conv, cls):
            return conv
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        new.weight = conv.weight  # the very same Parameter objects: no copy, no re-init
        new.bias = conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.residual is not None:
            if self.residual.shape != out.shape:
                raise ValueError(
                    f"pose features {tuple(self.residual.shape)} do not match the latent features "
                    f"{tuple(out.shape)}: pose maps must be 8x the latent size, one per frame"
                )
            out = out + self.residual.to(out.dtype)
        return out

    @contextmanager
    def adding(self, residual: torch.Tensor | None) -> Iterator[None]:
        self.residual = residual
        try:
            yield
        finally:
            self.residual = None


def moore_key_names(block_out_channels: Sequence[int] = (16, 32, 96, 256)) -> list[str]:
    """The 16 tensor names of Moore's PoseGuider (for tests and the import helper)."""
    n = 2 * (len(block_out_channels) - 1)
    names = ["conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"]
    for i in range(n):
        names += [f"blocks.{i}.weight", f"blocks.{i}.bias"]
    return sorted(names)

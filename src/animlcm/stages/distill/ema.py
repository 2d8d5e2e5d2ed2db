"""The EMA target network theta^- (LCM; CoSeC mu = 0.95) and AnimateLCM's LoRA initialisation strategy."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

# Frozen encoders the target never needs its own copy of (shared conditioning, or identical frozen weights).
SHARED_SUBMODULES = ("reference_unet", "image_encoder")


def make_target(student: nn.Module) -> nn.Module:
    """A frozen copy of the student; frozen encoders are shared with it instead of copied (memory)."""
    shared = {
        n: getattr(student, n) for n in SHARED_SUBMODULES if isinstance(getattr(student, n, None), nn.Module)
    }
    memo = {id(m): m for m in shared.values()}  # deepcopy returns memo hits as they are: shared, not copied
    target = copy.deepcopy(student, memo)
    target.requires_grad_(False)
    target.eval()
    return target


def ema_names(student: nn.Module, extra: Iterable[str] = ()) -> list[str]:
    """Parameters the target follows: the trainable ones, plus ``extra`` (frozen LoRA: the init strategy)."""
    extra = set(extra)
    return [n for n, p in student.named_parameters() if p.requires_grad or n in extra]


@torch.no_grad()
def update_ema(target: nn.Module, student: nn.Module, names: list[str], decay: float) -> None:
    """theta^- <- mu theta^- + (1 - mu) theta, for the named parameters (in fp32 where the target is)."""
    t_params = dict(target.named_parameters())
    s_params = dict(student.named_parameters())
    tgt = [t_params[n] for n in names]
    src = [s_params[n].detach().to(t_params[n].dtype) for n in names]
    if tgt:
        torch._foreach_lerp_(tgt, src, 1.0 - decay)


@torch.no_grad()
def zero_lora_in_target(target: nn.Module) -> list[str]:
    """AnimateLCM init strategy: the target starts without the LoRA (its up-projections zeroed), so it is
    the un-adapted network; the LoRA then accumulates in it through EMA. Returns the zeroed names."""
    zeroed = []
    for name, p in target.named_parameters():
        if "lora_B" in name or "lora_up" in name:
            p.zero_()
            zeroed.append(name)
    return zeroed

"""The EMA target network theta^- (LCM; CoSeC mu = 0.95) and AnimateLCM's LoRA initialisation strategy."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def make_target(student: nn.Module, follows: Iterable[str] | None = None) -> nn.Module:
    """A frozen copy of the student that owns copies only of the parameters the EMA follows (``follows``;
    default: the trainable ones). Every other parameter, and every buffer, is the student's own tensor:
    frozen, it holds the same value in both for the whole run, so a copy would only cost memory (at sd15 the
    spatial UNet's 3.4 GB when only the motion modules train)."""
    follows = set(ema_names(student) if follows is None else follows)
    params = dict(student.named_parameters())
    unknown = follows - params.keys()
    if unknown:
        raise KeyError(f"make_target: no such parameters {sorted(unknown)[:3]}")
    # deepcopy returns memo hits as they are: shared, not copied
    memo = {id(p): p for n, p in params.items() if n not in follows}
    memo |= {id(b): b for b in student.buffers()}
    target = copy.deepcopy(student, memo)
    for name, p in target.named_parameters():
        if name in follows:
            p.requires_grad_(False)
    target.eval()
    return target


def ema_names(student: nn.Module, extra: Iterable[str] = ()) -> list[str]:
    """Parameters the target follows: the trainable ones, plus ``extra`` (frozen LoRA: the init strategy)."""
    extra = set(extra)
    return [n for n, p in student.named_parameters() if p.requires_grad or n in extra]


@torch.no_grad()
def update_ema(target: nn.Module, student: nn.Module, names: list[str], decay: float) -> None:
    """theta^- <- mu theta^- + (1 - mu) theta, for the named parameters (in fp32 where the target is)."""
    from animlcm.stages.distill.fsdp import local

    t_params = dict(target.named_parameters())
    s_params = dict(student.named_parameters())
    # shard by shard where FSDP shards both networks (alike, so the shards line up)
    tgt = [local(t_params[n]) for n in names]
    src = [local(s_params[n].detach()).to(t_params[n].dtype) for n in names]
    if tgt:
        torch._foreach_lerp_(tgt, src, 1.0 - decay)


@torch.no_grad()
def zero_lora_in_target(target: nn.Module, owned: Iterable[str]) -> list[str]:
    """AnimateLCM init strategy: the target starts without the LoRA (its up-projections zeroed), so it is
    the un-adapted network; the LoRA then accumulates in it through EMA. Returns the zeroed names.

    ``owned``: the parameters the target holds copies of (``make_target``'s ``follows``); a LoRA weight it
    shares with the student is refused rather than zeroed in the student too."""
    owned = set(owned)
    zeroed = []
    for name, p in target.named_parameters():
        if "lora_B" in name or "lora_up" in name:
            if name not in owned:
                raise RuntimeError(f"zero_lora_in_target: {name} is the student's own tensor, not a copy")
            p.zero_()
            zeroed.append(name)
    return zeroed

"""Gradient checkpointing of AnimateDiff's motion modules.

diffusers' ``enable_gradient_checkpointing`` on a ``UNetMotionModel`` recomputes the ResNets and spatial
transformers of its blocks in backward, but not the motion modules, which the blocks call directly: at 16
frames of 768x512 they then hold most of a temporal run's activations (the memory plan shows it). The
network gives its motion modules this subclass (same parameters, same names, same forward); it declares
``gradient_checkpointing``, so diffusers' own switch turns it on with the rest.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn


class CheckpointedMotionModule(AnimateDiffTransformer3D):
    """``AnimateDiffTransformer3D`` recomputed in backward when ``gradient_checkpointing`` is on."""

    gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return torch.utils.checkpoint.checkpoint(
                super().forward, hidden_states, *args, use_reentrant=False, **kwargs
            )
        return super().forward(hidden_states, *args, **kwargs)


def checkpointable_motion_modules(unet: nn.Module) -> None:
    """Make every motion module of ``unet`` a :class:`CheckpointedMotionModule` in place (its class only: a
    subclass with no state of its own, so weights, names and outputs stay as they are)."""
    for module in unet.modules():
        if type(module) is AnimateDiffTransformer3D:
            module.__class__ = CheckpointedMotionModule


def enable_checkpointing(net: nn.Module) -> None:
    """Gradient checkpointing for a training run: the denoiser always (motion modules included), the
    reference net when it takes gradients (it trains, or face tokens backprop through it)."""
    net.unet.enable_gradient_checkpointing()
    face = getattr(net, "face_projector", None)
    trains = (p.requires_grad for m in (net.reference_unet, face) if m is not None for p in m.parameters())
    if any(trains):  # face tokens enter the reference net's cross-attention: backprop runs through it
        net.reference_unet.enable_gradient_checkpointing()

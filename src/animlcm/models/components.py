"""The network's own parts as diffusers models: what ``pose_guider/``, ``face_projector/`` and ``aux_head/``
of a model folder hold, each loadable on its own with ``from_pretrained`` (``config.json`` +
``diffusion_pytorch_model.safetensors``).

Each class has exactly the parameter names of the part it saves (:class:`PoseGuider`, :class:`FaceProjector`,
:class:`AuxHead`) and runs the same ``forward`` (the very function, not a copy), so a part loaded here can
stand in for the network's own: the pipeline puts these modules into its network.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from animlcm.models.conditioning import FaceProjector
from animlcm.models.network import AuxHead
from animlcm.models.pose_guider import PoseEncoder, PoseGuider, PoseGuiderConfig

__all__ = ["AuxHeadModel", "FaceProjectorModel", "PoseGuiderModel", "part_model"]


class PoseGuiderModel(ModelMixin, ConfigMixin):
    """:class:`PoseGuider` as a diffusers model: one encoder per guidance map (``encoders``), summed."""

    @register_to_config
    def __init__(
        self,
        maps: tuple[str, ...] = ("skeleton",),
        embedding_channels: int = 320,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        champ_attention: bool = False,
        attention_num_heads: int = 8,
    ):
        super().__init__()
        cfg = self.guider_config
        self.encoders = nn.ModuleDict({name: PoseEncoder(cfg) for name in cfg.maps})

    @property
    def guider_config(self) -> PoseGuiderConfig:
        return PoseGuiderConfig.from_dict(dict(self.config))

    # the network reads these; the same code as the plain guider's
    maps = PoseGuider.maps
    forward = PoseGuider.forward


class FaceProjectorModel(ModelMixin, ConfigMixin):
    """:class:`FaceProjector` (DanceLCM face tokens) as a diffusers model."""

    @register_to_config
    def __init__(
        self, latent_channels: int = 4, width: int = 768, patch_size: int = 4, latent_size: int = 32
    ):
        super().__init__()
        self.patch_size = patch_size
        self.latent_size = latent_size
        self.proj = nn.Conv2d(latent_channels, width, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, (latent_size // patch_size) ** 2, width))
        self.norm = nn.LayerNorm(width)

    num_tokens = FaceProjector.num_tokens
    forward = FaceProjector.forward


class AuxHeadModel(ModelMixin, ConfigMixin):
    """:class:`AuxHead` (DanceLCM's x0 head on the UNet's last decoder features) as a diffusers model."""

    @register_to_config
    def __init__(self, channels: int = 320, groups: int = 32, out_channels: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    forward = AuxHead.forward


def part_model(name: str, module: nn.Module) -> ModelMixin:
    """The diffusers twin of the network's part ``name`` (``pose_guider``, ``face_projector``, ``aux_head``),
    configured like ``module``, with no weights of its own yet (on the meta device: the caller loads them);
    ``module`` itself when it is one already."""
    from accelerate import init_empty_weights

    if isinstance(module, ModelMixin):  # already one (a pipeline's part)
        return module
    with init_empty_weights():
        if name == "pose_guider":
            return PoseGuiderModel(**module.config.to_dict())
        if name == "face_projector":
            return FaceProjectorModel(
                latent_channels=module.proj.in_channels,
                width=module.proj.out_channels,
                patch_size=module.patch_size,
                latent_size=module.latent_size,
            )
        if name == "aux_head":
            return AuxHeadModel(
                channels=module.norm.num_channels,
                groups=module.norm.num_groups,
                out_channels=module.conv.out_channels,
            )
    raise ValueError(f"no diffusers model for the network part {name!r}")

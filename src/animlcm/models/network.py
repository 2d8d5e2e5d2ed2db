"""The pose-guided animation network: one definition for teacher, student and renderer.

Submodule names are a contract (import/export map checkpoints onto them, DESIGN section 3):

- ``unet``: diffusers ``UNetMotionModel`` (SD1.5 spatial blocks + AnimateDiff motion modules); its
  ``conv_in`` is a :class:`PoseConditionedConv` (same parameter names) that adds the pose features;
- ``reference_unet``: diffusers ``UNet2DConditionModel`` run once per clip at t=0; its ``conv_norm_out`` /
  ``conv_out`` are dropped (unused, and absent from Moore's ``reference_unet.pth``);
- ``pose_guider``: :class:`PoseGuider` (``pose_guider.encoders.<map>.<Moore key>``);
- ``image_encoder``: transformers ``CLIPVisionModelWithProjection``;
- ``face_projector`` (optional): DanceLCM face tokens; ``aux_head`` (optional): DanceLCM x0 head.

The state-dict keys of ``unet`` / ``reference_unet`` / ``image_encoder`` are the plain library models'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from animlcm.models.conditioning import Conditioning, FaceProjector, clip_pixels
from animlcm.models.layout import batch_to_frames, frames_to_batch
from animlcm.models.pose_guider import PoseConditionedConv, PoseGuider, PoseGuiderConfig
from animlcm.models.reference import ReferenceContext, install_processors, reference_layers

__all__ = [
    "AnimationNetwork",
    "AuxHead",
    "Conditioning",
    "NetworkConfig",
    "parameter_counts",
    "plain_config",
    "spatial_unet_config",
]


def plain_config(config: Any) -> dict:
    """A diffusers/transformers config as JSON types (private ``_*`` keys dropped, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    items = (
        config.to_dict().items()
        if hasattr(config, "to_dict") and not isinstance(config, dict)
        else config.items()
    )
    return {k: plain(v) for k, v in items if not k.startswith("_")}


@dataclass
class NetworkConfig:
    """Everything needed to rebuild the architecture (weights live next to it in ``model.safetensors``).

    ``unet``: ``UNetMotionModel`` config; ``reference_unet``: ``UNet2DConditionModel`` config;
    ``image_encoder``: ``CLIPVisionConfig`` dict; ``pose_guider``: :class:`PoseGuiderConfig` dict;
    ``schedule``: the teacher's noise schedule (``NoiseSchedule.to_dict()``).
    """

    unet: dict
    reference_unet: dict
    image_encoder: dict
    pose_guider: dict
    face_tokens: bool = False
    face_patch_size: int = 4
    face_attention: str = "concat"
    """How cross-attention reads the face tokens: ``decoupled`` (their own softmax, added to the CLIP token's:
    what new networks use) or ``concat`` (appended to the CLIP token; folders written before the option)."""
    aux_head: bool = False
    schedule: dict = field(default_factory=dict)
    preset: str = "tiny"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # also proves it is JSON-serialisable

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NetworkConfig keys {sorted(unknown)}")
        return cls(**d)

    @property
    def prediction_type(self) -> str:
        return self.schedule.get("prediction_type", "epsilon")

    def validate(self) -> None:
        if self.face_attention not in FACE_ATTENTION:
            raise ValueError(f"face_attention {self.face_attention!r}: use one of {FACE_ATTENTION}")


FACE_ATTENTION = ("decoupled", "concat")


_DOWN_2D = {"CrossAttnDownBlockMotion": "CrossAttnDownBlock2D", "DownBlockMotion": "DownBlock2D"}
_UP_2D = {"CrossAttnUpBlockMotion": "CrossAttnUpBlock2D", "UpBlockMotion": "UpBlock2D"}
_SHARED_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "reverse_transformer_layers_per_block",
    "use_linear_projection",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "time_cond_proj_dim",
)


def spatial_unet_config(motion_config: dict) -> dict:
    """``UNet2DConditionModel`` config of a ``UNetMotionModel``'s spatial part (``from_unet2d`` inverse)."""
    cfg = {k: motion_config[k] for k in _SHARED_KEYS if k in motion_config}
    cfg["down_block_types"] = [_DOWN_2D[b] for b in motion_config["down_block_types"]]
    cfg["up_block_types"] = [_UP_2D[b] for b in motion_config["up_block_types"]]
    cfg["mid_block_type"] = "UNetMidBlock2DCrossAttn"
    # UNet2DConditionModel's `attention_head_dim` is (historically) the number of heads.
    cfg["attention_head_dim"] = motion_config["num_attention_heads"]
    return plain_config(cfg)


def build_spatial_view(unet) -> nn.Module:
    """A ``UNet2DConditionModel`` made of the very same submodules as ``unet`` minus the motion modules.

    Sharing modules (not copies) means LoRA layers, attention processors, the pose ``conv_in`` and any
    weight update are seen by both; the motion modules are really bypassed (a single frame through a
    trained motion module is not the identity). The view is not registered in the network, so the state
    dict has no duplicate keys.
    """
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        view = UNet2DConditionModel.from_config(spatial_unet_config(dict(unet.config)))
    for name, child in list(view.named_children()):
        if name in ("down_blocks", "up_blocks"):
            for v_block, m_block in zip(child, getattr(unet, name), strict=True):
                for sub, _ in list(v_block.named_children()):
                    setattr(v_block, sub, getattr(m_block, sub))
        elif name == "mid_block":
            for sub, _ in list(child.named_children()):
                setattr(child, sub, getattr(unet.mid_block, sub))
        else:
            setattr(view, name, getattr(unet, name))
    mine = dict(view.named_parameters())
    theirs = {k: p for k, p in unet.named_parameters() if "motion_modules" not in k}
    if mine.keys() != theirs.keys() or any(mine[k] is not theirs[k] for k in mine):
        raise RuntimeError("spatial view of the motion UNet does not share exactly its non-motion parameters")
    return view


class AuxHead(nn.Module):
    """DanceLCM's light auxiliary head: the UNet's last decoder features -> an x0 latent."""

    def __init__(self, channels: int, groups: int, out_channels: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(features)))


class AnimationNetwork(nn.Module):
    """Pose-guided video denoiser with a reference net; see the module docstring for the parts."""

    def __init__(
        self,
        config: NetworkConfig,
        *,
        unet: nn.Module | None = None,
        reference_unet: nn.Module | None = None,
        image_encoder: nn.Module | None = None,
    ):
        """Parts not given are built from ``config`` with random weights; given parts are used as they are."""
        super().__init__()
        from diffusers import UNet2DConditionModel, UNetMotionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        from animlcm.models.checkpointing import checkpointable_motion_modules

        self.config = config
        self.unet = unet if unet is not None else UNetMotionModel.from_config(config.unet)
        checkpointable_motion_modules(self.unet)  # diffusers' gradient checkpointing skips them otherwise
        self.reference_unet = (
            reference_unet
            if reference_unet is not None
            else UNet2DConditionModel.from_config(config.reference_unet)
        )
        # The reference net's output is never used (only its attention inputs): drop the final layers so
        # the parameters match Moore's reference_unet.pth and no parameter is left without gradient (DDP).
        self.reference_unet.conv_norm_out = None
        self.reference_unet.conv_out = nn.Identity()
        self.image_encoder = (
            image_encoder
            if image_encoder is not None
            else CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(config.image_encoder))
        )
        self.pose_guider = PoseGuider(PoseGuiderConfig.from_dict(config.pose_guider))
        width = self.unet.config.cross_attention_dim
        if self.image_encoder.config.projection_dim != width:
            raise ValueError(
                f"CLIP projection_dim {self.image_encoder.config.projection_dim} != "
                f"UNet cross_attention_dim {width}"
            )
        config.validate()
        self.face_projector = (
            FaceProjector(4, width, config.face_patch_size, zero_init=config.face_attention == "decoupled")
            if config.face_tokens
            else None
        )
        c0 = self.unet.config.block_out_channels[0]
        self.aux_head = AuxHead(c0, self.unet.config.norm_num_groups) if config.aux_head else None
        if self.pose_guider.config.embedding_channels != c0:
            raise ValueError(
                f"pose guider outputs {self.pose_guider.config.embedding_channels} channels, UNet wants {c0}"
            )

        self.unet.conv_in = PoseConditionedConv.wrap(self.unet.conv_in)
        self.num_reference_layers = install_processors(self.unet, write=False)
        if install_processors(
            self.reference_unet, write=True
        ) != self.num_reference_layers or reference_layers(self.unet) != reference_layers(
            self.reference_unet
        ):
            raise ValueError("reference UNet and denoising UNet have different spatial attention layers")

    # ---------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    @property
    def decoupled_face_tokens(self) -> int:
        """How many trailing context tokens cross-attention reads with their own softmax (0: none)."""
        if self.face_projector is None or self.config.face_attention != "decoupled":
            return 0
        return self.face_projector.num_tokens

    @property
    def spatial_unet(self) -> nn.Module:
        """The spatial-only view (a ``UNet2DConditionModel`` of the UNet's non-motion modules), built once."""
        cached = self.__dict__.get("_spatial_view")
        if cached is None or cached[0] is not self.unet:
            cached = (self.unet, build_spatial_view(self.unet))
            self.__dict__["_spatial_view"] = (
                cached  # not a registered submodule: no duplicate state-dict keys
            )
        view = cached[1]
        # Gradient checkpointing is switched on the motion UNet's blocks: mirror it onto the view's.
        for v_block, m_block in zip(
            [*view.down_blocks, view.mid_block, *view.up_blocks],
            [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks],
            strict=True,
        ):
            for attr in ("gradient_checkpointing", "_gradient_checkpointing_func"):
                if hasattr(m_block, attr):
                    setattr(v_block, attr, getattr(m_block, attr))
        return view

    # ---------------------------------------------------------------- conditioning
    def encode_conditioning(
        self,
        ref_image: torch.Tensor,
        ref_latent: torch.Tensor,
        face_latent: torch.Tensor | None = None,
        face_found: torch.Tensor | None = None,
    ) -> Conditioning:
        """CLIP (+ face) tokens and the reference net's features, computed once per clip.

        ``ref_image (B, 3, H, W)`` in [0, 1]; ``ref_latent (B, 4, h, w)``; ``face_latent (B, 4, 32, 32)``
        (the VAE latent of the 256x256 face crop) or ``None``; ``face_found (B,)`` bool: rows without a face
        get zero face tokens, like all rows when ``face_latent`` is ``None``.
        """
        dtype, device = self.dtype, self.device
        b = ref_image.shape[0]
        pixels = clip_pixels(ref_image.to(device), self.image_encoder.config.image_size).to(dtype)
        tokens = self.image_encoder(pixel_values=pixels).image_embeds.unsqueeze(1)  # (B, 1, D)
        if self.face_projector is not None:
            if face_latent is None:
                face = tokens.new_zeros(b, self.face_projector.num_tokens, tokens.shape[-1])
            else:
                face = self.face_projector(face_latent.to(device, dtype))
                if face_found is not None:
                    face = face * face_found.to(device, dtype).view(b, 1, 1)
            tokens = torch.cat([tokens, face], dim=1)
        ctx = ReferenceContext.writer(self.num_reference_layers, self.decoupled_face_tokens)
        t0 = torch.zeros(b, dtype=torch.long, device=device)
        self.reference_unet(
            ref_latent.to(device, dtype),
            t0,
            encoder_hidden_states=tokens,
            cross_attention_kwargs={"reference": ctx},
        )
        return Conditioning(tokens=tokens, reference=list(ctx.features), dropped=False)

    # ---------------------------------------------------------------- denoiser
    @contextmanager
    def _capture_features(self, enabled: bool) -> Iterator[list[torch.Tensor]]:
        """The UNet's last decoder features (the input of ``conv_norm_out``) for the aux head, via a hook
        that exists only for this call."""
        store: list[torch.Tensor] = []
        if not enabled:
            yield store
            return
        handle = self.unet.conv_norm_out.register_forward_pre_hook(lambda _m, args: store.append(args[0]))
        try:
            yield store
        finally:
            handle.remove()

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        pose: dict[str, torch.Tensor],
        cond: Conditioning,
        *,
        temporal: bool = True,
        return_aux: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Model output ``(B, 4, F, h, w)`` in the prediction type (``(out, x0_aux)`` with ``return_aux``).

        ``x_t (B, 4, F, h, w)``; ``t (B,)`` integer steps; ``pose``: ``{map: (B, 3, F, H, W)}`` in [0, 1];
        ``temporal=False``: spatial-only mode, every frame denoised on its own (motion modules bypassed).
        """
        b, _, f = x_t.shape[:3]
        if cond.batch_size != b:
            raise ValueError(
                f"conditioning batch {cond.batch_size} != latent batch {b}: use cond.repeat()/select()"
            )
        if return_aux and self.aux_head is None:
            raise ValueError("return_aux=True but this network has no aux head (NetworkConfig.aux_head)")
        dtype = self.dtype
        x_t = x_t.to(dtype)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(b)
        tokens = cond.tokens.to(dtype).repeat_interleave(f, dim=0)  # UNetMotionModel wants (B*F, L, D)
        reference = ReferenceContext(
            features=None if cond.dropped else cond.reference,
            face_tokens=self.decoupled_face_tokens,
            rows=cond.reference_rows,
        )
        kwargs = {"reference": reference}
        pose_features = self.pose_guider(pose)
        with self.unet.conv_in.adding(pose_features), self._capture_features(return_aux) as feats:
            if temporal:
                out = self.unet(x_t, t, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample
            else:
                out = self.spatial_unet(
                    frames_to_batch(x_t),
                    t.repeat_interleave(f),
                    encoder_hidden_states=tokens,
                    cross_attention_kwargs=kwargs,
                ).sample
                out = batch_to_frames(out, f)
        if not return_aux:
            return out
        return out, batch_to_frames(self.aux_head(feats[-1]), f)


# ---------------------------------------------------------------------------- parameter counts
PARTS = (
    "unet (spatial)",
    "unet (motion modules)",
    "reference_unet",
    "pose_guider",
    "image_encoder",
    "face_projector",
    "aux_head",
    "lora",
)


def part_of(name: str) -> str:
    """Which part a state-dict key belongs to (for ``teacher info``)."""
    if "lora_" in name:
        return "lora"
    head = name.split(".", 1)[0]
    if head == "unet":
        return "unet (motion modules)" if ".motion_modules." in name else "unet (spatial)"
    return head


def parameter_counts(named: nn.Module | Iterable[tuple[str, int]]) -> dict[str, int]:
    """Parameter count per part, from a network or from ``(name, numel)`` pairs (e.g. a safetensors header).

    Buffers (e.g. the motion modules' sinusoidal position tables) are not parameters and are not counted.
    """
    if isinstance(named, nn.Module):
        named = ((k, p.numel()) for k, p in named.named_parameters())
    counts: dict[str, int] = {}
    for name, n in named:
        part = part_of(name)
        counts[part] = counts.get(part, 0) + int(n)
    return {p: counts[p] for p in [*PARTS, *sorted(set(counts) - set(PARTS))] if p in counts}

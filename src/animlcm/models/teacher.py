"""``animlcm teacher init`` / ``teacher info``: a teacher folder from a preset; a model folder described."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from animlcm.errors import AnimlcmError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# runwayml/stable-diffusion-v1-5 vae/config.json (for --random at sd15: real-size decode cost without weights)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)


@dataclass(frozen=True)
class TeacherInitConfig:
    """Settings of ``animlcm teacher init``."""

    preset: str = "tiny"
    out: Path | None = None
    """The teacher folder to write (replaced atomically if it exists)."""
    random: bool = False
    """sd15: the real-size architecture with random weights (speed/memory measurements without weights)."""
    unet: str | None = None
    """sd15: SD1.5 repo or folder (its unet/ subfolder), or a UNet folder; local path or hub id."""
    motion_adapter: str | None = None
    """sd15: AnimateDiff MotionAdapter folder or hub id (e.g. guoyww/animatediff-motion-adapter-v1-5-2)."""
    vae: str | None = None
    """VAE folder or hub id (tiny: the built-in tiny VAE when unset)."""
    image_encoder: str | None = None
    """sd15: CLIPVisionModelWithProjection folder/hub id (e.g. lambdalabs/sd-image-variations-diffusers)."""
    pose_maps: tuple[str, ...] = ("skeleton",)
    """Guidance maps of the pose guider: skeleton, and optionally depth, normal, semantic."""
    face_tokens: bool = True
    """DanceLCM face tokens (VAE latent of the face crop) after the CLIP token."""
    aux_head: bool = False
    """DanceLCM auxiliary x0 head (students train it)."""
    champ_attention: bool = False
    """Champ's guidance-encoder attention layers in every pose encoder."""
    schedule: str = "zero_snr_v"
    """Noise schedule: zero_snr_v (v-pred, zero-SNR, trailing: Animate Anyone/Champ) or sd15 (epsilon)."""
    widths: tuple[int, ...] | None = None
    """tiny: the UNets' block widths (default 32,64; 64,128 is a ~4x bigger teacher)."""
    heads: int | None = None
    """tiny: attention heads of the spatial (and reference) attention layers (default 1)."""
    seed: int = 0
    dtype: str = "float32"
    """dtype of the saved weights: float32, float16 or bfloat16."""

    @classmethod
    def from_preset(cls, name: str) -> TeacherInitConfig:
        return cls(preset=name)

    def validate(self) -> None:
        if self.out is None:
            raise AnimlcmError("teacher init: --out DIR is required")
        if self.dtype not in DTYPES:
            raise AnimlcmError(f"teacher init: dtype '{self.dtype}' unknown; use one of {', '.join(DTYPES)}")
        if self.schedule not in ("zero_snr_v", "sd15"):
            raise AnimlcmError(f"teacher init: schedule '{self.schedule}' unknown; use zero_snr_v or sd15")


def _vae(cfg: TeacherInitConfig):
    from animlcm.models.vae import load_vae

    if cfg.vae is None and cfg.preset == "sd15" and cfg.random:
        from diffusers import AutoencoderKL

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return AutoencoderKL(**SD15_VAE).eval()
    return load_vae(cfg.vae, cfg.preset)


def init_teacher(cfg: TeacherInitConfig) -> Path:
    """Build the preset's network (+ VAE) and write the teacher folder ``cfg.out``."""
    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import Sd15Parts, build_network

    cfg.validate()
    errors, vae, net = [], None, None
    try:
        vae = _vae(cfg)
    except AnimlcmError as exc:
        errors.append(str(exc))
    try:
        net = build_network(
            cfg.preset,
            random=cfg.random,
            parts=Sd15Parts(cfg.unet, cfg.motion_adapter, cfg.image_encoder),
            seed=cfg.seed,
            pose_maps=tuple(cfg.pose_maps),
            face_tokens=cfg.face_tokens,
            aux_head=cfg.aux_head,
            champ_attention=cfg.champ_attention,
            schedule=cfg.schedule,
            dtype=DTYPES[cfg.dtype] if cfg.random else None,
            widths=tuple(cfg.widths) if cfg.widths else None,
            heads=cfg.heads,
        )
    except AnimlcmError as exc:
        errors.extend(str(exc).split("\n"))
    if errors:
        raise AnimlcmError("\n".join(errors))
    net.to(DTYPES[cfg.dtype])
    meta = {
        "preset": cfg.preset,
        "random_weights": cfg.preset == "tiny" or cfg.random,
        "sources": {k: getattr(cfg, k) for k in ("unet", "motion_adapter", "vae", "image_encoder")},
        "seed": cfg.seed,
    }
    return save_model_folder(net, vae, Path(cfg.out), kind="teacher", meta=meta)


@dataclass
class FolderInfo:
    """What ``teacher info`` prints."""

    path: Path
    kind: str
    preset: str
    counts: dict[str, int]
    prediction_type: str
    schedule: dict
    pose_maps: list[str]
    face_tokens: bool
    aux_head: bool
    lora: bool
    vae: bool
    meta: dict
    layout: str = "flat"
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def folder_info(directory: str | Path) -> FolderInfo:
    """Describe a model folder without loading its weights (parameters counted on the meta device)."""
    from safetensors import safe_open

    from animlcm.models.diffusers_folder import is_diffusers_folder
    from animlcm.models.io import LORA_DIR, VAE_DIR, component_sources, is_lora_folder, read_folder_meta
    from animlcm.models.lora import LORA_FILE
    from animlcm.models.network import NetworkConfig, parameter_counts
    from animlcm.models.presets import empty_network

    directory = Path(directory)
    data = read_folder_meta(directory)
    cfg = NetworkConfig.from_dict(data["network"])
    counts = parameter_counts(empty_network(cfg))
    lora = is_lora_folder(directory)
    if lora:
        path = directory / LORA_DIR / LORA_FILE
        with safe_open(str(path), framework="pt") as f:
            counts["lora"] = sum(int(torch.Size(f.get_slice(k).get_shape()).numel()) for k in f.keys())
    shared = data.get("shared") or {}
    has_vae = (directory / VAE_DIR / "config.json").exists() or "vae" in shared
    schedule = data.get("schedule") or cfg.schedule
    return FolderInfo(
        path=directory,
        kind=data["kind"],
        preset=cfg.preset,
        counts=counts,
        prediction_type=schedule.get("prediction_type", "epsilon"),
        schedule=schedule,
        pose_maps=list(cfg.pose_guider["maps"]),
        face_tokens=cfg.face_tokens,
        aux_head=cfg.aux_head,
        lora=lora,
        vae=has_vae,
        meta=data.get("meta", {}),
        layout="diffusers" if is_diffusers_folder(directory) else ("lora" if lora else "flat"),
        sources=component_sources(directory),
    )

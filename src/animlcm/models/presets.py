"""Network presets: ``tiny`` (built from configs in about a second, for tests and the built-in default) and
``sd15`` (SD1.5 UNet + AnimateDiff motion adapter + CLIP ViT-L/14 image encoder, from diffusers/transformers
components given as local folders or hub ids, or with ``random=True`` the real-size architecture with
random weights, to measure speed and memory without the real weights).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError
from animlcm.models.hub import hub_reachable, looks_like_hub_id
from animlcm.models.network import AnimationNetwork, NetworkConfig, plain_config
from animlcm.models.pose_guider import PoseGuiderConfig

# ---------------------------------------------------------------------------------------------------- tiny
# Sizes from ../shared/notes/dependencies.md "Tiny models": latent 16x16 (128 px), 1 head, CPU-fast.
TINY_UNET2D = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64],
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=1,  # = number of heads in UNet2DConditionModel
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
)
TINY_MOTION = dict(motion_num_attention_heads=2, motion_max_seq_length=32, use_motion_mid_block=True)
TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=37,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
TINY_POSE = PoseGuiderConfig(embedding_channels=32, block_out_channels=(8, 16, 16, 32), attention_num_heads=2)

# ---------------------------------------------------------------------------------------------------- sd15
# runwayml/stable-diffusion-v1-5 unet/config.json (the values that differ from diffusers' defaults included).
SD15_UNET2D = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
# guoyww/animatediff-motion-adapter-v1-5-2 (= Moore's / Champ's motion modules, see teacher_layouts/README).
SD15_MOTION = dict(motion_num_attention_heads=8, motion_max_seq_length=32, use_motion_mid_block=True)
# CLIP ViT-L/14 vision tower + projection (lambdalabs/sd-image-variations-diffusers image_encoder, Moore's).
SD15_CLIP = dict(
    hidden_size=1024,
    intermediate_size=4096,
    projection_dim=768,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    hidden_act="quick_gelu",
)
SD15_POSE = PoseGuiderConfig()  # Moore's PoseGuider: (16, 32, 96, 256) -> 320


def motion_unet_config(unet2d: dict, motion: dict) -> dict:
    """``UNetMotionModel`` config from an SD ``UNet2DConditionModel`` config + motion settings (cf.
    ``UNetMotionModel.from_unet2d``)."""
    keys = (
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
        "use_linear_projection",
        "time_cond_proj_dim",
    )
    cfg: dict[str, Any] = {k: unet2d[k] for k in keys if k in unet2d}
    cfg["down_block_types"] = [
        "CrossAttnDownBlockMotion" if "CrossAttn" in b else "DownBlockMotion"
        for b in unet2d["down_block_types"]
    ]
    cfg["up_block_types"] = [
        "CrossAttnUpBlockMotion" if "CrossAttn" in b else "UpBlockMotion" for b in unet2d["up_block_types"]
    ]
    cfg["num_attention_heads"] = unet2d.get("num_attention_heads") or unet2d["attention_head_dim"]
    cfg.update(motion)
    return plain_config(cfg)


def schedule_dict(schedule: NoiseSchedule | dict | str | None) -> dict:
    """A schedule as the dict stored in ``NetworkConfig``; by name: ``zero_snr_v`` (default) or ``sd15``."""
    if schedule is None or schedule == "zero_snr_v":
        return NoiseSchedule.zero_snr_v().to_dict()
    if schedule == "sd15":
        return NoiseSchedule.sd15().to_dict()
    if isinstance(schedule, NoiseSchedule):
        return schedule.to_dict()
    if isinstance(schedule, dict):
        return NoiseSchedule.from_dict(schedule).to_dict()
    raise AnimlcmError(
        f"unknown noise schedule {schedule!r}: use zero_snr_v (v-prediction, zero-SNR) or sd15"
    )


def network_config(
    preset: str,
    *,
    pose_maps: tuple[str, ...] = ("skeleton",),
    face_tokens: bool = True,
    aux_head: bool = False,
    champ_attention: bool = False,
    schedule: NoiseSchedule | dict | str | None = None,
    unet2d: dict | None = None,
    motion: dict | None = None,
    clip: dict | None = None,
) -> NetworkConfig:
    """The architecture of a preset (component configs may be overridden by those of loaded components)."""
    from transformers import CLIPVisionConfig

    if preset not in ("tiny", "sd15"):
        raise AnimlcmError(f"unknown preset '{preset}': choose tiny or sd15")
    tiny = preset == "tiny"
    unet2d = plain_config(unet2d or (TINY_UNET2D if tiny else SD15_UNET2D))
    motion = dict(motion or (TINY_MOTION if tiny else SD15_MOTION))
    pose = TINY_POSE if tiny else SD15_POSE
    pose = PoseGuiderConfig(
        maps=tuple(pose_maps),
        embedding_channels=unet2d["block_out_channels"][0],
        block_out_channels=pose.block_out_channels,
        champ_attention=champ_attention,
        attention_num_heads=pose.attention_num_heads,
    )
    clip_cfg = (
        clip if clip is not None else plain_config(CLIPVisionConfig(**(TINY_CLIP if tiny else SD15_CLIP)))
    )
    return NetworkConfig(
        unet=motion_unet_config(unet2d, motion),
        reference_unet=dict(unet2d),
        image_encoder=clip_cfg,
        pose_guider=pose.to_dict(),
        face_tokens=face_tokens,
        face_attention="decoupled",
        aux_head=aux_head,
        schedule=schedule_dict(schedule),
        preset=preset,
    )


@contextmanager
def default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Create parameters directly in ``dtype`` (a real-size random network in bf16 needs half the RAM)."""
    if dtype is None:
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def tiny_unet2d(widths: tuple[int, ...] | None = None, heads: int | None = None) -> dict:
    """The tiny UNet config with other block widths (one per block, multiples of its 8 norm groups) and
    number of attention heads (each width must split into them)."""
    n = len(TINY_UNET2D["block_out_channels"])
    widths = tuple(widths or TINY_UNET2D["block_out_channels"])
    heads = int(heads or TINY_UNET2D["attention_head_dim"])
    if heads < 1 or any(w % heads for w in widths):
        raise AnimlcmError(
            f"--heads {heads}: every block width ({','.join(str(w) for w in widths)}) must split into "
            "that many heads (e.g. 1, 2 or 4)"
        )
    if len(widths) != n or any(w < 8 or w % 8 for w in widths):
        shown = ",".join(str(w) for w in widths)
        raise AnimlcmError(
            f"--widths {shown}: the tiny UNet needs {n} block widths, multiples of 8 "
            "(default 32,64; e.g. 64,128)"
        )
    return {**TINY_UNET2D, "block_out_channels": [int(w) for w in widths], "attention_head_dim": heads}


def zero_motion_modules(net: AnimationNetwork) -> AnimationNetwork:
    """Zero every motion module's output projection (AnimateDiff's ``zero_initialize``), in place.

    A motion module adds ``proj_out(...)`` to its input, so a fresh one is then the identity: a teacher
    trained only in the spatial stage renders clips exactly as it renders frames, and the temporal stage
    starts from the spatial model instead of from random temporal mixing.
    """
    with torch.no_grad():
        for name, p in net.unet.named_parameters():
            if ".motion_modules." in f".{name}" and ".proj_out." in name:
                p.zero_()
    return net


def tiny_network(
    seed: int = 0,
    face_tokens: bool = True,
    aux_head: bool = True,
    pose_maps: tuple[str, ...] = ("skeleton",),
    champ_attention: bool = False,
    schedule: NoiseSchedule | dict | str | None = None,
) -> AnimationNetwork:
    """A seeded random tiny network (about a second on CPU); the builder other stages' tests use."""
    cfg = network_config(
        "tiny",
        pose_maps=pose_maps,
        face_tokens=face_tokens,
        aux_head=aux_head,
        champ_attention=champ_attention,
        schedule=schedule,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AnimationNetwork(cfg).eval()


def empty_network(cfg: NetworkConfig) -> AnimationNetwork:
    """The architecture with parameters on the meta device (no memory, no init): for counting and loading."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return AnimationNetwork(cfg)


# ----------------------------------------------------------------------------------------------- sd15 parts
def _load_part(kind: str, flag: str, spec: str | Path, loader, subfolders: tuple[str, ...]):
    """``loader(path_or_id, subfolder, local_files_only)`` from a local folder (or its ``subfolders``) or a
    hub id (local HF cache first, then the hub); one line on failure."""
    path = Path(spec)
    if path.exists():
        for sub in (*subfolders, ""):
            if (path / sub / "config.json").exists():
                return loader(str(path / sub) if sub else str(path), None, True)
        raise AnimlcmError(
            f"{flag} {spec}: no {kind} there (no config.json in it or in "
            f"{', '.join(s + '/' for s in subfolders)}); "
            "pass the diffusers/transformers folder"
        )
    if not looks_like_hub_id(str(spec)):
        raise AnimlcmError(f"{flag} {spec}: no such folder; pass the folder of a {kind} (or a hub id)")
    online = None
    for local_only in (True, False):
        if not local_only:
            online = hub_reachable()
            if not online:
                break
        for sub in (*subfolders, None):
            try:
                return loader(str(spec), sub, local_only)
            except Exception:  # hub/network errors come in many types; the user needs one line
                continue
    why = "the hub is unreachable (offline?)" if online is False else "the hub id could not be loaded"
    raise AnimlcmError(
        f"{flag} {spec}: not a local folder, not in the local Hugging Face cache, and {why}; "
        f"download it (`huggingface-cli download {spec}`) and pass the folder"
    )


@dataclass(frozen=True)
class Sd15Parts:
    """Where each sd15 component comes from: a local folder or a hub id."""

    unet: str | None = None  # an SD1.5 repo/folder (subfolder unet) or a UNet folder
    motion_adapter: str | None = (
        None  # an AnimateDiff MotionAdapter (e.g. guoyww/animatediff-motion-adapter-v1-5-2)
    )
    image_encoder: str | None = (
        None  # CLIPVisionModelWithProjection (e.g. lambdalabs/sd-image-variations-diffusers)
    )


def load_sd15_parts(parts: Sd15Parts):
    """Load every named part; all missing/unreachable parts are reported together, one line each."""
    from diffusers import MotionAdapter, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    missing = [
        f"--{f.replace('_', '-')} is required for --preset sd15 (or pass --random)"
        for f in ("unet", "motion_adapter", "image_encoder")
        if getattr(parts, f) is None
    ]
    if missing:
        raise AnimlcmError("\n".join(missing))

    def unet_loader(spec, sub, local_only):
        return UNet2DConditionModel.from_pretrained(
            spec, subfolder=sub, use_safetensors=True, local_files_only=local_only
        )

    def adapter_loader(spec, sub, local_only):
        return MotionAdapter.from_pretrained(
            spec, subfolder=sub, use_safetensors=True, local_files_only=local_only
        )

    def clip_loader(spec, sub, local_only):
        kw = {"subfolder": sub} if sub else {}
        return CLIPVisionModelWithProjection.from_pretrained(
            spec, use_safetensors=True, local_files_only=local_only, **kw
        )

    loaded, errors = {}, []
    for name, kind, loader, subs in (
        ("unet", "SD1.5 UNet", unet_loader, ("unet",)),
        ("motion_adapter", "AnimateDiff motion adapter", adapter_loader, ("motion_adapter",)),
        ("image_encoder", "CLIP image encoder", clip_loader, ("image_encoder",)),
    ):
        try:
            loaded[name] = _load_part(kind, f"--{name.replace('_', '-')}", getattr(parts, name), loader, subs)
        except AnimlcmError as exc:
            errors.append(str(exc))
    if errors:
        raise AnimlcmError("\n".join(errors))
    return loaded["unet"], loaded["motion_adapter"], loaded["image_encoder"]


def build_network(
    preset: str,
    random: bool = True,
    *,
    parts: Sd15Parts | None = None,
    seed: int = 0,
    pose_maps: tuple[str, ...] = ("skeleton",),
    face_tokens: bool = True,
    aux_head: bool = False,
    champ_attention: bool = False,
    schedule: NoiseSchedule | dict | str | None = None,
    dtype: torch.dtype | None = None,
    widths: tuple[int, ...] | None = None,
    heads: int | None = None,
) -> AnimationNetwork:
    """A network of ``preset``: random weights (``tiny`` always, ``sd15`` with ``random=True``) or, for
    ``sd15``, the SD1.5 UNet (denoiser spatial part and reference net), motion adapter and CLIP image encoder
    from ``parts``. ``widths`` / ``heads`` (tiny only) replace the UNets' block widths / attention heads.

    The pose guider, face projector and aux head start random (the guider's output layer at zero); their
    trained weights come with ``animlcm teacher import`` or training.
    """
    opts = dict(
        pose_maps=pose_maps,
        face_tokens=face_tokens,
        aux_head=aux_head,
        champ_attention=champ_attention,
        schedule=schedule,
    )
    if widths is not None or heads is not None:
        if preset != "tiny":
            raise AnimlcmError(
                f"--widths/--heads are for the tiny preset; {preset} takes its sizes from its weights"
            )
        opts["unet2d"] = tiny_unet2d(widths, heads)
    if preset == "tiny" or (preset == "sd15" and random):
        cfg = network_config(preset, **opts)
        with torch.random.fork_rng(devices=[]), default_dtype(dtype):
            torch.manual_seed(seed)
            return zero_motion_modules(AnimationNetwork(cfg)).eval()
    if preset != "sd15":
        raise AnimlcmError(f"unknown preset '{preset}': choose tiny or sd15")
    from diffusers import UNetMotionModel

    unet2d, adapter, clip = load_sd15_parts(parts or Sd15Parts())
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    reference = copy.deepcopy(unet2d)  # Animate Anyone initialises the reference net from the same SD UNet
    motion = {k: adapter.config[k] for k in SD15_MOTION}
    cfg = network_config(
        "sd15", unet2d=plain_config(unet2d.config), motion=motion, clip=plain_config(clip.config), **opts
    )
    cfg.unet = plain_config(unet.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AnimationNetwork(cfg, unet=unet, reference_unet=reference, image_encoder=clip).eval()

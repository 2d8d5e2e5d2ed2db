"""LoRA on the denoising UNet through peft (diffusers' ``add_adapter``): LCM-LoRA's layers or attention.

Saved as a diffusers pipeline LoRA file (``pytorch_lora_weights.safetensors``: keys ``unet.*``, the
``LoraConfig`` in its header metadata), so ``AnimationPipeline.load_lora_weights`` puts a student's adapter on
its teacher, and loaded strictly with peft: every LoRA tensor of the adapter must be in the file and nothing
else (files written before, without the ``unet.`` prefix, load too). Never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from animlcm.errors import AnimlcmError

ADAPTER = "default"
LORA_FILE = "pytorch_lora_weights.safetensors"
PREFIX = "unet."  # diffusers' pipeline LoRA files name the component
_ATTN = r"transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
# LCM-LoRA's set (diffusers' train_lcm_distill_lora_sd_wds.py; AnimateLCM's spatial LoRA is an LCM-LoRA):
# attention q/k/v/out, the transformers' feed-forward and proj_in/out, the ResNets' convolutions and time
# projections, the down/upsampling convolutions
_ALL = (
    rf"attentions\.\d+\.({_ATTN}|transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)|proj_in|proj_out)"
    r"|resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|(downsamplers|upsamplers)\.0\.conv"
)
LAYERS = ("spatial", "all")
"""Where: the spatial (SD) blocks only, or the motion modules too (their attention)."""
TARGETS = {
    # the layer types of the spatial blocks; never a motion module's (the "spatial" stage LoRA)
    "attention": rf"(?!.*motion_modules).*\.attentions\.\d+\.{_ATTN}",
    "all": rf"(?!.*motion_modules).*\.({_ALL})",
}
"""Which layer types: attention q/k/v/out only, or LCM-LoRA's whole set."""
_MOTION = rf".*\.motion_modules\.\d+\.{_ATTN}"


def target_regex(layers: str = "spatial", targets: str = "all") -> str:
    """The peft ``target_modules`` regex (matched against whole module names) for ``layers`` x ``targets``."""
    if layers not in LAYERS:
        raise AnimlcmError(f"LoRA layers '{layers}': choose one of {', '.join(LAYERS)}")
    if targets not in TARGETS:
        raise AnimlcmError(f"--lora-targets {targets}: choose one of {', '.join(TARGETS)}")
    return TARGETS[targets] if layers == "spatial" else f"({TARGETS[targets]})|({_MOTION})"


def lora_config(
    rank: int = 64,
    alpha: float | None = None,
    layers: str = "spatial",
    init: bool = True,
    targets: str = "all",
):
    """A peft ``LoraConfig`` on ``layers`` x ``targets`` (``target_regex``; ``alpha`` defaults to ``rank``:
    scale 1)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=target_regex(layers, targets),
        init_lora_weights=init,
    )


def add_lora(
    net, rank: int = 64, alpha: float | None = None, layers: str = "spatial", targets: str = "all"
) -> list[str]:
    """Add a LoRA adapter to ``net.unet``; returns the names of the new (trainable) LoRA parameters.

    The spatial-only view shares the UNet's blocks, so it sees the adapter too.
    """
    if has_lora(net):
        raise AnimlcmError("this network already has a LoRA adapter")
    net.unet.add_adapter(lora_config(rank, alpha, layers, targets=targets), adapter_name=ADAPTER)
    return [n for n, _ in net.named_parameters() if "lora_" in n]


def has_lora(net) -> bool:
    return ADAPTER in getattr(net.unet, "peft_config", {})


def set_lora_enabled(net, enabled: bool) -> None:
    """Switch the adapter on/off (off = the base teacher's output, exactly)."""
    if enabled:
        net.unet.enable_adapters()
    else:
        net.unet.disable_adapters()


def merge_lora(net) -> None:
    """Fold the adapter into the base weights and remove the LoRA layers (a plain network again)."""
    if not has_lora(net):
        raise AnimlcmError("merge_lora: the network has no LoRA adapter")
    net.unet.fuse_lora(lora_scale=1.0)
    net.unet.unload_lora()


def save_lora(net, directory: str | Path) -> Path:
    """Write ``DIR/pytorch_lora_weights.safetensors`` (LoraConfig in the header); returns the file."""
    if not has_lora(net):
        raise AnimlcmError("save_lora: the network has no LoRA adapter")
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        str(directory),
        unet_lora_layers=get_peft_model_state_dict(net.unet, adapter_name=ADAPTER),
        unet_lora_adapter_metadata=net.unet.peft_config[ADAPTER].to_dict(),
        safe_serialization=True,
        weight_name=LORA_FILE,
    )
    return directory / LORA_FILE


def read_lora_config(path: Path):
    """The ``LoraConfig`` stored in a LoRA file's safetensors header."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from peft import LoraConfig
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if LORA_ADAPTER_METADATA_KEY not in meta:
        raise AnimlcmError(f"{path}: no LoRA config in the file header; save it with animlcm (save_lora)")
    data = json.loads(meta[LORA_ADAPTER_METADATA_KEY])
    data = {k.removeprefix(PREFIX): v for k, v in data.items()}
    known = set(LoraConfig.__dataclass_fields__)
    return LoraConfig(**{k: v for k, v in data.items() if k in known})


def load_lora(net, directory: str | Path) -> None:
    """Add the adapter saved in ``DIR`` to ``net.unet`` and load its weights strictly (safetensors only)."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / LORA_FILE
    if not path.exists():
        raise AnimlcmError(
            f"{directory}: no {LORA_FILE}; a LoRA folder is written by save_lora / animlcm distill"
        )
    cfg = read_lora_config(path)
    if isinstance(cfg.target_modules, list):
        cfg.target_modules = set(cfg.target_modules)
    net.unet.add_adapter(cfg, adapter_name=ADAPTER)
    state = {k.removeprefix(PREFIX): v for k, v in load_file(str(path), device=str(net.device)).items()}
    result = set_peft_model_state_dict(net.unet, state, adapter_name=ADAPTER)
    expected = {n for n, _ in net.unet.named_parameters() if "lora_" in n}
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing or len(state) != len(expected):
        raise AnimlcmError(
            f"{path}: LoRA weights do not fit this network ({len(result.unexpected_keys)} unexpected, "
            f"{len(missing)} missing tensors); was it saved from a student of this teacher?"
        )

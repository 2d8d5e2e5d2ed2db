"""The VAE: building the tiny one from config, loading a real one, and latents in/out.

Latents everywhere in animlcm are the posterior *mean* times the VAE's scaling factor (DESIGN section 2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from animlcm.errors import AnimlcmError

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=128,
)

BUILTIN_TINY_VAE = Path(__file__).resolve().parent.parent / "assets" / "tiny" / "vae"


def build_tiny_vae(seed: int = 0, channels: tuple[int, ...] | None = None):
    """The tiny VAE from config, seeded so every machine builds the same weights.

    ``channels`` replaces the four encoder/decoder widths (e.g. ``(16, 32, 64, 64)`` for a VAE with a
    higher reconstruction ceiling, trained where a GPU is lent); the latent stays 4 x H/8 x W/8.
    """
    from diffusers import AutoencoderKL

    config = dict(TINY_VAE_CONFIG)
    if channels is not None:
        if len(channels) != 4 or any(c % 8 for c in channels):
            raise AnimlcmError(f"VAE channels {channels}: give four widths, each a multiple of 8")
        config["block_out_channels"] = tuple(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**config).eval()


def load_vae(spec: str | Path | None, preset: str = "tiny"):
    """A diffusers ``AutoencoderKL`` from a local folder, a hub id, or (``None``) the preset's default.

    ``None`` at ``tiny`` gives the built-in trained tiny VAE when it ships, else the seeded random one;
    ``None`` at ``sd15`` is an error: the user must name a real VAE.
    """
    from diffusers import AutoencoderKL

    if spec is None:
        if preset == "tiny":
            if (BUILTIN_TINY_VAE / "config.json").exists():
                return AutoencoderKL.from_pretrained(BUILTIN_TINY_VAE).eval()
            return build_tiny_vae()
        raise AnimlcmError(
            "the sd15 preset needs a real VAE: pass --vae DIR (a diffusers AutoencoderKL folder, "
            "e.g. stabilityai/sd-vae-ft-mse) or --teacher DIR"
        )
    path = Path(spec)
    if path.exists():
        sub = path
        if (path / "animlcm.json").exists():  # a model folder: its own VAE, or the one it links to
            from animlcm.models.io import vae_folder

            sub = vae_folder(path) or path
        elif (path / "vae" / "config.json").exists():
            sub = path / "vae"
        if not (sub / "config.json").exists():
            raise AnimlcmError(
                f"{spec}: not a diffusers VAE folder (no config.json); pass the folder holding it"
            )
        return AutoencoderKL.from_pretrained(sub).eval()
    from animlcm.models.hub import hub_reachable, looks_like_hub_id

    if not looks_like_hub_id(str(spec)):
        raise AnimlcmError(f"{spec}: no such VAE folder; pass a diffusers AutoencoderKL folder (or a hub id)")
    # the local HF cache first; the hub only when it answers (offline, hub loaders retry for minutes)
    for local_only in (True, False):
        if not local_only and not hub_reachable():
            break
        for sub in ("vae", None):
            try:
                return AutoencoderKL.from_pretrained(
                    str(spec), subfolder=sub, local_files_only=local_only
                ).eval()
            except Exception:  # hub errors come in many types; the user needs one line
                continue
    raise AnimlcmError(
        f"{spec}: no such local folder, not in the local Hugging Face cache, and the hub id could not be "
        f"loaded "
        f"(offline?); download it with `huggingface-cli download {spec}` and pass the folder"
    )


def vae_id(vae) -> str:
    """A short fingerprint of the VAE's weights, recorded in the cache so stages can check they agree."""
    h = hashlib.sha256()
    for name, p in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def frames_to_tensor(
    frames: np.ndarray, device: torch.device | str = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return (x.permute(0, 3, 1, 2).to(dtype) / 127.5) - 1.0


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> latents (N, 4, H/8, W/8): posterior mean x scaling factor, float32 on CPU."""
    param = next(vae.parameters())
    out = []
    for i in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[i : i + batch_size], param.device, param.dtype)
        mean = vae.encode(x).latent_dist.mean
        out.append((mean * vae.config.scaling_factor).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = 8) -> np.ndarray:
    """latents (N, 4, h, w) -> uint8 frames (N, 8h, 8w, 3)."""
    param = next(vae.parameters())
    out = []
    for i in range(0, len(latents), batch_size):
        z = latents[i : i + batch_size].to(param.device, param.dtype) / vae.config.scaling_factor
        out.append(tensor_to_frames(vae.decode(z).sample))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)

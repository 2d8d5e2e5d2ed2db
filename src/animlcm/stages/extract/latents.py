"""VAE latents for the cache: posterior mean x scaling factor, float16, batched, on CUDA when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AnimlcmError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return device


def vae_spec(vae: str | None, teacher: Path | None) -> str | None:
    """--vae wins; else a teacher folder's vae/; else None (the preset's default)."""
    if vae is not None:
        return vae
    if teacher is not None:
        from animlcm.models.io import vae_folder

        sub = vae_folder(teacher)
        if sub is None:
            raise AnimlcmError(f"{teacher}: no vae/config.json in the teacher folder; pass --vae DIR")
        return str(sub)
    return None


class LatentEncoder:
    """Loads the VAE once per run; ``encode`` turns uint8 frames into float16 latents."""

    def __init__(
        self, vae: str | None, teacher: Path | None, preset: str, device: str, batch_size: int
    ) -> None:
        import torch

        from animlcm.models.vae import load_vae, vae_id

        self.device = resolve_device(device)
        self.vae = load_vae(vae_spec(vae, teacher), preset)
        self.id = vae_id(self.vae)  # before any dtype change, so the id names the weights as stored
        # fp16 halves the time on GPU; the tiny VAE and the CPU stay in fp32 (CPU half is slow)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.vae = self.vae.to(self.device) if dtype == torch.float32 else self.vae.to(self.device, dtype)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.batch_size = batch_size

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) -> float16 (F, 4, H/8, W/8)."""
        from animlcm.models.vae import encode_frames

        return encode_frames(self.vae, frames, batch_size=self.batch_size).numpy().astype(np.float16)

"""Training the tiny VAE of the built-in world on synthetic frames.

A random VAE would make every latent meaningless (decode(encode(x)) is noise), so the built-in teacher and
student are only worth something on a VAE that reconstructs the world: this is an ordinary KL-autoencoder
fit (L1 + MSE reconstruction, a tiny KL weight as in SD's VAE) of the tiny ``AutoencoderKL`` config.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from animlcm.models.vae import build_tiny_vae, frames_to_tensor


def train_tiny_vae(
    frames: np.ndarray,
    out_dir: Path,
    steps: int = 2000,
    batch_size: int = 16,
    crop: int = 64,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    init: Path | None = None,
    channels: tuple[int, ...] | None = None,
    max_minutes: float | None = None,
) -> dict[str, float]:
    """Fit the tiny VAE to uint8 frames (N, H, W, 3) (square, >= crop); save it as a diffusers folder."""
    gen = torch.Generator().manual_seed(seed)
    if init is None:
        vae = build_tiny_vae(seed, channels)
    else:  # continue a earlier fit (a restart of the cosine schedule)
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(init)
    vae = vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    # the whole synthetic set is a few hundred MB: on a GPU it lives there, so batches cost no copies
    data = frames_to_tensor(frames).to(device)
    stats: dict[str, float] = {}
    with Progress(disable=not progress) as bar:
        task = bar.add_task("training tiny VAE", total=steps)
        started, done = time.perf_counter(), 0
        for _ in range(steps):
            if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
                break  # a wall-clock budget (a lent GPU's fixed time): the cosine schedule ends early
            done += 1
            idx = torch.randint(len(data), (batch_size,), generator=gen)
            x = data[idx.to(device)]
            # random crops: the VAE is convolutional, and 64 px crops cost a quarter of full frames
            top, left = (int(v) for v in torch.randint(x.shape[-1] - crop + 1, (2,), generator=gen))
            x = x[..., top : top + crop, left : left + crop]
            if torch.rand((), generator=gen) < 0.5:  # mirrored dancers are dancers too
                x = x.flip(-1)
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
            rec = vae.decode(z).sample
            l1 = (rec - x).abs().mean()
            mse = ((rec - x) ** 2).mean()
            kl = post.kl().mean() / x[0].numel()
            loss = l1 + mse + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            sched.step()
            stats = {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}
            bar.update(task, advance=1, description=f"training tiny VAE  l1 {stats['l1']:.4f}")
    vae.eval()
    with torch.no_grad():  # PSNR of the posterior mean on the training frames, in [0, 1] units
        x = data[: min(64, len(data))]
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse01 = (((rec - x) / 2) ** 2).mean().item()
    stats["psnr"] = float(10 * np.log10(1.0 / max(mse01, 1e-12)))
    stats["parameters"] = sum(p.numel() for p in vae.parameters())
    stats["steps"] = done
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    vae.save_pretrained(tmp, safe_serialization=True)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return stats

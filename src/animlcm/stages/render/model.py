"""Which network renders: a student run folder, a teacher folder, the built-in student, or random weights."""

from __future__ import annotations

from pathlib import Path

import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.render.pipeline import RenderModel
from animlcm.stages.render.precheck import BUILTIN_STUDENT

# Stable Diffusion's VAE geometry, for `--preset sd15 --random` (timing real-size decode without weights)
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215,
)  # fmt: skip


def load_render_model(
    model_dir: Path | None,
    *,
    preset: str,
    random: bool = False,
    teacher: bool = False,
    device: torch.device,
    dtype: torch.dtype,
) -> RenderModel:
    """The network + VAE + schedule to render with, on ``device`` in ``dtype``.

    ``teacher`` with a student run folder loads the teacher the run recorded (its meta ``teacher``).
    """
    if random:
        return _random_model(preset, device, dtype)
    if model_dir is None:
        if not (BUILTIN_STUDENT.exists() and any(BUILTIN_STUDENT.iterdir())):
            raise AnimlcmError(
                f"no built-in student at {BUILTIN_STUDENT} in this install; pass --model DIR (a distill run "
                "folder "
                "or a teacher folder), or --random to time rendering with random weights"
            )
        model_dir = BUILTIN_STUDENT
    from animlcm.models.io import load_model_folder, result_folder

    model_dir = result_folder(Path(model_dir))  # --model takes a run folder too
    loaded = load_model_folder(model_dir, device=device, dtype=dtype)
    if teacher and loaded.kind != "teacher":
        teacher_dir = teacher_of(loaded.meta, Path(model_dir))
        loaded = load_model_folder(teacher_dir, device=device, dtype=dtype)
    vae = loaded.vae
    if vae is None:  # a folder without vae/: the preset's default VAE (the built-in tiny one at tiny)
        from animlcm.models.vae import load_vae

        vae = load_vae(None, loaded.net.config.preset).to(device, dtype)
    return RenderModel(
        net=loaded.net.eval(),
        vae=vae.eval(),
        schedule=loaded.schedule,
        kind=loaded.kind,
        meta=dict(loaded.meta or {}),
        device=device,
        dtype=dtype,
    )


def teacher_of(meta: dict | None, run_dir: Path) -> Path:
    """The teacher folder a student was distilled from (its meta's link, relative to the student folder,
    with the absolute path as a fallback: ``linked.py``)."""
    from animlcm.models.linked import meta_target, teacher_key

    meta = meta or {}
    key = teacher_key(meta)
    if key is None:
        raise AnimlcmError(
            f"{run_dir}: this student run records no teacher; pass the teacher folder with --teacher DIR"
        )
    try:
        return meta_target(meta, key, run_dir, what="teacher", hub=False)
    except AnimlcmError:
        raise AnimlcmError(
            f"{run_dir}: its teacher {meta[key]} is not there any more; pass the teacher with --teacher DIR"
        ) from None


def _random_model(preset: str, device: torch.device, dtype: torch.dtype) -> RenderModel:
    """The preset's architecture with seeded random weights (the real-size VAE too at sd15)."""
    from animlcm.diffusion.schedule import NoiseSchedule
    from animlcm.models.presets import build_network
    from animlcm.models.vae import build_tiny_vae

    net = build_network(preset, random=True, seed=0)
    if preset == "tiny":
        vae = build_tiny_vae()
    else:
        from diffusers import AutoencoderKL

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = AutoencoderKL(**SD_VAE_CONFIG)
    return RenderModel(
        net=net.to(device, dtype).eval(),
        vae=(vae.to(device) if dtype == torch.float32 else vae.to(device, dtype)).eval(),
        schedule=NoiseSchedule.from_dict(net.config.schedule),
        kind="random",
        meta={"method": f"random-{preset}"},
        device=device,
        dtype=dtype,
    )

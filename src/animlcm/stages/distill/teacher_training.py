"""`animlcm train-teacher`: ordinary diffusion training of a teacher on the same loop as distillation.

The loop, checkpoints, resume, log and progress are ``trainer.train``'s; only the step differs
(``teacher_step``): v-prediction (or epsilon) regression on zero-SNR noise levels, with the reference image
condition dropped in ~10% of the steps so that classifier-free guidance means something afterwards
(DESIGN section 4: the unconditional branch keeps the pose and drops reference K/V and image tokens).
Stages as in Animate Anyone: ``spatial`` trains the denoiser's spatial layers, the reference net, the pose
guider (and face projector) on single frames; ``temporal`` trains the motion modules on clips.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from animlcm.config import check_preset
from animlcm.diffusion.param import add_noise, to_v
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError
from animlcm.stages.distill.loop_config import RESUMABLE_CHANGES, STAGES, LoopSettings
from animlcm.stages.distill.trainer import (
    TrainJob,
    TrainResult,
    check_inputs,
    make_accelerator,
    prepare_run_dir,
    train,
)


@dataclass(frozen=True)
class TeacherTrainConfig(LoopSettings):
    """A teacher-training run (writes a teacher folder to ``out/teacher``).

    ``init``: start from this teacher folder (required at sd15; tiny builds a fresh seeded network when
    unset). The other run folder, stage and loop settings are ``LoopSettings``'; only these defaults differ.
    """

    max_steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-4
    cond_drop: float = 0.1
    """Probability that a step drops the reference (and image tokens): what makes CFG work."""
    schedule: str = "zero_snr_v"
    """Fresh tiny teachers only: zero_snr_v (v-prediction, zero-SNR) or sd15 (epsilon)."""
    face_tokens: bool = True
    """Fresh tiny teachers only: DanceLCM face tokens in the architecture."""

    @classmethod
    def from_preset(cls, name: str) -> TeacherTrainConfig:
        check_preset(name)
        if name == "sd15":
            return cls(
                preset=name, lr=1e-5, batch_size=1, mixed_precision="bf16", gradient_checkpointing=True
            )
        return cls(preset=name)

    def validate(self) -> None:
        def bad(msg: str) -> AnimlcmError:
            return AnimlcmError(f"train-teacher config: {msg}")

        if self.stage not in STAGES:
            raise bad(f"unknown stage '{self.stage}': choose spatial or temporal")
        if not 0.0 <= self.cond_drop < 1.0:
            raise bad(f"cond_drop must be in [0, 1) (got {self.cond_drop})")
        if self.schedule not in ("zero_snr_v", "sd15"):
            raise bad(f"schedule '{self.schedule}': choose zero_snr_v or sd15")
        self.validate_loop(bad)

    def check_paths(self) -> None:
        if self.cache is None or not Path(self.cache).is_dir():
            raise AnimlcmError(
                f"train-teacher: cache folder {self.cache} not found; run `animlcm extract` first"
            )
        if self.out is None:
            raise AnimlcmError("train-teacher: --out DIR is required")
        if self.init is not None and not Path(self.init).exists():
            raise AnimlcmError(
                f"{self.init}: --init teacher folder not found; make one with `animlcm teacher init`"
            )
        if self.init is None and self.preset != "tiny":
            raise AnimlcmError(
                "train-teacher --preset sd15 needs --init TEACHER_DIR "
                "(from `animlcm teacher init --preset sd15`)"
            )


def teacher_trainable(net: nn.Module, stage: str) -> None:
    """Spatial: denoiser spatial layers, reference net, pose guider, face projector; temporal: motion."""
    net.requires_grad_(False)
    for name, p in net.named_parameters():
        head = name.split(".", 1)[0]
        motion = "motion_modules" in name
        if stage == "temporal":
            on = head == "unet" and motion
        else:
            on = (head == "unet" and not motion) or head in (
                "reference_unet",
                "pose_guider",
                "face_projector",
            )
        p.requires_grad_(on)


def teacher_step(
    batch: dict[str, Any],
    model: nn.Module,
    net: nn.Module,
    schedule: NoiseSchedule,
    cfg: TeacherTrainConfig,
    generator: torch.Generator,
    vae: nn.Module | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One diffusion-training step: noise a real latent at a uniform t, regress the network's target."""
    from animlcm.stages.distill.step import encode_faces

    x0 = batch["latents"].float()
    b, device = x0.shape[0], x0.device
    abar = schedule.alphas_cumprod(device=device)
    # 1. t uniform over all training steps (zero-SNR includes t = 999, where only v is well defined)
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
    x_t = add_noise(x0, noise, abar[t])
    # 2. the reference condition, dropped for the whole batch with probability cond_drop (CFG training)
    drop = bool(torch.rand((), generator=generator) < cfg.cond_drop)
    face = found = None
    if getattr(net, "face_projector", None) is not None and vae is not None:
        face, found = encode_faces(vae, batch["ref_face"]), batch["ref_face_found"]
    cond = net.encode_conditioning(batch["ref_image"], batch["ref_latent"], face, found)
    if drop:
        cond = cond.uncond()
    # 3. the denoiser's prediction vs its target (v or eps)
    out = model(x_t, t, batch["pose"], cond, temporal=cfg.stage == "temporal").float()
    kind = schedule.prediction_type
    if kind == "v_prediction":
        target = to_v(x0, noise, abar[t])
    elif kind == "epsilon":
        target = noise
    else:
        target = x0
    mse = (out - target.float()).pow(2).mean()
    # the reference net and face projector got no gradient on dropped steps: a zero term keeps the
    # graph connected so every trainable parameter has a (zero) gradient under DDP
    tie = sum(r.sum() * 0.0 for r in cond.reference) if drop else 0.0
    return mse + tie, {"mse": mse, "dropped": torch.tensor(float(drop))}


def _fresh_tiny(cfg: TeacherTrainConfig):
    from animlcm.models.presets import build_network
    from animlcm.models.vae import load_vae

    net = build_network(
        "tiny", random=True, seed=cfg.seed, face_tokens=cfg.face_tokens, schedule=cfg.schedule
    )
    return net, load_vae(None, "tiny"), NoiseSchedule.from_dict(net.config.schedule)


def run(cfg: TeacherTrainConfig, *, progress: bool | None = None) -> TrainResult:
    """Train (or continue training) a teacher; the result is the teacher folder ``out/teacher``."""
    from animlcm.models.io import load_model_folder, save_model_folder
    from animlcm.stages.distill.data import DistillDataset

    if progress is not None:
        cfg = dataclasses.replace(cfg, progress=progress)
    cfg.validate()
    cfg.check_paths()
    out = Path(cfg.out)
    check_inputs(out, cfg.cache, cfg.init, cfg.resume)
    accelerator = make_accelerator(cfg)
    prepare_run_dir(out, cfg, RESUMABLE_CHANGES, write=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.seed)
    if cfg.init is not None:
        loaded = load_model_folder(cfg.init, accelerator.device)
        net, vae, schedule, meta = loaded.net, loaded.vae, loaded.schedule, dict(loaded.meta)
    else:
        net, vae, schedule = _fresh_tiny(cfg)
        net.to(accelerator.device)
        meta = {"preset": cfg.preset, "random_weights": False}
    if vae is None:
        raise AnimlcmError(
            f"{cfg.init}: the teacher folder has no vae/; re-create it with `animlcm teacher init`"
        )
    vae.to(accelerator.device).requires_grad_(False)
    net.train()
    teacher_trainable(net, cfg.stage)
    if cfg.gradient_checkpointing:
        from animlcm.models.checkpointing import enable_checkpointing

        enable_checkpointing(net)
    dataset = DistillDataset(
        cfg.cache, num_frames=cfg.frames_per_sample, stride=cfg.frame_stride,
        maps=tuple(net.pose_guider.maps),
        faces=getattr(net, "face_projector", None) is not None, preload=cfg.preload, seed=cfg.seed,
    )  # fmt: skip

    def step_fn(batch, model, generator):
        return teacher_step(batch, model, net, schedule, cfg, generator, vae)

    def finish(trained: nn.Module, steps: int) -> Path:
        trained.eval()
        # steps per stage, so a temporal teacher still says how long its spatial stage trained
        earlier = meta.get("trained_steps") if isinstance(meta.get("trained_steps"), dict) else {}
        info = {**meta, "random_weights": False, "trained_steps": {**earlier, cfg.stage: steps},
                "stage": cfg.stage, "cache": str(Path(cfg.cache).resolve()),
                "cond_drop": cfg.cond_drop}  # fmt: skip
        return save_model_folder(trained, vae, out / "teacher", kind="teacher", schedule=schedule, meta=info)

    job = TrainJob(
        out=out, student=net, step_fn=step_fn, dataset=dataset, finish=finish, accelerator=accelerator
    )
    return train(job, cfg, description=f"train-teacher {cfg.stage}")

"""One consistency-distillation step: LCM's Algorithm 1 with every method's switch (DESIGN section 4).

``distill_step`` reads top to bottom like the papers; the math is in pure functions elsewhere
(``diffusion/param.py``, ``diffusion/timesteps.py``, ``targets.py``, ``losses.py``) that the renderer and the
tests share, so training and sampling cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from animlcm.diffusion.param import add_noise
from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.timesteps import sample_timestep_pairs, segment_edges
from animlcm.errors import AnimlcmError
from animlcm.models.conditioning import Conditioning
from animlcm.stages.distill.config import DistillConfig
from animlcm.stages.distill.losses import (
    aux_loss,
    cd_loss,
    cons_loss,
    eta_loss,
    frames_as_rows,
    self_dependency_matrix,
    temporal_sdm_loss,
    timestep_weight,
)
from animlcm.stages.distill.targets import cd_target, student_prediction


@dataclass
class DistillModels:
    """The networks of a step. ``student`` is the unwrapped online network (the loop passes the possibly
    DDP-wrapped one for the forward call); ``teacher`` is None for teacher-free training."""

    student: nn.Module
    target: nn.Module
    teacher: nn.Module | None
    schedule: NoiseSchedule
    vae: nn.Module | None = None  # encodes the reference face crops for face tokens (teacher's or student's)
    # the target / teacher turn a reference into the student's conditioning bit for bit
    # (``same_conditioning``): the frozen reference net then runs once per step for all three
    target_same_conditioning: bool = False
    teacher_same_conditioning: bool = False

    @property
    def teacher_shares_conditioning(self) -> bool:
        """Can the teacher read the student's conditioning (ReferenceLCM)? Only when neither has face tokens:
        a student's face projector trains, so its tokens (and, through the reference net's cross-attention,
        its reference features) are not the teacher's; a teacher must see what it was trained with."""
        return (
            self.teacher is not None
            and not has_face_tokens(self.teacher)
            and not has_face_tokens(self.student)
        )


def same_conditioning(net: nn.Module, other: nn.Module | None) -> bool:
    """Does ``other`` encode a reference exactly as ``net`` does? Yes when neither has face tokens (a face
    projector trains), both run in one dtype, and their image encoders and reference nets hold equal weights
    that ``net`` does not train: then one encoding serves both, with nothing changed but the time it takes."""
    if other is None or has_face_tokens(net) or has_face_tokens(other) or net.dtype != other.dtype:
        return False
    for part in ("image_encoder", "reference_unet"):
        mine, theirs = (
            dict(getattr(net, part).named_parameters()),
            dict(getattr(other, part).named_parameters()),
        )
        if mine.keys() != theirs.keys():
            return False
        for name, p in mine.items():
            q = theirs[name]
            if p.requires_grad or p.dtype != q.dtype or p.shape != q.shape:
                return False
            if p is not q and not torch.equal(p, q):  # the EMA target shares the frozen encoders themselves
                return False
    return True


def has_face_tokens(net: nn.Module | None) -> bool:
    return getattr(net, "face_projector", None) is not None


def needs_faces(student: nn.Module, teacher: nn.Module | None) -> bool:
    """Does a step read face crops? When the student or the teacher (if it is called) has face tokens:
    each network gets the conditioning it has, whatever the method's switches."""
    return has_face_tokens(student) or has_face_tokens(teacher)


def cat_conditioning(conds: list[Conditioning]) -> Conditioning:
    """Stack conditionings along the batch (one student forward for all references: DDP wants one call)."""
    return Conditioning(
        tokens=torch.cat([c.tokens for c in conds]),
        reference=[torch.cat(parts) for parts in zip(*(c.reference for c in conds), strict=True)],
        dropped=False,
    )


@torch.no_grad()
def encode_faces(vae: nn.Module, faces: Tensor) -> Tensor:
    """(B, 3, 256, 256) face crops in [0, 1] -> (B, 4, 32, 32) VAE latents (posterior mean x scaling)."""
    param = next(vae.parameters())
    mean = vae.encode(faces.to(param.device, param.dtype) * 2.0 - 1.0).latent_dist.mean
    return mean * vae.config.scaling_factor


def _references(batch: dict[str, Any], prefixes: list[str], vae: nn.Module | None, faces: bool):
    """(image, latent, face latent | None, face found | None) of the listed references, batch-stacked."""
    image = torch.cat([batch[f"{p}_image"] for p in prefixes])
    latent = torch.cat([batch[f"{p}_latent"] for p in prefixes])
    if not faces:
        return image, latent, None, None
    if vae is None or f"{prefixes[0]}_face" not in batch:
        raise AnimlcmError(
            "distill: a network here has face tokens but the step got no VAE or no face crops; build the "
            "dataset with faces=True and DistillModels with the VAE (trainer.run does)"
        )
    faces_latent = encode_faces(vae, torch.cat([batch[f"{p}_face"] for p in prefixes]))
    found = torch.cat([batch[f"{p}_face_found"] for p in prefixes])
    return image, latent, faces_latent, found


def _encode(net: nn.Module, refs) -> Conditioning:
    image, latent, face, found = refs
    if getattr(net, "face_projector", None) is None:
        face = found = None
    return net.encode_conditioning(image, latent, face, found)


def _draw_w(cfg: DistillConfig, batch_size: int, generator: torch.Generator) -> Tensor:
    if cfg.w_range is not None:
        lo, hi = cfg.w_range
        return lo + (hi - lo) * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return torch.full((batch_size,), float(cfg.w), dtype=torch.float64)


def distill_step(
    batch: dict[str, Any],
    model: nn.Module,
    models: DistillModels,
    cfg: DistillConfig,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step of consistency distillation; returns the total loss and every weighted term (for the log).

    ``model`` is the student as the trainer prepared it (maybe DDP-wrapped): the student's denoiser is called
    through it exactly once, on the references stacked along the batch.
    """
    schedule = models.schedule
    x0 = batch["latents"].float()  # (B, 4, F, h, w) real latents
    b, device = x0.shape[0], x0.device
    temporal = cfg.stage == "temporal"
    pose = batch["pose"]
    abar = schedule.alphas_cumprod(device=device)

    # 1. sample t_{n+k} on the skipping grid and t_n one solver step below it (--no-adjacent: anywhere in
    #    its segment below it); with K segments, also the lower edge s_o of t_{n+k}'s segment that both
    #    student and target map to (DanceLCM eq. 4)
    edges = segment_edges(cfg.segments, cfg.num_ddim_steps) if cfg.segments > 1 else None
    adjacent = cfg.adjacent is not False  # None (a config from before the switch) is the default, True
    pairs = sample_timestep_pairs(
        b, num_ddim_steps=cfg.num_ddim_steps, edges=edges, adjacent=adjacent, generator=generator
    )
    t_start, t_end = pairs.t_start.to(device), pairs.t_end.to(device)
    boundary = pairs.boundary.to(device) if edges is not None else None

    # 2. noise the real latents: x_{t_{n+k}} = sqrt(abar) x0 + sqrt(1 - abar) eps
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
    x_t = add_noise(x0, noise, abar[t_start])

    # 3. conditioning (CLIP tokens, face tokens, reference features), computed ONCE per reference and
    #    shared by target and student (ReferenceLCM), and by the teacher where it has the same inputs; the
    #    student reads all its references in one go. The teacher always gets the conditioning it was trained
    #    with (its face tokens from the face crops, if it has them), whatever the student's switches.
    prefixes = (
        ["ref"]
        + (["ref2"] if cfg.needs_second_reference else [])
        + (["other"] if cfg.needs_other_reference else [])
    )
    teacher = models.teacher if not cfg.teacher_free else None
    if has_face_tokens(models.student):
        refs = _references(batch, prefixes, models.vae, faces=True)
        main_refs = tuple(r[:b] if r is not None else None for r in refs)
    else:  # only the teacher (if any) reads faces: encode its references' crops alone
        refs = _references(batch, prefixes, None, faces=False)
        main_refs = _references(batch, ["ref"], models.vae, faces=has_face_tokens(teacher))
    cond_student = _encode(models.student, refs)  # gradients reach the face projector, if trained
    cond_main = cond_student.select(slice(0, b))
    with torch.no_grad():
        if cfg.share_reference or models.target_same_conditioning:
            cond_target = cond_main.detach()
        else:
            cond_target = _encode(models.target, main_refs)
        cond_teacher = None
        if teacher is not None:
            if (
                cfg.share_reference and models.teacher_shares_conditioning
            ) or models.teacher_same_conditioning:
                cond_teacher = cond_main.detach()
            else:
                cond_teacher = _encode(teacher, main_refs)

    # 4. the teacher's DDIM step t_{n+k} -> t_n with CFG (unconditional branch: pose kept, reference dropped),
    #    or AnimateLCM's teacher-free target from the real latent and the same noise;
    # 5. the EMA target's consistency output at t_n (both inside cd_target, under no_grad)
    guided = cfg.w_range is not None or bool(cfg.w)

    def teacher_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        if guided and cfg.batched_cfg:  # both branches in one call of twice the batch
            both = {k: torch.cat([v, v]) for k, v in pose.items()}
            t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
            out = models.teacher(torch.cat([x, x]), torch.cat([t, t]), both, cond_batched, temporal=temporal)
            out_c, out_u = out.float().chunk(2)
            return out_c, out_u
        out_c = models.teacher(x, t, pose, cond_teacher, temporal=temporal).float()
        if not guided:  # w = 0: x0_c + 0 (x0_c - x0_u), no need for the unconditional call
            return out_c, None
        return out_c, models.teacher(x, t, pose, cond_teacher.uncond(), temporal=temporal).float()

    cond_batched = cond_teacher.with_uncond() if cond_teacher is not None and cfg.batched_cfg else None

    def target_fn(x: Tensor, t: Tensor) -> Tensor:
        return models.target(x, t, pose, cond_target, temporal=temporal).float()

    tgt = cd_target(
        x_t,
        t_start,
        t_end,
        target_fn=target_fn,
        schedule=schedule,
        teacher_fn=None if cond_teacher is None else teacher_fn,
        w=_draw_w(cfg, b, generator).to(device),
        boundary=boundary,
        x0_real=x0,
        noise=noise,
    )

    # 6. the student's consistency output at t_{n+k}, for every reference at once (same x_t, t and pose)
    n_refs = len(prefixes)
    want_aux = bool(cfg.aux_head)
    aux_out: list[Tensor] = []

    def student_fn(x: Tensor, t: Tensor) -> Tensor:
        rep_pose = {k: v.repeat(n_refs, *([1] * (v.ndim - 1))) for k, v in pose.items()}
        out = model(x, t, rep_pose, cond_student, temporal=temporal, return_aux=want_aux)
        if want_aux:
            out, x0_aux = out
            aux_out.append(x0_aux)
        return out.float()

    rep = lambda v: None if v is None else v.repeat(n_refs, *([1] * (v.ndim - 1)))  # noqa: E731
    pred = student_prediction(student_fn, rep(x_t), rep(t_start), schedule, boundary=rep(boundary))
    f_all = pred.f.split(b)
    f_student = f_all[0]

    # 7. losses: CD (+ motion-weighted, + lambda_n), aux head vs real latents, ETA / CoNS, temporal SDM
    mask = batch["motion_mask"][:, 0] > 0.5 if cfg.motion_weight else None
    weights = None
    if cfg.timestep_weighting is not None:
        delta, gamma = cfg.timestep_weighting
        weights = timestep_weight(pairs.index, cfg.num_ddim_steps, delta, gamma).to(device)
    kind, c = cfg.loss, cfg.huber_c
    terms: dict[str, Tensor] = {
        "cd": cd_loss(f_student, tgt.f, kind=kind, c=c, mask=mask, motion_weight=cfg.motion_weight or 0.0,
                      weights=weights)
    }  # fmt: skip
    if want_aux:
        terms["aux"] = aux_loss(aux_out[0][:b].float(), x0, weight=cfg.aux_head, kind=kind, c=c)
    if cfg.eta:
        terms["eta"] = eta_loss(f_student, f_all[1], weight=cfg.eta, kind=kind, c=c)
    if cfg.cons:
        terms["cons"] = cons_loss(f_student, f_all[-1], weight=cfg.cons, margin=cfg.cons_margin)
    if cfg.temporal_sdm:
        sdm = [self_dependency_matrix(frames_as_rows(f)) for f in (f_student, f_all[1])]
        terms["temporal_sdm"] = temporal_sdm_loss(sdm[0], sdm[1], weight=cfg.temporal_sdm)
    loss = torch.stack(list(terms.values())).sum()
    return loss, terms

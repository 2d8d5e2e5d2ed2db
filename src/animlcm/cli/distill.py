"""`animlcm distill`: consistency distillation of a teacher into a few-step student (flags only; the work is
in stages/distill/). Every method switch is a flag, so an ablation is one flag away; flags given explicitly
override the method preset (``--method dancelcm --segments 1`` is DanceLCM without segments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import (
    BatchSizeOpt,
    CacheOpt,
    CheckpointEveryOpt,
    ConfigOpt,
    DryRunOpt,
    FramesOpt,
    FsdpProcessesOpt,
    GpuMemoryOpt,
    GradAccumOpt,
    MaxMinutesOpt,
    MaxStepsOpt,
    MixedPrecisionOpt,
    NumWorkersOpt,
    OptBool,
    OptFloat,
    OptInt,
    OptPath,
    OptStr,
    PreloadOpt,
    PresetOpt,
    ProgressOpt,
    ResumeOpt,
    ZeroProcessesOpt,
)
from animlcm.errors import AnimlcmError


def parse_pair(value: str | None, flag: str) -> tuple[float, float] | None:
    """``"a,b"`` -> ``(a, b)`` for ``--w-range`` / ``--timestep-weighting`` (None when unset)."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise AnimlcmError(
            f"{flag} {value!r}: expected two numbers separated by a comma, e.g. 0.5,2"
        ) from None


def loop_summary(title: str, result, extra: dict[str, str]) -> None:
    """The rich table both training commands print at the end (once: by the main process)."""
    if not getattr(result, "main_process", True):
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in extra.items():
        table.add_row(key, value)
    table.add_row("steps", str(result.steps))
    table.add_row("s / step", f"{result.seconds_per_step:.3f}")
    for key, value in result.last_terms.items():
        table.add_row(f"last {key}", f"{value:.5g}")
    table.add_row("result", str(result.result))
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill(
        cache: CacheOpt = None,
        teacher: Annotated[OptPath, typer.Option("--teacher", help="Teacher model folder.")] = None,
        out: Annotated[
            OptPath, typer.Option("--out", help="Run folder (config, log, checkpoints, student).")
        ] = None,
        stage: Annotated[
            OptStr, typer.Option("--stage", help="spatial (single frames) | temporal (clips).")
        ] = None,
        method: Annotated[
            OptStr, typer.Option("--method", help="lcm | dancelcm | cosec | animatelcm.")
        ] = None,
        init: Annotated[
            OptPath, typer.Option("--init", help="Start from this run's student (the spatial run).")
        ] = None,
        resume: ResumeOpt = False,
        max_steps: MaxStepsOpt = None,
        max_minutes: MaxMinutesOpt = None,
        checkpoint_every: CheckpointEveryOpt = None,
        mixed_precision: MixedPrecisionOpt = None,
        gradient_checkpointing: Annotated[
            OptBool,
            typer.Option(
                "--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory."
            ),
        ] = None,
        batch_size: BatchSizeOpt = None,
        grad_accum: GradAccumOpt = None,
        frames: FramesOpt = None,
        frame_stride: Annotated[
            OptInt, typer.Option("--frame-stride", help="Stride between clip frames.")
        ] = None,
        lr: Annotated[OptFloat, typer.Option("--lr", help="Learning rate (default: the method's).")] = None,
        seed: Annotated[OptInt, typer.Option("--seed", help="Seed of data, noise and timesteps.")] = None,
        num_workers: NumWorkersOpt = None,
        preload: PreloadOpt = None,
        adam_8bit: Annotated[
            OptBool, typer.Option("--adam-8bit/--no-adam-8bit", help="bitsandbytes AdamW8bit.")
        ] = None,
        # base LCD
        num_ddim_steps: Annotated[
            OptInt, typer.Option("--num-ddim-steps", help="N of the skipping grid.")
        ] = None,
        w: Annotated[
            OptFloat, typer.Option("--w", help="Teacher CFG scale w (x0_c + w (x0_c - x0_u)).")
        ] = None,
        w_range: Annotated[
            OptStr, typer.Option("--w-range", help="Draw w from [MIN,MAX] per sample.")
        ] = None,
        ema: Annotated[OptFloat, typer.Option("--ema", help="EMA decay of the target.")] = None,
        adjacent: Annotated[
            OptBool,
            typer.Option(
                "--adjacent/--no-adjacent",
                help="t_n one grid step below t_{n+k} (default) | uniform in its segment (DanceLCM eq. 4).",
            ),
        ] = None,
        loss: Annotated[OptStr, typer.Option("--loss", help="huber (pseudo-Huber) | l2.")] = None,
        huber_c: Annotated[
            OptFloat, typer.Option("--huber-c", help="Pseudo-Huber c (per element; 0.001).")
        ] = None,
        share_reference: Annotated[
            OptBool,
            typer.Option("--share-reference/--no-share-reference", help="ReferenceLCM shared conditioning."),
        ] = None,
        reuse_reference: Annotated[
            OptBool,
            typer.Option(
                "--reuse-reference/--no-reuse-reference",
                help="One reference-net pass per step where target and teacher would match it exactly.",
            ),
        ] = None,
        batched_cfg: Annotated[
            OptBool,
            typer.Option(
                "--batched-cfg/--no-batched-cfg",
                help="The teacher's two CFG passes as one call of twice the batch (reference keys masked).",
            ),
        ] = None,
        share_base: Annotated[
            OptBool,
            typer.Option(
                "--share-base/--no-share-base",
                help="LoRA-only: teacher and EMA target share the student's base network (exact).",
            ),
        ] = None,
        standalone: Annotated[
            OptBool,
            typer.Option(
                "--standalone/--link-teacher",
                help="Self-contained student folder (default: link the parts equal to the teacher's).",
            ),
        ] = None,
        # DanceLCM
        segments: Annotated[OptInt, typer.Option("--segments", help="K segments (1 = plain LCD).")] = None,
        aux_head: Annotated[
            OptFloat, typer.Option("--aux-head", help="lambda_2 of the GT-latent head.")
        ] = None,
        motion_weight: Annotated[
            OptFloat, typer.Option("--motion-weight", help="lambda_1 of the motion loss.")
        ] = None,
        motion_delta: Annotated[
            OptFloat, typer.Option("--motion-delta", help="Recompute masks at this delta.")
        ] = None,
        face_tokens: Annotated[
            OptBool, typer.Option("--face-tokens/--no-face-tokens", help="DanceLCM face tokens.")
        ] = None,
        # CoSeC
        eta: Annotated[OptFloat, typer.Option("--eta", help="phi_1: Equivalent Target Aggregation.")] = None,
        cons: Annotated[
            OptFloat, typer.Option("--cons", help="phi_2: Contrastive Negative Sampling.")
        ] = None,
        cons_margin: Annotated[
            OptFloat, typer.Option("--cons-margin", help="Hinge margin bounding CoNS.")
        ] = None,
        temporal_sdm: Annotated[
            OptFloat, typer.Option("--temporal-sdm", help="lambda of the SDM loss.")
        ] = None,
        # AnimateLCM
        lora_rank: Annotated[
            OptInt, typer.Option("--lora-rank", help="LoRA rank (0 = full weights).")
        ] = None,
        lora_targets: Annotated[
            OptStr,
            typer.Option("--lora-targets", help="all (LCM-LoRA: attention, ff, proj, convs) | attention."),
        ] = None,
        lora_layers: Annotated[
            OptStr,
            typer.Option(
                "--lora-layers", help="spatial (SD blocks) | all (+ motion modules; temporal stage)."
            ),
        ] = None,
        lora_init_strategy: Annotated[
            OptBool,
            typer.Option(
                "--lora-init-strategy/--no-lora-init-strategy", help="LoRA reaches the target by EMA."
            ),
        ] = None,
        timestep_weighting: Annotated[
            OptStr, typer.Option("--timestep-weighting", help="delta,gamma of (1 - delta n/N)^gamma.")
        ] = None,
        teacher_free: Annotated[
            OptBool,
            typer.Option("--teacher-free/--no-teacher-free", help="DDIM target from the real latent."),
        ] = None,
        train_modules: Annotated[OptStr, typer.Option("--train-modules", help="all | motion | lora.")] = None,
        progress: ProgressOpt = True,
        dry_run: DryRunOpt = False,
        gpu_memory: GpuMemoryOpt = None,
        zero_processes: ZeroProcessesOpt = None,
        fsdp_processes: FsdpProcessesOpt = None,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Distill --teacher into a few-step consistency student on --cache (method presets: see README)."""
        from animlcm.config import resolve_config
        from animlcm.stages.distill.config import DistillConfig
        from animlcm.stages.distill.trainer import run

        overrides = dict(
            cache=cache, teacher=teacher, out=out, stage=stage, method=method, init=init,
            resume=resume or None,
            max_steps=max_steps, max_minutes=max_minutes, checkpoint_every=checkpoint_every,
            mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing, batch_size=batch_size, grad_accum=grad_accum,
            num_frames=frames, frame_stride=frame_stride, lr=lr, seed=seed, num_workers=num_workers,
            preload=preload,
            adam_8bit=adam_8bit, num_ddim_steps=num_ddim_steps, w=w, w_range=parse_pair(w_range, "--w-range"),
            ema=ema, adjacent=adjacent, loss=loss, huber_c=huber_c, share_reference=share_reference,
            reuse_reference=reuse_reference, batched_cfg=batched_cfg, share_base=share_base,
            standalone=standalone,
            segments=segments,
            aux_head=aux_head, motion_weight=motion_weight, motion_delta=motion_delta,
            face_tokens=face_tokens,
            eta=eta, cons=cons, cons_margin=cons_margin, temporal_sdm=temporal_sdm, lora_rank=lora_rank,
            lora_targets=lora_targets, lora_layers=lora_layers, lora_init_strategy=lora_init_strategy,
            timestep_weighting=parse_pair(timestep_weighting, "--timestep-weighting"),
            teacher_free=teacher_free,
            train_modules=train_modules, progress=None if progress else False,
        )  # fmt: skip
        cfg = resolve_config(DistillConfig, preset, config, overrides)
        if dry_run:
            from animlcm.stages.distill.memory import plan_distill, print_plan

            print_plan(plan_distill(cfg, zero_processes, fsdp_processes), gpu_memory)
            return
        result = run(cfg)
        loop_summary(
            f"distill {cfg.method} / {cfg.stage}",
            result,
            {"run": str(result.out), "log": str(Path(result.out) / "log.jsonl")},
        )

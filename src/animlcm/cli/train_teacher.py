"""`animlcm train-teacher`: ordinary diffusion training of a teacher on a cache (flags only; the work is in
stages/distill/teacher_training.py, on the same loop as `animlcm distill`)."""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    @app.command("train-teacher")
    def train_teacher(
        cache: CacheOpt = None,
        out: Annotated[
            OptPath, typer.Option("--out", help="Run folder; the teacher lands in OUT/teacher.")
        ] = None,
        init: Annotated[OptPath, typer.Option("--init", help="Start from this teacher folder.")] = None,
        stage: Annotated[
            OptStr, typer.Option("--stage", help="spatial (frames) | temporal (motion modules).")
        ] = None,
        resume: ResumeOpt = False,
        max_steps: MaxStepsOpt = None,
        max_minutes: MaxMinutesOpt = None,
        checkpoint_every: CheckpointEveryOpt = None,
        batch_size: BatchSizeOpt = None,
        grad_accum: GradAccumOpt = None,
        frames: FramesOpt = None,
        lr: Annotated[OptFloat, typer.Option("--lr", help="Learning rate.")] = None,
        seed: Annotated[OptInt, typer.Option("--seed", help="Seed of weights, data and noise.")] = None,
        cond_drop: Annotated[
            OptFloat, typer.Option("--cond-drop", help="P(drop the reference) for CFG.")
        ] = None,
        schedule: Annotated[
            OptStr, typer.Option("--schedule", help="Fresh teachers: zero_snr_v | sd15.")
        ] = None,
        mixed_precision: MixedPrecisionOpt = None,
        gradient_checkpointing: Annotated[
            OptBool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Save memory.")
        ] = None,
        num_workers: NumWorkersOpt = None,
        preload: PreloadOpt = None,
        progress: ProgressOpt = True,
        dry_run: DryRunOpt = False,
        gpu_memory: GpuMemoryOpt = None,
        zero_processes: ZeroProcessesOpt = None,
        fsdp_processes: FsdpProcessesOpt = None,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Train a teacher (v-prediction, zero-SNR, reference dropped ~10% of steps) with the distill loop."""
        from animlcm.cli.distill import loop_summary
        from animlcm.config import resolve_config
        from animlcm.stages.distill.teacher_training import TeacherTrainConfig, run

        overrides = dict(
            cache=cache, out=out, init=init, stage=stage, resume=resume or None, max_steps=max_steps,
            max_minutes=max_minutes,
            checkpoint_every=checkpoint_every, batch_size=batch_size, grad_accum=grad_accum,
            num_frames=frames,
            lr=lr, seed=seed, cond_drop=cond_drop, schedule=schedule, mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing, num_workers=num_workers, preload=preload,
            progress=None if progress else False,
        )  # fmt: skip
        cfg = resolve_config(TeacherTrainConfig, preset, config, overrides)
        if dry_run:
            from animlcm.stages.distill.memory import plan_teacher, print_plan

            print_plan(plan_teacher(cfg, zero_processes, fsdp_processes), gpu_memory)
            return
        result = run(cfg)
        loop_summary(f"train-teacher / {cfg.stage}", result, {"run": str(result.out)})

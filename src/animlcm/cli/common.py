"""Options shared by several subcommands: ``--preset``, ``--config``, the training-loop flags of `distill`
and `train-teacher`, the sampling flags of `render` and `eval`, and the ``Optional`` aliases typer needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# noqa: UP045 throughout: typer needs Optional on Python 3.10
OptFloat = Optional[float]  # noqa: UP045
OptInt = Optional[int]  # noqa: UP045
OptStr = Optional[str]  # noqa: UP045
OptBool = Optional[bool]  # noqa: UP045
OptPath = Optional[Path]  # noqa: UP045

PresetOpt = Annotated[
    str, typer.Option("--preset", help="Size preset: tiny (CPU, tests) or sd15 (real size).")
]
ConfigOpt = Annotated[
    OptPath,
    typer.Option("--config", help="YAML file of settings; command-line flags override it.", dir_okay=False),
]

# --- training loop (`distill`, `train-teacher`)
CacheOpt = Annotated[OptPath, typer.Option("--cache", help="Cache folder from `animlcm extract`.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
MaxStepsOpt = Annotated[OptInt, typer.Option("--max-steps", help="Optimizer steps in total.")]
MaxMinutesOpt = Annotated[
    OptFloat,
    typer.Option("--max-minutes", help="Wall-clock budget: stop and write the result after N minutes."),
]
CheckpointEveryOpt = Annotated[OptInt, typer.Option("--checkpoint-every", help="Checkpoint every N steps.")]
BatchSizeOpt = Annotated[OptInt, typer.Option("--batch-size", help="Samples per process and micro-step.")]
GradAccumOpt = Annotated[OptInt, typer.Option("--grad-accum", help="Gradient accumulation steps.")]
FramesOpt = Annotated[OptInt, typer.Option("--frames", help="Frames per clip (temporal stage).")]
MixedPrecisionOpt = Annotated[OptStr, typer.Option("--mixed-precision", help="no | fp16 | bf16.")]
NumWorkersOpt = Annotated[OptInt, typer.Option("--num-workers", help="DataLoader workers.")]
PreloadOpt = Annotated[
    OptBool, typer.Option("--preload/--no-preload", help="Read the whole cache into memory first.")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the run's memory plan (meta device, no weights read) and stop."),
]
ZeroProcessesOpt = Annotated[
    OptInt,
    typer.Option(
        "--zero-processes", min=1,
        help="With --dry-run: plan one process of a DeepSpeed ZeRO-2 run over N processes "
        "(configs/accelerate/zero2.yaml).",
    ),
]  # fmt: skip
FsdpProcessesOpt = Annotated[
    OptInt,
    typer.Option(
        "--fsdp-processes", min=1,
        help="With --dry-run: plan one process of an FSDP run over N processes "
        "(configs/accelerate/fsdp.yaml).",
    ),
]  # fmt: skip
GpuMemoryOpt = Annotated[
    OptFloat, typer.Option("--gpu-memory", help="With --dry-run: say whether the plan fits N GB.")
]

# --- sampling (`render`, `eval`)
SeedOpt = Annotated[OptInt, typer.Option("--seed")]
MaxFramesOpt = Annotated[OptInt, typer.Option("--max-frames")]
DeviceOpt = Annotated[OptStr, typer.Option("--device", help="auto | cpu | cuda[:N]")]
DtypeOpt = Annotated[OptStr, typer.Option("--dtype", help="auto | fp32 | fp16 | bf16")]

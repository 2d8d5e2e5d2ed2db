"""``animlcm export``: write a student in a teacher's own checkpoint layout (flags only; the work is in
``animlcm.interop.exporter``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptInt, OptStr, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        student: Annotated[Path, typer.Argument(help="Student folder (animlcm distill) or teacher folder.")],
        out: Annotated[Path, typer.Option("--out", help="Folder to write the checkpoint files into.")],
        fmt: Annotated[
            OptStr,
            typer.Option("--format", help="auto (the imported teacher's; default), moore-aa or champ."),
        ] = None,
        steps: Annotated[
            OptInt,
            typer.Option(
                "--steps", help="Sampling steps written to the README/scheduler config (default 4)."
            ),
        ] = None,
        dtype: Annotated[
            OptStr,
            typer.Option("--dtype", help="auto (the imported files' dtype), float32, float16 or bfloat16."),
        ] = None,
        file_format: Annotated[
            OptStr,
            typer.Option("--file-format", help="pth (what the original scripts load) or safetensors."),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --out folder.")
        ] = False,
        preset: PresetOpt = "sd15",
        config: ConfigOpt = None,
    ) -> None:
        """Write a student (LoRA merged) as Moore-AnimateAnyone / Champ files, README with 4-step settings."""
        from rich.console import Console

        from animlcm.config import resolve_config
        from animlcm.interop.exporter import ExportConfig, run

        overrides = dict(
            format=fmt, student=student, out=out, steps=steps, dtype=dtype, file_format=file_format,
            overwrite=overwrite or None,
        )  # fmt: skip
        cfg = resolve_config(ExportConfig, preset, config, overrides)
        summary = run(cfg)
        console = Console()
        for name, n in summary.files.items():
            console.print(f"  {name}: {n} tensors ({summary.dtype})")
        merged = " (LoRA merged)" if summary.merged_lora else ""
        console.print(
            f"[green]exported[/] {summary.format}{merged} to {summary.out}; "
            f"sample at timesteps {summary.timesteps}, "
            "consistency sampling, no CFG (see README.md there)"
        )

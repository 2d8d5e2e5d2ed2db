"""`animlcm eval`: quality and speed of a student on cached videos (flags only; work in stages/evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import (
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    MaxFramesOpt,
    OptFloat,
    OptInt,
    OptPath,
    PresetOpt,
    SeedOpt,
)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def evaluate(
        model: Annotated[
            OptPath, typer.Option("--model", help="Student run folder (or a teacher folder).")
        ] = None,
        cache: Annotated[
            OptPath, typer.Option("--cache", help="Cache folder of test videos (animlcm extract).")
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", help="Folder for metrics.json, metrics.md, quality.png.")
        ] = Path("eval"),
        sweep: Annotated[
            bool, typer.Option("--sweep", help="Student at 1,2,4,8 steps; teacher at 4,25,50.")
        ] = False,
        teacher: Annotated[
            OptPath, typer.Option("--teacher", help="Teacher folder (default: the run's).")
        ] = None,
        steps: Annotated[OptInt, typer.Option("--steps", help="Student steps without --sweep.")] = None,
        cfg_scale: Annotated[OptFloat, typer.Option("--cfg", help="Teacher CFG scale.")] = None,
        lpips_weights: Annotated[
            OptPath, typer.Option("--lpips-weights", help="LPIPS-AlexNet safetensors: adds an LPIPS column.")
        ] = None,
        fid_model: Annotated[
            OptPath, typer.Option("--fid-model", help="TorchScript inception (clean-fid): adds FID.")
        ] = None,
        fvd_model: Annotated[
            OptPath, typer.Option("--fvd-model", help="TorchScript I3D (StyleGAN-V): adds FVD.")
        ] = None,
        vs_teacher: Annotated[
            OptInt,
            typer.Option("--vs-teacher", help="Add PSNR vs the teacher's N-step render from the same noise."),
        ] = None,
        vs_teacher_cfg: Annotated[
            OptFloat,
            typer.Option("--vs-teacher-cfg", help="Its CFG (default: 1 + the student's distill w)."),
        ] = None,
        reference_cache: Annotated[
            OptPath,
            typer.Option("--reference-cache", help="Keep the --vs-teacher renders here for later evals."),
        ] = None,
        max_videos: Annotated[OptInt, typer.Option("--max-videos")] = None,
        max_frames: MaxFramesOpt = None,
        seed: SeedOpt = None,
        window: Annotated[OptInt, typer.Option("--window")] = None,
        overlap: Annotated[OptInt, typer.Option("--overlap")] = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Render each cached video from its first frame and poses; L1/PSNR/SSIM vs the real frames; speed."""
        from rich.console import Console
        from rich.markdown import Markdown

        from animlcm.config import resolve_config
        from animlcm.stages.evaluate import EvalConfig, run

        overrides = dict(
            model=model, cache=cache, out=out, sweep=sweep or None, teacher=teacher, steps=steps,
            cfg=cfg_scale, lpips_weights=lpips_weights, fid_model=fid_model, fvd_model=fvd_model,
            max_videos=max_videos, max_frames=max_frames,
            vs_teacher=vs_teacher, vs_teacher_cfg=vs_teacher_cfg, reference_cache=reference_cache,
            seed=seed, window=window, overlap=overlap, device=device, dtype=dtype,
        )  # fmt: skip
        result = run(resolve_config(EvalConfig, preset, config, overrides))
        console = Console()
        console.print(Markdown(result.table.read_text()))
        if result.skipped_steps:
            console.print(
                f"[yellow]left out[/] the student at {', '.join(map(str, result.skipped_steps))} steps: "
                "it was distilled with more segments and samples in one step per segment at least"
            )
        console.print(
            f"[green]wrote[/] {result.metrics_json}, {result.table}, {result.plot} "
            f"({len(result.videos)} videos)"
        )

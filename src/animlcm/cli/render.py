"""`animlcm render`: animate a reference image with a pose sequence (flags only; work in stages/render)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import (
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    MaxFramesOpt,
    OptBool,
    OptFloat,
    OptInt,
    OptPath,
    OptStr,
    PresetOpt,
    SeedOpt,
)


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render(
        reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
        pose: Annotated[
            OptStr,
            typer.Option(
                "--pose",
                help="RGB video, skeleton video, folder of skeleton images, or CACHE_DIR:video_name. "
                "Default: the built-in dance.",
            ),
        ] = None,
        model: Annotated[
            OptPath,
            typer.Option(
                "--model", help="Student run folder (distill) or teacher folder. Default: built-in student."
            ),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", help="Output mp4; the preview goes to OUT.preview.png.")
        ] = Path("out.mp4"),
        steps: Annotated[OptInt, typer.Option("--steps", help="Sampling steps (1-8 student).")] = None,
        teacher: Annotated[
            bool, typer.Option("--teacher", help="Teacher DDIM + CFG sampler instead.")
        ] = False,
        cfg_scale: Annotated[OptFloat, typer.Option("--cfg", help="CFG scale for --teacher.")] = None,
        segments: Annotated[
            OptInt, typer.Option("--segments", help="Walk K segment edges (segmented students).")
        ] = None,
        deterministic: Annotated[
            bool, typer.Option("--deterministic", help="No fresh noise between consistency steps.")
        ] = False,
        seed: SeedOpt = None,
        window: Annotated[OptInt, typer.Option("--window", help="Frames per context window.")] = None,
        overlap: Annotated[OptInt, typer.Option("--overlap", help="Frames shared by windows.")] = None,
        max_frames: MaxFramesOpt = None,
        frames_dir: Annotated[
            OptPath, typer.Option("--frames-dir", help="Also write one PNG per frame here.")
        ] = None,
        align: Annotated[
            OptBool,
            typer.Option(
                "--align/--no-align", help="Scale/shift the driving skeleton onto the reference person."
            ),
        ] = None,
        random: Annotated[
            bool,
            typer.Option("--random", help="Random weights at the preset's size (timing without weights)."),
        ] = False,
        pose_kind: Annotated[
            OptStr, typer.Option("--pose-kind", help="auto | skeleton | rgb (how to read a video).")
        ] = None,
        height: Annotated[OptInt, typer.Option("--height")] = None,
        width: Annotated[OptInt, typer.Option("--width")] = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Animate REFERENCE with a pose sequence in a few consistency steps; writes mp4 + preview PNG."""
        from rich.console import Console

        from animlcm.config import resolve_config
        from animlcm.stages.render.config import RenderConfig

        overrides = dict(
            reference=reference,
            pose=pose,
            model=model,
            out=out,
            steps=steps,
            teacher=teacher or None,
            cfg=cfg_scale,
            segments=segments,
            deterministic=deterministic or None,
            seed=seed,
            window=window,
            overlap=overlap,
            max_frames=max_frames,
            frames_dir=frames_dir,
            align=align,
            random=random or None,
            pose_kind=pose_kind,
            height=height,
            width=width,
            device=device,
            dtype=dtype,
        )
        from animlcm.stages.render.domain import builtin_model_note

        cfg = resolve_config(RenderConfig, preset, config, overrides)
        from animlcm.stages.render.precheck import check_all

        check_all(cfg)  # every check that needs no model, before torch loads: a bad flag costs a second
        console = Console()
        note = builtin_model_note(cfg)
        if note is not None:  # before the render: the user learns it without waiting
            console.print(note, style="yellow", highlight=False, markup=False, soft_wrap=True)
        from animlcm.stages.render.videoio import image_has_alpha

        if cfg.reference is not None and image_has_alpha(cfg.reference):
            console.print(
                f"{cfg.reference}: transparent pixels are rendered as a white background",
                style="yellow", highlight=False, markup=False, soft_wrap=True,
            )  # fmt: skip
        from animlcm.stages.render.run import run

        result = run(cfg)
        console.print(
            f"[green]wrote[/] {result.video} ({result.num_frames} frames, {result.fps:g} fps, "
            f"{result.height}x{result.width}) and {result.preview}"
        )
        console.print(
            f"{result.sampler}, {result.steps} steps: {result.seconds_per_frame:.3f} s/frame "
            f"(conditioning {result.timings['conditioning']:.2f} s, "
            f"denoising {result.timings['denoising']:.2f} s, "
            f"decode {result.timings['decode']:.2f} s)",
            highlight=False,
        )

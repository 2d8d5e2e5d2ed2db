"""`animlcm render`: animate a reference image with a pose sequence (flags only; work in stages/render)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from animlcm.cli.common import ConfigOpt, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render(
        reference: Annotated[Path, typer.Argument(help="Reference image (the person to animate).")],
        pose: Annotated[
            Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
            typer.Option(
                "--pose",
                help="RGB video, skeleton video, folder of skeleton images, or CACHE_DIR:video_name. "
                "Default: the built-in dance.",
            ),
        ] = None,
        model: Annotated[
            Optional[Path],  # noqa: UP045
            typer.Option(
                "--model", help="Student run folder (distill) or teacher folder. Default: built-in student."
            ),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", help="Output mp4; the preview goes to OUT.preview.png.")
        ] = Path("out.mp4"),
        steps: Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (1-8 student).")] = None,  # noqa: UP045
        teacher: Annotated[
            bool, typer.Option("--teacher", help="Teacher DDIM + CFG sampler instead.")
        ] = False,
        cfg_scale: Annotated[Optional[float], typer.Option("--cfg", help="CFG scale for --teacher.")] = None,  # noqa: UP045
        segments: Annotated[
            Optional[int], typer.Option("--segments", help="Walk K segment edges (segmented students).")  # noqa: UP045
        ] = None,
        deterministic: Annotated[
            bool, typer.Option("--deterministic", help="No fresh noise between consistency steps.")
        ] = False,
        seed: Annotated[Optional[int], typer.Option("--seed")] = None,  # noqa: UP045
        window: Annotated[Optional[int], typer.Option("--window", help="Frames per context window.")] = None,  # noqa: UP045
        overlap: Annotated[Optional[int], typer.Option("--overlap", help="Frames shared by windows.")] = None,  # noqa: UP045
        max_frames: Annotated[Optional[int], typer.Option("--max-frames")] = None,  # noqa: UP045
        frames_dir: Annotated[
            Optional[Path], typer.Option("--frames-dir", help="Also write one PNG per frame here.")  # noqa: UP045
        ] = None,
        align: Annotated[
            Optional[bool],  # noqa: UP045
            typer.Option(
                "--align/--no-align", help="Scale/shift the driving skeleton onto the reference person."
            ),
        ] = None,
        random: Annotated[
            bool,
            typer.Option("--random", help="Random weights at the preset's size (timing without weights)."),
        ] = False,
        pose_kind: Annotated[
            Optional[str], typer.Option("--pose-kind", help="auto | skeleton | rgb (how to read a video).")  # noqa: UP045
        ] = None,
        height: Annotated[Optional[int], typer.Option("--height")] = None,  # noqa: UP045
        width: Annotated[Optional[int], typer.Option("--width")] = None,  # noqa: UP045
        device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda[:N]")] = None,  # noqa: UP045
        dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto | fp32 | fp16 | bf16")] = None,  # noqa: UP045
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Animate REFERENCE with a pose sequence in a few consistency steps; writes mp4 + preview PNG."""
        from rich.console import Console

        from animlcm.config import resolve_config
        from animlcm.stages.render import RenderConfig, run

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
        cfg = resolve_config(RenderConfig, preset, config, overrides)
        result = run(cfg)
        console = Console()
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

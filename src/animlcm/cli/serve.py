"""`animlcm serve`: the web page over render (flags only; work in animlcm.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from animlcm.cli.common import PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: Annotated[
            Optional[list[Path]],  # noqa: UP045 - typer needs Optional on Python 3.10
            typer.Option(
                "--model",
                help="Student run folder or teacher folder to offer; repeat for several. Default: the "
                "built-in student.",
            ),
        ] = None,
        host: Annotated[
            str, typer.Option("--host", help="Address to listen on; beyond 127.0.0.1 anyone can reach it.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port")] = 7860,
        share: Annotated[
            bool, typer.Option("--share", help="Also make a public gradio.live link (off by default).")
        ] = False,
        concurrency: Annotated[
            int, typer.Option("--concurrency", help="Renders at once; the others wait in the queue.")
        ] = 1,
        max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload.")] = 200.0,
        max_video_seconds: Annotated[
            float, typer.Option("--max-video-seconds", help="Longest motion video.")
        ] = 120.0,
        max_frames: Annotated[int, typer.Option("--max-frames", help="Most frames a render may have.")] = 240,
        preset: PresetOpt = "tiny",
    ) -> None:
        """Open a web page (and API) to animate photos: upload, pick a motion, render, download."""
        from rich.console import Console

        from animlcm.config import check_preset
        from animlcm.serve.config import ServeConfig
        from animlcm.serve.launch import serve as run_server
        from animlcm.serve.launch import warnings_for
        from animlcm.serve.limits import UploadLimits
        from animlcm.serve.models import model_choices

        cfg = ServeConfig(
            models=model_choices(list(model or [])),
            preset=check_preset(preset),
            host=host,
            port=port,
            share=share,
            concurrency=concurrency,
            limits=UploadLimits(
                max_file_mb=max_upload_mb, max_video_seconds=max_video_seconds, max_frames=max_frames
            ),
        )
        console = Console(stderr=True)
        for line in warnings_for(cfg):
            console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
        run_server(cfg)

"""`animlcm inspect`: what a cache holds, per video (flags only; the work is in cache/summary.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        cache: Annotated[
            Path, typer.Argument(help="Cache folder written by `animlcm extract`.", file_okay=False)
        ],
        as_json: Annotated[
            bool, typer.Option("--json", help="Print one JSON object instead of a table.")
        ] = False,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Per video: status, frames, fps, shapes, pose/face detection rates, motion-mask coverage, maps."""
        import json

        from rich.console import Console
        from rich.table import Table

        from animlcm.cache.summary import summarize

        # --preset/--config are accepted for uniformity; inspecting needs no settings.
        data = summarize(cache)
        if as_json:
            typer.echo(json.dumps(data, indent=1))
            return

        def pct(v: float | None) -> str:
            return "" if v is None else f"{v:.0%}"

        table = Table(title=f"cache {cache}")
        for col in ("video", "status", "frames", "fps", "latents", "pose", "face", "motion", "maps"):
            table.add_column(col, no_wrap=col != "maps")
        for v in data["videos"]:
            ok = v["status"] == "ok"
            table.add_row(
                v["name"],
                f"[{'green' if ok else 'red'}]{v['status']}[/]",
                str(v["frames"]),
                f"{v['fps']:g}" if v["fps"] else "",
                "x".join(map(str, v["latent_shape"])) if v["latent_shape"] else "",
                pct(v["pose_rate"]),
                pct(v["face_rate"]),
                pct(v["motion_coverage"]),
                ", ".join(v["maps"]),
            )
        console = Console(width=max(Console().width, 120))  # pipes default to 80 columns: too narrow
        console.print(table)
        for v in data["videos"]:
            if v["error"]:
                console.print(f"[red]{v['name']}[/]: {v['error']}", highlight=False, soft_wrap=True)

"""``animlcm convert``: rewrite a model folder in today's layout (flags only; the work is in
``animlcm.models.convert``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import OptStr


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert(
        src: Annotated[Path, typer.Argument(help="A teacher or student folder (any layout animlcm wrote).")],
        out: Annotated[Path, typer.Argument(help="The new folder to write (never an existing one).")],
        teacher: Annotated[
            Path | None,
            typer.Option(
                "--teacher", help="Students: the teacher to link to (default: the one the student records)."
            ),
        ] = None,
        standalone: Annotated[
            bool,
            typer.Option("--standalone", help="Full students: store every part (no links to the teacher)."),
        ] = False,
        dtype: Annotated[
            OptStr,
            typer.Option("--dtype", help="Cast the network: float32, float16, bfloat16 (default: keep)."),
        ] = None,
        relative_links: Annotated[
            bool,
            typer.Option(
                "--relative-links", help="Record links relative only (a pair that always moves together)."
            ),
        ] = False,
    ) -> None:
        """Rewrite SRC as OUT in the diffusers layout, weights unchanged (checked), links relative."""
        from rich.console import Console

        from animlcm.cli.teacher import _print_info
        from animlcm.models.convert import convert_folder

        console = Console()
        with console.status(f"converting {src}..."):
            result = convert_folder(
                src,
                out,
                teacher=teacher,
                standalone=standalone,
                dtype=dtype,
                absolute_links=not relative_links,
            )
        linked = f"; linked to {result.teacher}: {', '.join(result.shared)}" if result.shared else ""
        size = f"{result.bytes_written / 1e6:.1f} MB"
        console.print(
            f"[green]wrote[/] {result.kind} folder {result.out} ({size}{linked}); "
            "it loads back to the source's weights exactly",
            highlight=False,
        )
        _print_info(result.out, console)

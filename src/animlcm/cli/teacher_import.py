"""``animlcm teacher import``: a Moore-AnimateAnyone or Champ checkpoint folder -> a teacher folder.

Adds the ``import`` command to the ``teacher`` sub-app (flags only; the work is in
``animlcm.interop.importer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptStr, PresetOpt

Spec = OptStr


def import_cmd(
    weights: Annotated[
        Path,
        typer.Option("--weights", help="Folder with the teacher's .pth/.safetensors files.", file_okay=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="Teacher folder to write.", file_okay=False)],
    fmt: Annotated[
        Spec,
        typer.Option(
            "--format", help="auto (from the files; default), moore-aa (Moore-AnimateAnyone) or champ."
        ),
    ] = None,
    base: Annotated[
        Spec, typer.Option("--base", help="Stable Diffusion 1.5 folder or hub id: UNet config and VAE.")
    ] = None,
    image_encoder: Annotated[
        Spec,
        typer.Option("--image-encoder", help="CLIP image encoder folder or hub id (sd-image-variations)."),
    ] = None,
    vae: Annotated[
        Spec, typer.Option("--vae", help="VAE folder or hub id, if not the one in --base.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    preset: PresetOpt = "sd15",
    config: ConfigOpt = None,
) -> None:
    """Import public Moore-AnimateAnyone / Champ weights as a teacher (strict: every tensor checked)."""
    from rich.console import Console

    from animlcm.config import resolve_config
    from animlcm.interop.importer import ImportConfig, run

    overrides = dict(
        format=fmt, weights=weights, out=out, base=base, image_encoder=image_encoder, vae=vae,
        overwrite=overwrite or None,
    )  # fmt: skip
    cfg = resolve_config(ImportConfig, preset, config, overrides)
    console = Console()
    summary = run(cfg)
    files = ", ".join(f"{name} ({n})" for name, n in summary.files.items())
    console.print(f"[green]imported[/] {summary.format}: {files}")
    console.print(
        f"{summary.loaded} tensors loaded, {summary.position_tables} position tables checked, "
        f"{summary.extras} known extras kept for export; pose maps: {', '.join(summary.maps)}"
    )
    console.print(f"[green]wrote[/] teacher folder {summary.out}")
    try:  # the same table as `animlcm teacher info`
        from animlcm.cli.teacher import _print_info

        _print_info(summary.out, console)
    except ImportError:
        pass


def register(app: typer.Typer) -> None:
    """Add ``import`` to the ``teacher`` sub-app (``app``, the root app, is not needed)."""
    from animlcm.cli.teacher import teacher_app

    teacher_app.command("import")(import_cmd)

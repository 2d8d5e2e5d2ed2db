"""`animlcm smpl`: SMPL model files for `extract --smpl-model DIR` (flags only; the work is in stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptStr, PresetOpt

smpl_app = typer.Typer(
    name="smpl",
    help="SMPL model files for the depth/normal/semantic guidance maps (`extract --smpl-model DIR`).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(smpl_app)


@smpl_app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="Official SMPL pickle (SMPL_NEUTRAL.pkl, basicModel_*.pkl).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (DIR/smpl/SMPL_<GENDER>.npz).")],
    gender: Annotated[
        OptStr,
        typer.Option("--gender", help="neutral|male|female (default: from the file name)."),
    ] = None,
    preset: PresetOpt = "tiny",
    config: ConfigOpt = None,
) -> None:
    """Rewrite a SMPL pickle without chumpy: DIR/smpl/SMPL_<GENDER>.npz (+ a plain-numpy .pkl for smplx).

    The pickle is read with a restricted unpickler: only numpy arrays, chumpy arrays and scipy sparse
    matrices are rebuilt, nothing named in the file is ever imported or called.
    """
    from rich.console import Console

    from animlcm.stages.extract.smpl.convert import convert_model

    # --preset/--config are accepted for uniformity; converting needs no settings.
    written = convert_model(src, out, gender)
    console = Console()
    for path in written:
        console.print(f"wrote [bold]{path}[/]")
    console.print(f"use it with: animlcm extract VIDEO --smpl-model {out}")


@smpl_app.command("test-model")
def test_model(
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (DIR/smpl/SMPL_NEUTRAL.npz).")],
    preset: PresetOpt = "tiny",
    config: ConfigOpt = None,
) -> None:
    """Write a small synthetic SMPL-format humanoid (24 joints, ~630 vertices) for tests and demos.

    It is not SMPL: maps made with it show a mannequin, not a body shape. Use the real SMPL for teachers.
    """
    from rich.console import Console

    from animlcm.stages.extract.smpl.synthetic import write_synthetic_smpl

    path = write_synthetic_smpl(out)
    Console().print(f"wrote [bold]{path}[/] (synthetic test humanoid; use --smpl-model {out})")

"""`animlcm synth`: write synthetic dancer clips with exact poses (flags only; the work is in synth/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from animlcm.cli.common import ConfigOpt, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Annotated[
            Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
            typer.Option(
                "--out", help="Output folder: idNNN_clipMM.mp4 + .pose.npz, synth.json.", file_okay=False
            ),
        ] = None,
        identities: Annotated[Optional[int], typer.Option("--identities", help="Number of dancers.")] = None,  # noqa: UP045
        clips: Annotated[Optional[int], typer.Option("--clips", help="Clips per dancer.")] = None,  # noqa: UP045
        frames: Annotated[Optional[int], typer.Option("--frames", help="Frames per clip.")] = None,  # noqa: UP045
        size: Annotated[
            Optional[int], typer.Option("--size", help="Square frame size in pixels (sets height and width).")  # noqa: UP045
        ] = None,
        height: Annotated[
            Optional[int],  # noqa: UP045
            typer.Option("--height", help="Frame height (overrides --size)."),
        ] = None,
        width: Annotated[
            Optional[int],  # noqa: UP045
            typer.Option("--width", help="Frame width (overrides --size)."),
        ] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the whole set.")] = None,  # noqa: UP045
        split: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--split", help="train | heldout (identities and motions train never produces)."),
        ] = None,
        fps: Annotated[Optional[float], typer.Option("--fps", help="Frames per second.")] = None,  # noqa: UP045
        crf: Annotated[Optional[int], typer.Option("--crf", help="H.264 quality (lower is better).")] = None,  # noqa: UP045
        refs: Annotated[
            bool, typer.Option("--refs", help="Also write refs/idNNN.png: each dancer in a neutral pose.")
        ] = False,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Draw synthetic dancers (seeded looks, smooth random dances) into mp4 clips with exact poses."""
        import time

        from rich.console import Console

        from animlcm.config import resolve_config
        from animlcm.synth.config import SynthConfig
        from animlcm.synth.world import run

        overrides = dict(
            out=out,
            identities=identities,
            clips=clips,
            frames=frames,
            height=height if height is not None else size,
            width=width if width is not None else size,
            seed=seed,
            split=split,
            fps=fps,
            crf=crf,
            refs=refs or None,
        )
        cfg = resolve_config(SynthConfig, preset, config, overrides)
        start = time.perf_counter()
        videos = run(cfg)
        Console().print(
            f"[green]wrote[/] {len(videos)} clips ({cfg.identities} identities x {cfg.clips} clips, "
            f"{cfg.frames} frames, {cfg.height}x{cfg.width}, {cfg.split} split, seed {cfg.seed})"
            f" to {cfg.out} in {time.perf_counter() - start:.1f} s",
            highlight=False,
        )

"""`animlcm synth`: write synthetic dancer clips with exact poses (flags only; the work is in synth/)."""

from __future__ import annotations

from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptFloat, OptInt, OptPath, OptStr, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Annotated[
            OptPath,
            typer.Option(
                "--out",
                help="Output folder: idNNN_clipMM.mp4 + .pose.npz + .parts.npz, synth.json.",
                file_okay=False,
            ),
        ] = None,
        identities: Annotated[OptInt, typer.Option("--identities", help="Number of dancers.")] = None,
        clips: Annotated[OptInt, typer.Option("--clips", help="Clips per dancer.")] = None,
        frames: Annotated[OptInt, typer.Option("--frames", help="Frames per clip.")] = None,
        size: Annotated[
            OptInt, typer.Option("--size", help="Square frame size in pixels (sets height and width).")
        ] = None,
        height: Annotated[
            OptInt,
            typer.Option("--height", help="Frame height (overrides --size)."),
        ] = None,
        width: Annotated[
            OptInt,
            typer.Option("--width", help="Frame width (overrides --size)."),
        ] = None,
        seed: Annotated[OptInt, typer.Option("--seed", help="Seed of the whole set.")] = None,
        split: Annotated[
            OptStr,
            typer.Option("--split", help="train | heldout (identities and motions train never produces)."),
        ] = None,
        fps: Annotated[OptFloat, typer.Option("--fps", help="Frames per second.")] = None,
        crf: Annotated[OptInt, typer.Option("--crf", help="H.264 quality (lower is better).")] = None,
        refs: Annotated[
            bool, typer.Option("--refs", help="Also write refs/idNNN.png: each dancer in a neutral pose.")
        ] = False,
        jobs: Annotated[OptInt, typer.Option("--jobs", help="Processes drawing in parallel.")] = None,
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
            jobs=jobs,
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

"""`animlcm extract`: videos -> resumable HDF5 cache (flags only; the work is in stages/extract/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptFloat, OptInt, OptPath, OptStr, PresetOpt


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract(
        paths: Annotated[list[Path], typer.Argument(help="Video files or folders (searched recursively).")],
        out: Annotated[
            Path, typer.Option("--out", help="Cache folder (created; resumable).", file_okay=False)
        ],
        fps: Annotated[OptFloat, typer.Option("--fps", help="Resample to this frame rate.")] = None,
        max_frames: Annotated[
            OptInt, typer.Option("--max-frames", help="At most this many frames per video.")
        ] = None,
        pose: Annotated[
            OptStr,
            typer.Option(
                "--pose", help="mediapipe (default, embedded) | dwpose | groundtruth (VIDEO.pose.npz)."
            ),
        ] = None,
        dwpose_weights: Annotated[
            OptPath,
            typer.Option(
                "--dwpose-weights", help="Folder with yolox_l.onnx + dw-ll_ucoco_384.onnx.", file_okay=False
            ),
        ] = None,
        detect_size: Annotated[
            OptInt,
            typer.Option(
                "--detect-size", help="Detect pose/faces at this longer side (default: source size)."
            ),
        ] = None,
        motion_delta: Annotated[
            OptFloat, typer.Option("--motion-delta", help="Motion-mask threshold (DanceLCM eq. 6).")
        ] = None,
        vae: Annotated[OptStr, typer.Option("--vae", help="VAE folder or hub id (sd15 needs one).")] = None,
        teacher: Annotated[
            OptPath, typer.Option("--teacher", help="Teacher folder: use its vae/.", file_okay=False)
        ] = None,
        smpl_model: Annotated[
            OptPath,
            typer.Option("--smpl-model", help="SMPL model folder: also write depth/normal/semantic maps."),
        ] = None,
        shard: Annotated[
            OptStr, typer.Option("--shard", help="i/n: process the i-th (0-based) of n slices.")
        ] = None,
        device: Annotated[OptStr, typer.Option("--device", help="auto | cpu | cuda[:N].")] = None,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Retry videos that failed before, even if unchanged.")
        ] = False,
        preset: PresetOpt = "tiny",
        config: ConfigOpt = None,
    ) -> None:
        """Decode videos, detect pose and faces, encode VAE latents and motion masks into a cache folder.

        Exit code 1 when any video failed (the others are still done); 2 for a bad command line.
        """
        from rich.console import Console
        from rich.table import Table

        from animlcm.config import resolve_config
        from animlcm.stages.extract import ExtractConfig, run

        overrides = dict(
            fps=fps, max_frames=max_frames, pose=pose, dwpose_weights=dwpose_weights, detect_size=detect_size,
            motion_delta=motion_delta, vae=vae, teacher=teacher, smpl_model=smpl_model, shard=shard,
            device=device, retry_failed=retry_failed or None,
        )  # fmt: skip
        cfg = resolve_config(ExtractConfig, preset, config, overrides)
        console = Console(width=max(Console().width, 120))  # pipes default to 80 columns: too narrow
        summary = run(cfg, paths, out, console=console)

        table = Table(title=f"extract -> {out}")
        for col in ("video", "status", "frames", "pose rate", "seconds"):
            table.add_column(col, justify="right" if col in ("frames", "pose rate", "seconds") else "left")
        colors = {"ok": "green", "skipped": "cyan", "failed": "red", "failed-earlier": "red"}
        for r in summary.results:
            table.add_row(
                r.name,
                f"[{colors[r.status]}]{r.status}[/]",
                str(r.frames),
                "" if r.pose_rate is None else f"{r.pose_rate:.0%}",
                f"{r.seconds:.1f}" if r.seconds else "",
            )
        console.print(table)
        if summary.failed:
            console.print(f"[bold red]{len(summary.failed)} failed:[/]")
            for r in summary.failed:
                console.print(f"  [red]{r.name}[/]: {r.error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

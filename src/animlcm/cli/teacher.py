"""``animlcm teacher``: make (``init``) and describe (``info``) teacher folders.

The sub-app ``teacher_app`` is public so that other modules can add commands to it (``teacher import``):
``@teacher_app.command("import")`` in their own module, imported before the CLI runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from animlcm.cli.common import ConfigOpt, OptBool, OptInt, OptStr, PresetOpt
from animlcm.errors import AnimlcmError

teacher_app = typer.Typer(
    name="teacher",
    help="Make and inspect teacher folders (the network every later stage loads).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Spec = OptStr


@teacher_app.command("init")
def init_cmd(
    out: Annotated[Path, typer.Option("--out", help="Teacher folder to write.", file_okay=False)],
    preset: PresetOpt = "tiny",
    config: ConfigOpt = None,
    random: Annotated[
        OptBool,
        typer.Option("--random/--no-random", help="sd15: real-size architecture with random weights."),
    ] = None,
    unet: Annotated[Spec, typer.Option("--unet", help="sd15: SD1.5 folder/hub id (its unet/).")] = None,
    motion_adapter: Annotated[
        Spec, typer.Option("--motion-adapter", help="sd15: AnimateDiff MotionAdapter folder/hub id.")
    ] = None,
    vae: Annotated[Spec, typer.Option("--vae", help="VAE folder/hub id (tiny: built-in tiny VAE).")] = None,
    image_encoder: Annotated[
        Spec, typer.Option("--image-encoder", help="sd15: CLIPVisionModelWithProjection folder/hub id.")
    ] = None,
    pose_maps: Annotated[
        Spec,
        typer.Option("--pose-maps", help="Comma-separated guidance maps: skeleton[,depth,normal,semantic]."),
    ] = None,
    face_tokens: Annotated[
        OptBool,
        typer.Option("--face-tokens/--no-face-tokens", help="DanceLCM face tokens after the CLIP token."),
    ] = None,
    aux_head: Annotated[
        OptBool,
        typer.Option("--aux-head/--no-aux-head", help="DanceLCM auxiliary x0 head."),
    ] = None,
    champ_attention: Annotated[
        OptBool,
        typer.Option(
            "--champ-attention/--no-champ-attention", help="Champ guidance-encoder attention layers."
        ),
    ] = None,
    schedule: Annotated[
        Spec, typer.Option("--schedule", help="zero_snr_v (default) or sd15 (epsilon).")
    ] = None,
    widths: Annotated[
        Spec, typer.Option("--widths", help="tiny: UNet block widths, e.g. 64,128 (default 32,64).")
    ] = None,
    heads: Annotated[
        OptInt, typer.Option("--heads", help="tiny: attention heads of the spatial/reference attention.")
    ] = None,
    seed: Annotated[OptInt, typer.Option("--seed", help="Seed of the random weights.")] = None,
    dtype: Annotated[Spec, typer.Option("--dtype", help="Saved dtype: float32, float16, bfloat16.")] = None,
) -> None:
    """Write a teacher folder: --preset tiny (random tiny network), or sd15 from diffusers components."""
    from rich.console import Console

    from animlcm.config import resolve_config
    from animlcm.models.teacher import TeacherInitConfig, init_teacher

    overrides = dict(
        out=out,
        random=random,
        unet=unet,
        motion_adapter=motion_adapter,
        vae=vae,
        image_encoder=image_encoder,
        pose_maps=[m.strip() for m in pose_maps.split(",") if m.strip()] if pose_maps else None,
        face_tokens=face_tokens,
        aux_head=aux_head,
        champ_attention=champ_attention,
        schedule=schedule,
        widths=_ints("--widths", widths),
        heads=heads,
        seed=seed,
        dtype=dtype,
    )
    cfg = resolve_config(TeacherInitConfig, preset, config, overrides)
    console = Console()
    with console.status(f"building the {cfg.preset} teacher{' (random weights)' if cfg.random else ''}..."):
        path = init_teacher(cfg)
    console.print(f"[green]wrote[/] teacher folder {path}")
    _print_info(path, console)


def _ints(flag: str, text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AnimlcmError(f"{flag} {text}: give comma-separated integers, e.g. 64,128") from None


@teacher_app.command("info")
def info_cmd(
    directory: Annotated[Path, typer.Argument(help="A teacher or student folder (or run folder).")],
) -> None:
    """Print a model folder's parts, parameter counts, where each part's weights come from, prediction type
    and noise schedule."""
    from rich.console import Console

    _print_info(directory, Console())


def _print_info(directory: Path, console) -> None:
    from rich.table import Table

    from animlcm.models.io import result_folder
    from animlcm.models.teacher import folder_info

    info = folder_info(result_folder(directory))
    table = Table(title=f"{info.kind} {info.path} (preset {info.preset})")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in info.counts.items():
        table.add_row(part, f"{n / 1e6:,.2f} M" if n >= 1e5 else f"{n:,}")
    table.add_row("[bold]total[/]", f"[bold]{info.total / 1e6:,.2f} M[/]")
    console.print(table)
    where = Table(title=f"where its weights are ({info.layout} layout)")
    where.add_column("component")
    where.add_column("read from")
    for part, source in info.sources.items():
        where.add_row(part, source)
    console.print(where)
    s = info.schedule
    console.print(f"prediction type: [bold]{info.prediction_type}[/]")
    console.print(
        f"schedule: {s.get('beta_schedule')} betas {s.get('beta_start')}..{s.get('beta_end')}, "
        f"zero-SNR {s.get('zero_snr')}, spacing {s.get('timestep_spacing')}, T={s.get('num_train_timesteps')}"
    )
    console.print(
        f"pose maps: {', '.join(info.pose_maps)}; face tokens: {info.face_tokens}; "
        f"aux head: {info.aux_head}; "
        f"LoRA: {info.lora}; VAE: {'yes' if info.vae else 'no'}"
    )
    if info.meta:
        console.print(f"meta: {info.meta}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")

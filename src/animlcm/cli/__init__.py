"""The ``animlcm`` command: a Typer app; each subcommand lives in a module of its own and holds no logic.

Heavy imports (torch, diffusers) happen inside the commands, so ``animlcm --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from animlcm.errors import AnimlcmError

app = typer.Typer(
    name="animlcm",
    help="Distill pose-guided animation models into 1-4 step consistency students, and render with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines ``register(app)``; order is the order of ``animlcm --help``.
COMMAND_MODULES = (
    "synth",
    "extract",
    "inspect",
    "smpl",
    "teacher",
    "teacher_import",
    "train_teacher",
    "distill",
    "render",
    "evaluate",
    "export",
    "serve",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"animlcm.cli.{_name}").register(app)

err_console = Console(stderr=True)


def main() -> None:
    try:
        app()
    except AnimlcmError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)

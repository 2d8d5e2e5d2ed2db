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
    "convert",
    "serve",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"animlcm.cli.{_name}").register(app)

err_console = Console(stderr=True)


def error_line(exc: BaseException) -> str | None:
    """The one line a user sees for ``exc``, or None for a bug (which keeps its traceback for a report)."""
    from animlcm.outputs import disk_errno, disk_error_line

    if isinstance(exc, AnimlcmError):
        return str(exc)
    if isinstance(exc, OSError) and disk_errno(exc) is not None:  # full, read-only or forbidden disk
        return disk_error_line(exc)
    return None


def main() -> None:
    try:
        app()
    except (AnimlcmError, OSError) as exc:
        line = error_line(exc)
        if line is None:
            raise
        from rich.markup import escape  # a path or a list in brackets is text, not a style tag

        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)

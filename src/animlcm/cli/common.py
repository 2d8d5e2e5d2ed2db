"""Options shared by every subcommand (``--preset``, ``--config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

PresetOpt = Annotated[
    str, typer.Option("--preset", help="Size preset: tiny (CPU, tests) or sd15 (real size).")
]
ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
    typer.Option("--config", help="YAML file of settings; command-line flags override it.", dir_okay=False),
]

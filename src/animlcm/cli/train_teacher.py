"""`animlcm train_teacher`: not implemented yet (placeholder so the CLI imports)."""

import typer


def register(app: typer.Typer) -> None:
    pass

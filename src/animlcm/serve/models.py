"""The networks a server offers, loaded once and kept: a render request must not pay the load again."""

from __future__ import annotations

import threading
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.stages.render.config import RenderConfig
from animlcm.stages.render.pipeline import RenderModel

BUILTIN_LABEL = "built-in student (tiny)"


def model_choices(dirs: list[Path]) -> dict[str, Path | None]:
    """Page label -> model folder (None: the built-in student). No ``--model``: the built-in student alone.

    Each folder is checked now, so a typo stops the server at start, not a visitor's render later.
    """
    from animlcm.models.io import result_folder

    if not dirs:
        return {BUILTIN_LABEL: None}
    choices: dict[str, Path | None] = {}
    for d in dirs:
        folder = result_folder(Path(d))
        if not (folder / "animlcm.json").is_file():
            raise AnimlcmError(
                f"--model {d}: no animlcm.json here or in its student/ or teacher/; pass a distill run "
                "folder or a teacher folder"
            )
        label, n = Path(d).resolve().name, 2
        while label in choices:  # two runs both named student/: keep both, numbered
            label, n = f"{Path(d).resolve().name} ({n})", n + 1
        choices[label] = Path(d)
    return choices


class ModelPool:
    """Loaded ``RenderModel``s by (folder, teacher sampler, device, dtype), built with the render stage's own
    ``load_model`` so a server renders with exactly what ``animlcm render`` would load."""

    def __init__(self) -> None:
        self._models: dict[tuple, RenderModel] = {}
        self._lock = threading.Lock()  # two first requests for one model load it once

    def get(self, cfg: RenderConfig) -> RenderModel:
        from animlcm.stages.render.run import load_model

        key = (str(cfg.model), cfg.teacher, cfg.random, cfg.preset, cfg.device, cfg.dtype)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(cfg)
            return self._models[key]

    def __len__(self) -> int:
        return len(self._models)

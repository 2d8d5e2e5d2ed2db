"""The animation network and its components (one definition for teacher, student, render and eval).

Public names are imported lazily (``from animlcm.models import AnimationNetwork``) so that importing the
package stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnimationNetwork": "network",
    "NetworkConfig": "network",
    "Conditioning": "conditioning",
    "parameter_counts": "network",
    "frames_to_batch": "layout",
    "batch_to_frames": "layout",
    "build_network": "presets",
    "tiny_network": "presets",
    "LoadedModel": "io",
    "load_model_folder": "io",
    "save_model_folder": "io",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"animlcm.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'animlcm.models' has no attribute {name!r}")

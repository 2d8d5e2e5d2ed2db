"""animlcm: consistency distillation for pose-guided human image animation."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AnimationPipeline", "AnimationPipelineOutput", "__version__"]


def __getattr__(name: str) -> Any:
    # imported on first use: the CLI starts without torch/diffusers
    if name in ("AnimationPipeline", "AnimationPipelineOutput"):
        from animlcm import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'animlcm' has no attribute {name!r}")

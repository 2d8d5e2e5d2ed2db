"""`animlcm render`: few-step animation of a reference image driven by a pose sequence (DESIGN section 5).

Modules: ``config`` (RenderConfig), ``precheck`` (every check that needs no model), ``sources`` (pose
inputs), ``align`` (pose-to-reference alignment), ``windows`` (long-video context windows), ``pipeline``
(conditioning once, sampler, decode), ``model`` (which weights), ``videoio`` / ``preview`` (files out),
``run`` (the stage).

``run`` and ``RenderResult`` load on first use: they pull in torch and diffusers, which the argument
checks must not wait for.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from animlcm.stages.render.config import RenderConfig

if TYPE_CHECKING:
    from animlcm.stages.render.run import RenderResult, run

__all__ = ["RenderConfig", "RenderResult", "run"]
_LAZY = ("run", "RenderResult")


class _RenderPackage(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module = importlib.import_module(f"{self.__name__}.run")
        value = getattr(module, name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # importing the submodule ``run`` binds it here; the package's ``run`` is the function, as before
        if name == "run" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _RenderPackage

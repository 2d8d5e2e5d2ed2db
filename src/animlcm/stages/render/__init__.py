"""`animlcm render`: few-step animation of a reference image driven by a pose sequence (DESIGN section 5).

Modules: ``config`` (RenderConfig), ``sources`` (pose inputs), ``align`` (pose-to-reference alignment),
``windows`` (long-video context windows), ``pipeline`` (conditioning once, sampler, decode), ``model``
(which weights), ``videoio`` / ``preview`` (files out), ``run`` (the stage).
"""

from animlcm.stages.render.config import RenderConfig
from animlcm.stages.render.run import RenderResult, run

__all__ = ["RenderConfig", "RenderResult", "run"]

"""`animlcm eval`: quality (L1, PSNR, SSIM, optional LPIPS) and speed of a student against the real frames of
cached videos, with step sweeps against the teacher (DESIGN section 6).

Modules: ``config`` (EvalConfig), ``metrics`` (torchmetrics), ``lpips`` (user-supplied weights),
``report`` (metrics.json, markdown table, plot), ``run`` (the stage).
"""

from animlcm.stages.evaluate.config import EvalConfig
from animlcm.stages.evaluate.run import EvalResult, run

__all__ = ["EvalConfig", "EvalResult", "run"]

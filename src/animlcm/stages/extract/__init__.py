"""``animlcm extract``: videos -> pose, skeleton maps, face crops, VAE latents, motion masks in the cache.

Modules, one step each: ``decode`` (decord + output geometry), ``pose`` (backends), ``skeleton`` (layout and
the one drawing routine), ``face``, ``latents``, ``motion`` (DanceLCM eq. 6), ``smpl`` (optional maps),
``run`` (the resumable, shardable loop). torch, mediapipe and h5py load only when used.
"""

# Imported eagerly on purpose: the name ``run`` must be the function, not the submodule of the same name.
from animlcm.stages.extract.config import ExtractConfig
from animlcm.stages.extract.run import ExtractSummary, run

__all__ = ["ExtractConfig", "ExtractSummary", "run"]

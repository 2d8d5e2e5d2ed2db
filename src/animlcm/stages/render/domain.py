"""Honest limits of the built-in model: it has only ever seen the synthetic dancers of ``animlcm synth``.

A reference counts as synthetic when it comes from a synth folder (``synth.json`` beside it or one folder up,
e.g. ``refs/idNNN.png``) or when the poses come from a cache of synthetic clips (``CACHE:name`` whose entry
has body-part labels or ground-truth poses). Anything else, a real photo above all, gets a one-line note.
"""

from __future__ import annotations

from pathlib import Path

from animlcm.stages.render.config import RenderConfig
from animlcm.stages.render.sources import parse_cache_spec

SYNTH_JSON = "synth.json"  # written by `animlcm synth` (animlcm.synth.world)

BUILTIN_WORLD_NOTE = (
    "note: the built-in model knows only the synthetic dancers of `animlcm synth`, so a real photo will not "
    'keep its looks; for real people import a real teacher and distill it (README.md, "`animlcm teacher '
    'import`")'
)


def synthetic_reference(reference: Path, pose: str | None = None) -> bool:
    """True when ``reference`` comes from a synth folder or ``pose`` is a cache entry of a synthetic clip."""
    folder = Path(reference).resolve().parent
    if any((d / SYNTH_JSON).is_file() for d in (folder, folder.parent)):
        return True
    cache = parse_cache_spec(pose) if pose else None
    if cache is None:
        return False
    from animlcm.cache.reader import CacheReader
    from animlcm.errors import AnimlcmError

    root, name = cache
    try:
        with CacheReader(root).open(name) as entry:
            return entry.has_parts or entry.attrs.get("pose_backend") == "groundtruth"
    except AnimlcmError:
        return False  # a bad cache spec: render itself reports it, with its fix


def builtin_model_note(cfg: RenderConfig) -> str | None:
    """The note to print when the built-in model (no ``--model``, no ``--random``) animates a reference that
    is not a synthetic dancer; None otherwise."""
    if cfg.model is not None or cfg.random or cfg.reference is None:
        return None
    return None if synthetic_reference(cfg.reference, cfg.pose) else BUILTIN_WORLD_NOTE

"""The seed space of the synthetic world.

Every random draw comes from a ``numpy`` generator keyed by ``(seed, split, kind, indices...)`` through
``SeedSequence``, so an identity's look depends only on (seed, split, identity index) and a clip's motion and
background only on (seed, split, identity index, clip index). The split is part of the key: the heldout
split draws from streams the train split never touches, so its identities and motions are new ones.
"""

from __future__ import annotations

import numpy as np

from animlcm.errors import AnimlcmError

SPLITS = {"train": 0, "heldout": 1}
_KINDS = {"identity": 1, "motion": 2, "background": 3}


def split_code(split: str) -> int:
    if split not in SPLITS:
        raise AnimlcmError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    return SPLITS[split]


def seed_sequence(seed: int, split: str, kind: str, *indices: int) -> np.random.SeedSequence:
    """The entropy for one kind of draw; ``seed`` must be a non-negative int."""
    if seed < 0:
        raise AnimlcmError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence([seed, split_code(split), _KINDS[kind], *indices])


def generator(seed: int, split: str, kind: str, *indices: int) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, split, kind, *indices))

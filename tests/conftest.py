"""Shared fixtures: the real sample footage, and a scratch folder per test."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SHARED = REAL_DATA.parent.parent


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (sample videos and reference images); skips where the folder is absent."""
    if not (REAL_DATA / "dance_rgb_692x1108.mp4").exists():
        pytest.skip(f"real sample footage not found at {REAL_DATA} (CI has it beside the checkout)")
    return REAL_DATA


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip(f"shared folder not found at {SHARED}")
    return SHARED

"""`animlcm smpl convert`: an official (chumpy) SMPL pickle -> chumpy-free model files in smplx's layout."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl.model import (
    GENDERS,
    REQUIRED_KEYS,
    gender_of,
    load_model_data,
    save_model_npz,
)


def convert_model(src: Path, out_dir: Path, gender: str | None = None) -> list[Path]:
    """Write ``out_dir/smpl/SMPL_<GENDER>.npz`` and ``.pkl`` (plain numpy dict) from ``src``.

    The ``.npz`` is what animlcm reads (no pickle); the ``.pkl`` lets ``smplx.SMPL(model_path=out_dir/smpl)``
    load the model too, since smplx only looks for pickles in a folder. Both hold the SMPL keys only.
    """
    src = Path(src)
    if not src.is_file():
        raise AnimlcmError(
            f"{src}: file not found; give the SMPL .pkl downloaded from https://smpl.is.tue.mpg.de"
        )
    gender = (gender or gender_of(src)).upper()
    if gender not in GENDERS:
        raise AnimlcmError(
            f"--gender {gender.lower()}: choose one of {', '.join(g.lower() for g in GENDERS)}"
        )
    data = load_model_data(src)
    data = {k: v for k, v in data.items() if k in (*REQUIRED_KEYS, "landmark_vertex_ids")}
    folder = Path(out_dir) / "smpl"
    npz = save_model_npz(data, folder / f"SMPL_{gender}.npz")
    pkl = folder / f"SMPL_{gender}.pkl"
    tmp = pkl.with_name(pkl.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump({k: np.ascontiguousarray(v) for k, v in data.items()}, fh, protocol=4)
    os.replace(tmp, pkl)
    return [npz, pkl]

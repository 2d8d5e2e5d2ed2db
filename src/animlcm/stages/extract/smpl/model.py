"""The user's SMPL model: find it, read it without chumpy, convert it, and build the smplx body.

Layout accepted for ``--smpl-model DIR`` (smplx's own): ``DIR/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.{npz,pkl}``,
or the same files directly in ``DIR``, or ``DIR`` being the model file itself. ``.npz`` is preferred (no
pickle at all); ``.pkl`` files are read with ``safe_pickle.SafeUnpickler`` (never ``pickle.load``), which is
also why we hand smplx a ``data_struct`` instead of letting it unpickle the file itself.

A model file holds (V = 6890 for the real SMPL): v_template (V,3), shapedirs (V,3,>=10), posedirs (V,3,207),
J_regressor (24,V), weights (V,24), kintree_table (2,24), f (T,3). Models with V != 6890 (synthetic test
bodies) may add ``landmark_vertex_ids`` (5,) = vertex indices of nose, right eye, left eye, right ear, left
ear (the real SMPL's are smplx's ``VERTEX_IDS['smplh']``); without it the fit ignores the face keypoints.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl.safe_pickle import load_pickle_safely

NUM_JOINTS = 24
NUM_SMPL_VERTICES = 6890
LANDMARKS = ("nose", "reye", "leye", "rear", "lear")  # smplx vertex-id names, in this order
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
GENDERS = ("NEUTRAL", "MALE", "FEMALE")


def find_model_file(model_dir: Path) -> Path:
    """The SMPL model file for ``model_dir`` (neutral first, ``.npz`` before ``.pkl``)."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        return model_dir
    for folder in (model_dir / "smpl", model_dir):
        for gender in GENDERS:
            for ext in ("npz", "pkl"):
                path = folder / f"SMPL_{gender}.{ext}"
                if path.is_file():
                    return path
    raise AnimlcmError(
        f"{model_dir}: no SMPL model found (expected {model_dir}/smpl/SMPL_NEUTRAL.npz or .pkl); download "
        "SMPL from https://smpl.is.tue.mpg.de and run `animlcm smpl convert FILE.pkl --out DIR`"
    )


def gender_of(path: Path) -> str:
    """NEUTRAL / MALE / FEMALE from an official file name (SMPL_MALE.pkl, basicModel_f_lbs_...pkl, ...)."""
    stem = Path(path).stem.lower()
    if "neutral" in stem:
        return "NEUTRAL"
    if "female" in stem or "_f_" in stem:
        return "FEMALE"
    if "male" in stem or "_m_" in stem:
        return "MALE"
    return "NEUTRAL"


def _validate(data: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise AnimlcmError(
            f"{where}: not a SMPL model, missing {', '.join(missing)}; give the official SMPL file"
        )
    v = data["v_template"].shape[0]
    expect = {
        "v_template": (v, 3),
        "J_regressor": (NUM_JOINTS, v),
        "weights": (v, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
    }
    for key, shape in expect.items():
        if tuple(data[key].shape) != shape:
            raise AnimlcmError(
                f"{where}: {key} has shape {data[key].shape}, expected {shape} for a SMPL model"
            )
    if data["shapedirs"].shape[:2] != (v, 3) or data["shapedirs"].shape[2] < 10:
        raise AnimlcmError(f"{where}: shapedirs has shape {data['shapedirs'].shape}, expected ({v}, 3, >=10)")
    if data["posedirs"].shape != (v, 3, 207):
        raise AnimlcmError(f"{where}: posedirs has shape {data['posedirs'].shape}, expected ({v}, 3, 207)")
    return data


def load_model_data(path: Path) -> dict[str, np.ndarray]:
    """Read a SMPL model file (``.npz``, or ``.pkl`` through the restricted unpickler) as float arrays."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise AnimlcmError(f"{path}: not a readable .npz SMPL model ({exc})") from None
    elif path.suffix == ".pkl":
        raw = load_pickle_safely(path)
    else:
        raise AnimlcmError(f"{path}: unknown SMPL model format; give a .pkl or .npz file")
    data = {}
    for key in (*REQUIRED_KEYS, "landmark_vertex_ids"):
        if key in raw:
            arr = np.asarray(raw[key])
            integer = key in ("kintree_table", "f", "landmark_vertex_ids")
            data[key] = arr.astype(np.int64 if integer else np.float32)
    return _validate(data, str(path))


def save_model_npz(data: dict[str, np.ndarray], path: Path) -> Path:
    """Write a chumpy-free model file atomically (``X.tmp`` then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **data)
    os.replace(tmp, path)
    return path


def landmark_ids(data: dict[str, np.ndarray]) -> np.ndarray | None:
    """Vertex indices of nose, reye, leye, rear, lear, or None when the model does not say."""
    if "landmark_vertex_ids" in data:
        return data["landmark_vertex_ids"].astype(np.int64)
    if data["v_template"].shape[0] == NUM_SMPL_VERTICES:
        from smplx.vertex_ids import vertex_ids

        return np.array([vertex_ids["smplh"][name] for name in LANDMARKS], dtype=np.int64)
    return None


@dataclass
class SmplBody:
    """A SMPL body on a device: the smplx module plus what fitting and rendering need."""

    module: torch.nn.Module  # smplx.SMPL, batch-agnostic (every parameter passed to forward)
    faces: torch.Tensor  # (T, 3) long
    parts: torch.Tensor  # (V,) long, argmax of the skinning weights: the 24 body parts
    landmarks: torch.Tensor | None  # (5,) long vertex ids (nose, reye, leye, rear, lear) or None
    path: Path

    @property
    def num_vertices(self) -> int:
        return int(self.parts.shape[0])

    def forward(
        self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed (vertices (B,V,3), joints (B,24,3)) without translation; ``betas`` (1 or B, 10)."""
        batch = body_pose.shape[0]
        out = self.module(
            betas=betas.expand(batch, -1),
            body_pose=body_pose,
            global_orient=global_orient,
            transl=torch.zeros(batch, 3, dtype=body_pose.dtype, device=body_pose.device),
        )
        return out.vertices, out.joints[:, :NUM_JOINTS]


def load_body_model(model_dir: Path, device: str | torch.device = "cpu") -> SmplBody:
    """Build ``smplx.SMPL`` from the model under ``model_dir`` (see the module docstring for layouts)."""
    import smplx
    from smplx.utils import Struct

    path = find_model_file(Path(model_dir))
    data = load_model_data(path)
    ids = landmark_ids(data)
    # smplx always selects 5 face vertices; with no known landmarks any index will do (they go unused).
    names = {name: int(ids[i]) if ids is not None else 0 for i, name in enumerate(LANDMARKS)}
    with contextlib.redirect_stdout(
        io.StringIO()
    ):  # smplx prints a warning for 10-beta models (all of SMPL's)
        module = smplx.SMPL(
            model_path=str(path.parent),
            data_struct=Struct(**data),
            num_betas=10,
            vertex_ids=names,
            use_hands=False,
            use_feet_keypoints=False,
            create_betas=False,
            create_body_pose=False,
            create_global_orient=False,
            create_transl=False,
        )
    module = module.to(device)
    module.requires_grad_(False)
    return SmplBody(
        module=module,
        faces=torch.as_tensor(data["f"], dtype=torch.long, device=device),
        parts=torch.as_tensor(data["weights"].argmax(axis=1), dtype=torch.long, device=device),
        landmarks=None if ids is None else torch.as_tensor(ids, dtype=torch.long, device=device),
        path=path,
    )

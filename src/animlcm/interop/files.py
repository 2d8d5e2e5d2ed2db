"""Reading and writing the teachers' own checkpoint files (``.pth`` and ``.safetensors``), safely.

``.pth`` files are opened only with ``torch.load(weights_only=True)``: a plain dict of tensors loads, anything
that would need pickle to run code does not. Writes are atomic (``X.tmp`` then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from animlcm.errors import AnimlcmError

EXTENSIONS = (".pth", ".safetensors", ".bin", ".ckpt")


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.<ext>`` for the one extension present; ``None`` when absent, an error when ambiguous."""
    found = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise AnimlcmError(f"{folder}: both {names} exist; keep one of them (they hold the same tensors)")
    return found[0] if found else None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one checkpoint file, on CPU, names as saved."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise AnimlcmError(
                f"{path}: not a readable safetensors file ({exc}); download it again"
            ) from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnimlcmError(
            f"{path}: cannot be read as a plain tensor checkpoint with torch.load(weights_only=True) "
            f"({first}); "
            "convert it to .safetensors or re-download the original file"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise AnimlcmError(
            f"{path}: expected a state dict (a mapping of names to tensors), found {type(data).__name__}; "
            "pass the file the teacher's code saves with torch.save(model.state_dict())"
        )
    return dict(data)


def write_state_dict(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write one checkpoint file atomically: ``.safetensors`` or a ``torch.save`` dict (``.pth``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp))
    else:
        torch.save(tensors, tmp)
    os.replace(tmp, path)

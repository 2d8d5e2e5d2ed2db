"""Reading the program's own files (weights, optimizer state, small JSON) so that a cut, corrupt or missing
file is one line naming it and the fix, never a 50-line traceback from safetensors, torch or json.

``fix`` is the caller's advice, e.g. "re-create the folder" or "delete this checkpoint and resume again".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from animlcm.errors import AnimlcmError


def reason(exc: BaseException) -> str:
    """A short, library-free reason: the kind of damage, not the deserializer's internals."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).lower()
    if "incomplete" in text or "eof" in text or "truncated" in text or isinstance(exc, EOFError):
        return "cut short"
    return "corrupt or not this kind of file"


def _exists(path: Path, fix: str) -> None:
    if not path.exists():
        raise AnimlcmError(f"{path}: missing; {fix}")
    if not path.is_file():
        raise AnimlcmError(f"{path}: not a file; {fix}")


def load_safetensors(path: Path, fix: str, device: str = "cpu") -> dict:
    """A ``.safetensors`` file as a dict of tensors; a missing, truncated or corrupt file says so."""
    from safetensors.torch import load_file

    path = Path(path)
    _exists(path, fix)
    try:
        return load_file(str(path), device=device)
    except Exception as exc:  # safetensors raises SafetensorError, OSError, RuntimeError, ...
        raise AnimlcmError(f"{path}: unreadable weights ({reason(exc)}); {fix}") from None


def load_torch_state(path: Path, fix: str) -> Any:
    """A ``torch.save``d state of tensors and numbers, loaded with ``weights_only=True`` (no code runs)."""
    import torch

    path = Path(path)
    _exists(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors, unpickling errors, EOFError, RuntimeError, ...
        raise AnimlcmError(f"{path}: unreadable ({reason(exc)}); {fix}") from None


def load_json(path: Path, fix: str) -> Any:
    """A small JSON file the program wrote; a cut or hand-broken one says where it stops making sense."""
    path = Path(path)
    _exists(path, fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnimlcmError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnimlcmError(f"{path}: unreadable ({reason(exc)}); {fix}") from None

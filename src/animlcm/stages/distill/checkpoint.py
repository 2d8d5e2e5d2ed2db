"""Training checkpoints: written atomically, read strictly, enough to continue bit-exactly.

``RUN/checkpoints/step-0000500/`` holds
  ``student.safetensors``  the trainable parameters of the online network (the frozen ones are rebuilt
                           from the teacher / ``--init`` exactly as the run started),
  ``target.safetensors``   the EMA target's followed parameters (absent for teacher training),
  ``optimizer.pt``         the optimizer state (tensors and numbers only: loads with ``weights_only=True``),
  ``rng.pt``               torch CPU and CUDA generator states,
  ``state.json``           step, data position, seed.
The folder is written as ``step-0000500.tmp`` and renamed when complete, so a crash never leaves a
half-written checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from animlcm.errors import AnimlcmError

PREFIX = "step-"


@dataclass(frozen=True)
class TrainState:
    step: int  # optimizer steps done
    data_position: int  # samples this process has consumed from its stream


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"{PREFIX}{step:07d}"


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp`` leftovers of a crash are ignored)."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def _named(module: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(module.named_parameters())
    return {n: params[n].detach().to("cpu", copy=True).contiguous() for n in names}


def save_checkpoint(
    run: Path,
    state: TrainState,
    *,
    student: nn.Module,
    train_names: list[str],
    optimizer: torch.optim.Optimizer,
    target: nn.Module | None = None,
    target_names: list[str] | None = None,
    keep: int = 2,
    extra: dict | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step-N`` atomically; keep the newest ``keep`` checkpoints."""
    final = checkpoint_dir(run, state.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_named(student, train_names), str(tmp / "student.safetensors"))
    if target is not None:
        save_file(_named(target, target_names or []), str(tmp / "target.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    meta = {"step": state.step, "data_position": state.data_position, **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")
    if final.exists():  # re-saving the same step (a resumed run's first save): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_into(module: nn.Module, path: Path, names: list[str]) -> None:
    tensors = load_file(str(path))
    expected, got = set(names), set(tensors)
    if expected != got:
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        raise AnimlcmError(
            f"{path}: checkpoint does not match this run's trainable parameters "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}); resume with the settings it was written with"
        )
    params = dict(module.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(tensors[n])


def load_checkpoint(
    folder: Path,
    *,
    student: nn.Module,
    train_names: list[str],
    optimizer: torch.optim.Optimizer,
    target: nn.Module | None = None,
    target_names: list[str] | None = None,
) -> TrainState:
    """Restore everything ``save_checkpoint`` wrote (strict about parameter names). A file that does not
    read (cut short, damaged) raises one line naming it."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        raise AnimlcmError(f"{folder}: not a complete checkpoint (no state.json); delete it and resume again")
    try:
        return _load(folder, student, train_names, optimizer, target, target_names)
    except AnimlcmError:
        raise
    except Exception as error:  # safetensors, torch.load and json each have their own error types
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise AnimlcmError(
            f"{folder}: damaged checkpoint ({reason}); delete it to resume from the one before"
        ) from None


def _load(
    folder: Path,
    student: nn.Module,
    train_names: list[str],
    optimizer: torch.optim.Optimizer,
    target: nn.Module | None,
    target_names: list[str] | None,
) -> TrainState:
    _load_into(student, folder / "student.safetensors", train_names)
    if target is not None:
        _load_into(target, folder / "target.safetensors", target_names or [])
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    meta = json.loads((folder / "state.json").read_text())
    return TrainState(step=int(meta["step"]), data_position=int(meta["data_position"]))

"""Training checkpoints: written atomically, read strictly, enough to continue bit-exactly.

``RUN/checkpoints/step-0000500/`` holds
  ``student.safetensors``  the trainable parameters of the online network (the frozen ones are rebuilt
                           from the teacher / ``--init`` exactly as the run started),
  ``target.safetensors``   the EMA target's followed parameters (absent for teacher training),
  ``optimizer.pt``         the optimizer state (tensors and numbers only: loads with ``weights_only=True``);
                           under DeepSpeed ZeRO ``zero/`` instead (each process's shard, by the engine), under
                           FSDP ``fsdp/`` (each process's shard),
  ``scaler.pt``            the fp16 GradScaler's state (loss scale, growth tracker), where the run has one,
  ``rng.pt``               torch CPU and CUDA generator states,
  ``state.json``           step, data position, seed.
The folder is written as ``step-0000500.tmp`` and renamed when complete, so a crash never leaves a
half-written checkpoint that ``--resume`` would pick up.

Sharded optimizer states (ZeRO, FSDP) come as an object with ``save(folder)`` and ``load(folder, fix)``,
called by every process; sharded weights (FSDP) are gathered whole into the files above by all processes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file
from torch import nn

from animlcm.errors import AnimlcmError
from animlcm.safeload import load_json, load_safetensors, load_torch_state
from animlcm.stages.distill import fsdp, zero

PREFIX = "step-"
SCALER_FILE = "scaler.pt"


class OptimizerShards(Protocol):
    """An optimizer shard per process in ``folder/name`` (``zero.EngineShards``, ``fsdp.OptimizerShards``)."""

    name: str  # the folder inside a checkpoint that holds the shards

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path, fix: str) -> None: ...


class ProcessCountError(AnimlcmError):
    """A checkpoint whose optimizer state this launch cannot read (another process count with a sharded state,
    or another sharding): no older checkpoint of the run would fit either."""


# how each kind of optimizer state is written, and the accelerate config that resumes it
_SHARDINGS = {
    zero.ZERO_DIR: ("as DeepSpeed ZeRO shards", zero.RECIPE),
    fsdp.FSDP_DIR: ("as FSDP shards", fsdp.RECIPE),
    None: ("whole (one process or DDP)", None),
}


@dataclass(frozen=True)
class TrainState:
    step: int  # optimizer steps done
    data_position: int  # samples this process has consumed from its stream (since data_offset)
    processes: int = 1  # how many processes shared the stream when the checkpoint was written
    # the global sample index at which this process count's interleaving began (0 unless a run was resumed
    # with another process count): every index below data_offset + data_position * processes is consumed
    data_offset: int = 0

    def consumed(self) -> int:
        """Samples of the global stream consumed so far, by all processes together."""
        return self.data_offset + self.data_position * self.processes


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


def _write_files(
    tmp: Path, state: TrainState, weights: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer, extra: dict | None, scaler: Any, sharded: bool,
) -> None:  # fmt: skip
    for name, tensors in weights.items():
        save_file(tensors, str(tmp / f"{name}.safetensors"))
    if not sharded:  # (sharded optimizer states are in zero/ or fsdp/, written by every process)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scaler is not None:  # fp16's loss scale: without it a resumed run restarts at 2**16 and skips steps
        torch.save(scaler.state_dict(), tmp / SCALER_FILE)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    meta = {
        "step": state.step, "data_position": state.data_position, "data_offset": state.data_offset,
        "processes": state.processes, **(extra or {}),
    }  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")


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
    scaler: Any = None,
    shards: OptimizerShards | None = None,
    main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write ``RUN/checkpoints/step-N`` atomically; keep the newest ``keep`` checkpoints (``scaler``: the fp16
    ``GradScaler``, when there is one).

    Called by every process: ``main`` writes the files, every process writes its optimizer shard (``shards``)
    into the same folder in between (``barrier`` waits for all of them), and sharded weights are gathered by
    all processes together."""
    final = checkpoint_dir(run, state.step)
    tmp = final.with_name(final.name + ".tmp")
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        # (collective where the weights are sharded: every process takes part, the main one keeps them)
        weights = {"student": fsdp.full_tensors(student, train_names, keep=main)}
        if target is not None:
            weights["target"] = fsdp.full_tensors(target, target_names or [], keep=main)
        if shards is not None:
            shards.save(tmp)
        if main:
            _write_files(tmp, state, weights, optimizer, extra, scaler, sharded=shards is not None)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint behind
        raise
    barrier()  # every shard is on disk before the folder becomes a checkpoint
    if main:
        if final.exists():  # re-saving the same step (a resumed run's first save): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _fix(folder: Path) -> str:
    """What to do about a damaged checkpoint: an older one (if kept) or a fresh start still works."""
    return f"delete {folder} and --resume again (from the checkpoint before it), or drop --resume"


def _read_params(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    tensors = load_safetensors(path, _fix(path.parent))
    expected, got = set(names), set(tensors)
    if expected != got:
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        raise AnimlcmError(
            f"{path}: checkpoint does not match this run's trainable parameters "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}); resume with the settings it was written with"
        )
    return tensors


def _load_into(module: nn.Module, path: Path, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    for n, t in tensors.items():
        if params[n].shape != t.shape:
            raise AnimlcmError(
                f"{path}: {n} has shape {tuple(t.shape)}, this run's {tuple(params[n].shape)}; "
                "resume with the settings it was written with"
            )
    for n, t in tensors.items():
        fsdp.copy_whole_into(params[n], t)  # (this process's shard, where the weights are sharded)


def load_checkpoint(
    folder: Path,
    *,
    student: nn.Module,
    train_names: list[str],
    optimizer: torch.optim.Optimizer,
    target: nn.Module | None = None,
    target_names: list[str] | None = None,
    scaler: Any = None,
    shards: OptimizerShards | None = None,
    processes: int | None = None,
) -> TrainState:
    """Restore everything ``save_checkpoint`` wrote (strict about parameter names); with ``shards`` (every
    process calls it), the optimizer from this process's shard."""
    folder = Path(folder)
    fix = _fix(folder)
    if not (folder / "state.json").exists():
        raise AnimlcmError(f"{folder}: not a complete checkpoint (no state.json); {fix}")
    # every file is read before anything is restored, so a damaged one leaves the run untouched
    meta = load_json(folder / "state.json", fix)
    try:
        saved = TrainState(
            step=int(meta["step"]),
            data_position=int(meta["data_position"]),
            processes=int(meta.get("processes", 1)),
            data_offset=int(meta.get("data_offset", 0)),
        )
    except (KeyError, TypeError, ValueError):
        raise AnimlcmError(f"{folder / 'state.json'}: no step/data_position numbers; {fix}") from None
    written = next((name for name in _SHARDINGS if name and (folder / name).is_dir()), None)
    wanted = shards.name if shards is not None else None
    if written != wanted:
        recipe = _SHARDINGS[written][1]
        launch = f"accelerate launch --config_file {recipe} --num_processes {saved.processes}"
        raise ProcessCountError(
            f"{folder}: its optimizer state was written {_SHARDINGS[written][0]}, this run keeps it "
            f"{_SHARDINGS[wanted][0]}; resume with "
            + (launch if recipe else "one process or DDP (configs/accelerate/ddp.yaml)")
        )
    if processes is not None and saved.processes != processes:
        # a sharded optimizer state is one shard per process: another count cannot load it
        raise ProcessCountError(
            f"{folder}: written by {saved.processes} process(es), resumed with {processes}; resume with "
            f"`accelerate launch --num_processes {saved.processes}` (the optimizer state is one shard per "
            "process)"
        )
    opt_state = load_torch_state(folder / "optimizer.pt", fix) if shards is None else None
    rng = load_torch_state(folder / "rng.pt", fix)
    scaler_state = load_torch_state(folder / SCALER_FILE, fix) if (folder / SCALER_FILE).exists() else None
    student_path, target_path = folder / "student.safetensors", folder / "target.safetensors"
    student_t = _read_params(student_path, train_names)
    target_t = None if target is None else _read_params(target_path, target_names or [])
    _load_into(student, student_path, student_t)
    if target is not None and target_t is not None:
        _load_into(target, target_path, target_t)
    if shards is not None:  # this process's optimizer shard (and, for DeepSpeed, the engine's weights)
        shards.load(folder, fix)
    else:
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, TypeError, RuntimeError):
            raise AnimlcmError(
                f"{folder / 'optimizer.pt'}: does not fit this run's optimizer; {fix}"
            ) from None
    if scaler is not None and scaler_state is not None:
        try:
            scaler.load_state_dict(scaler_state)
        except (ValueError, KeyError, TypeError, RuntimeError):
            raise AnimlcmError(f"{folder / SCALER_FILE}: not a GradScaler state; {fix}") from None
    try:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (KeyError, TypeError, RuntimeError):
        raise AnimlcmError(f"{folder / 'rng.pt'}: not a random-generator state; {fix}") from None
    return saved

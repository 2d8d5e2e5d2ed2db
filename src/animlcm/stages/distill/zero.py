"""DeepSpeed ZeRO stages 1-2 under accelerate (launched with `configs/accelerate/zero2.yaml`).

ZeRO-2 shards the optimizer states and gradients over the processes and keeps every weight whole on every
process, so what reads weights outside the optimizer (the EMA target, a shared base's teacher view, the
result) works as under DDP. Two things differ, and live here:

- Precision. DeepSpeed's own bf16 mode casts the whole module to bf16 (the frozen base, the EMA adapter of a
  shared base, the parts a linked student shares with its teacher). The run keeps fp32 weights instead, as
  under DDP, and computes in bf16 under ``torch.autocast``; ZeRO then shards fp32 gradients and Adam states.
- Checkpoints. Each process holds only its shard of the optimizer state, so every process writes its shard
  through the engine (``RUN/checkpoints/step-N/zero/``) instead of rank 0 writing ``optimizer.pt``.

ZeRO-3 (sharded weights) is refused: the EMA update, the teacher view and the result read whole weights.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from animlcm.errors import AnimlcmError

ZERO_DIR = "zero"  # the engine's files inside a checkpoint folder (its "tag")
# the reduce and all-gather buckets (elements; DeepSpeed's default is 5e8 each, 4 GB in fp32 together)
BUCKET_ELEMENTS = 200_000_000
MODEL_FILE = "mp_rank_00_model_states.pt"  # the engine's trained weights
RECIPE = "configs/accelerate/zero2.yaml"


def requested() -> bool:
    """Was this process started by ``accelerate launch`` with a DeepSpeed config?"""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def configure(accelerator: Any, cfg: Any) -> None:
    """Fill the DeepSpeed config from the run's settings before ``prepare`` (a no-op without DeepSpeed).

    The batch, accumulation and clipping are animlcm's flags (one source of truth, as for DDP); the ZeRO
    stage, bucket sizes and offload come from the accelerate config file."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != accelerator.num_processes:  # accelerate runs DeepSpeed across processes on GPUs only
        raise AnimlcmError(
            f"DeepSpeed: {world} processes launched but accelerate sees {accelerator.num_processes} (no GPU "
            "here: accelerate runs DeepSpeed across processes only on GPUs); launch one process, or use DDP "
            "(configs/accelerate/ddp.yaml)"
        )
    conf = plugin.deepspeed_config
    stage = int((conf.get("zero_optimization") or {}).get("stage", 0))
    if stage >= 3:
        raise AnimlcmError(
            f"DeepSpeed ZeRO-{stage}: not supported (it shards the weights, which the EMA target, the "
            f"teacher and the result read whole); use ZeRO-2: accelerate launch --config_file {RECIPE}"
        )
    if cfg.mixed_precision == "fp16":
        raise AnimlcmError(
            "DeepSpeed with --mixed-precision fp16: not supported (its fp16 mode casts every weight to "
            "fp16); use --mixed-precision bf16"
        )
    zero_opt = conf.setdefault("zero_optimization", {})
    for key in ("reduce_bucket_size", "allgather_bucket_size"):  # as planned by ``distill --dry-run``
        if zero_opt.get(key, "auto") == "auto":
            zero_opt[key] = BUCKET_ELEMENTS
    conf["train_micro_batch_size_per_gpu"] = cfg.batch_size
    conf["gradient_accumulation_steps"] = cfg.grad_accum
    conf["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    conf["gradient_clipping"] = float(cfg.grad_clip)
    # fp32 weights, bf16 compute under autocast (see the module docstring)
    conf["bf16"], conf["fp16"] = {"enabled": False}, {"enabled": False}


def engine_of(model: nn.Module) -> Any:
    """The DeepSpeed engine ``prepare`` returned, or None for any other model."""
    return model if type(model).__name__ == "DeepSpeedEngine" else None


def autocast(accelerator: Any, engine: Any, mixed_precision: str) -> contextlib.AbstractContextManager:
    """The step's precision context: accelerate's own, or bf16 autocast over fp32 weights under DeepSpeed
    (accelerate leaves precision to DeepSpeed's config there, which the run switched off)."""
    if engine is None:
        return accelerator.autocast()
    if mixed_precision == "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EngineShards:
    """Every process's optimizer shard (and the trained weights), written and read by the engine in
    ``folder/zero`` (the ``shards`` of ``save_checkpoint``/``load_checkpoint``)."""

    name = ZERO_DIR

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def save(self, folder: Path) -> None:
        engine = self.engine
        engine.save_checkpoint(str(folder), tag=ZERO_DIR, save_latest=False, exclude_frozen_parameters=True)

    def load(self, folder: Path, fix: str) -> None:
        """Restore the engine's weights and optimizer shards; one line if they don't read."""
        _load(self.engine, folder, fix)


def _load(engine: Any, folder: Path, fix: str) -> None:
    where = Path(folder) / ZERO_DIR
    rank = engine.global_rank
    # DeepSpeed itself falls back to fresh optimizer states when its shard is missing: checked here instead
    if not (where / MODEL_FILE).is_file() or not list(where.glob(f"*zero_pp_rank_{rank}_*optim_states.pt")):
        raise AnimlcmError(
            f"{where}: no engine state for process {rank} (not written by a DeepSpeed run of this process "
            f"count, or cut); {fix}"
        )
    try:
        path, _ = engine.load_checkpoint(
            str(folder), tag=ZERO_DIR, load_module_strict=False, load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - a cut or foreign file fails in many ways inside DeepSpeed
        raise AnimlcmError(f"{where}: does not read ({type(error).__name__}); {fix}") from None
    if path is None:
        raise AnimlcmError(f"{where}: does not read (no model states); {fix}")

"""FSDP (torch's ``fully_shard``) under accelerate (launched with `configs/accelerate/fsdp.yaml`).

FSDP shards the weights themselves, with their gradients and optimizer states, over the processes: each holds
1/N of every network and gathers one layer at a time for its forward and backward. accelerate's own FSDP
prepares a single model, and only on GPUs; a distillation run holds three networks that read one another's
weights (the EMA target follows the student elementwise, the teacher runs beside them). So accelerate starts
the processes (and gives the device, the precision and the reductions), and the run shards the student, the
EMA target and the teacher alike here, with ``fully_shard`` over all processes. The same path runs on CPU
processes (gloo), which is how the suite tests it.

What reads or writes whole weights goes through this module:
- the EMA update works shard by shard (every network is cut the same way, so the shards line up);
- a checkpoint gathers the trained weights into the usual ``student.safetensors``/``target.safetensors``
  (collective; the main process writes them), and every process writes its optimizer shard into
  ``RUN/checkpoints/step-N/fsdp/``; resuming reads both back (with the process count that wrote them);
- the result folder is written from weights gathered whole into the main process at the end.

Sharding units (what is gathered at once): every layer held in a ``ModuleList`` (ResNet, attention and motion
blocks, samplers, CLIP layers: the modules both the motion UNet and its spatial view call); the rest of the
network is the root unit. Where gradients reach the reference UNet (it trains, or the CLIP encoder or a face
projector does), it is one unit instead, kept gathered from its forward to the backward: its features leave
it from inside its layers rather than as its output, and a unit gathers its weights again for the backward
only when gradients reach its output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from animlcm.errors import AnimlcmError

FSDP_DIR = "fsdp"  # the optimizer shards inside a checkpoint folder
RECIPE = "configs/accelerate/fsdp.yaml"
# methods of the network that run its layers outside ``forward``: FSDP gathers the root unit for them too
ENTRY_METHODS = ("encode_conditioning",)


def requested() -> bool:
    """Was this process started by ``accelerate launch`` with an FSDP config (on GPUs or CPU processes)?"""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def reshard_after_forward() -> bool:
    """The config's ``fsdp_reshard_after_forward`` (true: FULL_SHARD; false: SHARD_GRAD_OP, ZeRO-2-like)."""
    return os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"


def check(accelerator: Any, cfg: Any) -> None:
    """Refuse, in one line each, what this FSDP path does not do (a no-op without FSDP)."""
    if not requested():
        return
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise AnimlcmError(
            f"accelerate FSDP version {version}: animlcm shards with FSDP2 (torch's fully_shard); set "
            f"`fsdp_version: 2` in the accelerate config (as {RECIPE} does)"
        )
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise AnimlcmError(
            f"accelerate FSDP with fsdp_offload_params: not supported (the EMA update and the teacher run on "
            f"the GPU's shards); set `fsdp_offload_params: false` (as {RECIPE} does)"
        )
    if cfg.mixed_precision == "fp16":
        raise AnimlcmError(
            "FSDP with --mixed-precision fp16: not supported (its loss scaler would need sharded gradients); "
            "use --mixed-precision bf16"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != accelerator.num_processes:
        raise AnimlcmError(
            f"FSDP: {world} processes launched but accelerate sees {accelerator.num_processes}; launch with "
            f"`accelerate launch --config_file {RECIPE} --num_processes N`"
        )


def is_sharded(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (the tensor itself otherwise)."""
    return t.to_local() if is_sharded(t) else t


def layer_units(net: nn.Module, whole_reference: bool = True) -> list[nn.Module]:
    """The modules sharded as units of their own, in ``net.modules()`` order (outer before inner): every layer
    held in a ``ModuleList``; with ``whole_reference``, none inside the reference UNet, which is then one unit
    (the last)."""
    reference = getattr(net, "reference_unet", None) if whole_reference else None
    inside = {id(m) for m in reference.modules()} if reference is not None else set()
    units = [
        child
        for module in net.modules()
        if isinstance(module, nn.ModuleList) and id(module) not in inside
        for child in module
        if not isinstance(child, nn.ModuleList) and next(child.parameters(), None) is not None
    ]
    return units + ([reference] if reference is not None else [])


def gathered_bytes(net: nn.Module, bytes_per: int = 4) -> int:
    """The most weight bytes one process holds gathered at once while ``net`` trains under FSDP (weights
    stored at ``bytes_per``): the root unit, the reference UNet where gradients reach it (kept gathered from
    its forward to the backward), and two layer units (the one running and the next, prefetched)."""
    owner: dict[int, int] = {}  # parameter -> the innermost unit holding it (units come outer first)
    whole_reference = reference_takes_gradients(net)
    units = layer_units(net, whole_reference)
    for index, unit in enumerate(units):
        for p in unit.parameters():
            owner[id(p)] = index
    sizes = [0] * len(units)
    root = 0
    for p in {id(p): p for p in net.parameters()}.values():
        if id(p) in owner:
            sizes[owner[id(p)]] += p.numel() * bytes_per
        else:
            root += p.numel() * bytes_per
    kept = sizes.pop() if whole_reference else 0  # (the reference UNet is the last unit)
    layers = sorted(sizes, reverse=True)[:2]
    return root + kept + sum(layers)


def reference_takes_gradients(net: nn.Module) -> bool:
    """Does the backward run through ``net``'s reference UNet? Where it trains, or what feeds it tokens does
    (the CLIP encoder, a face projector)."""
    parts = [getattr(net, name, None) for name in ("reference_unet", "image_encoder", "face_projector")]
    return any(p.requires_grad for m in parts if m is not None for p in m.parameters())


def _own_parameters(net: nn.Module) -> None:
    """Give ``net`` Parameter objects of its own (on the same storage): networks built on one another's
    tensors (the target and teacher share the student's frozen weights) must be sharded independently, and
    ``fully_shard`` moves a parameter by swapping its data, which would move every network sharing it."""
    from animlcm.stages.distill.shared_base import replace_parameter

    fresh: dict[int, nn.Parameter] = {}  # (weights tied inside the network stay tied)
    for name, p in list(net.named_parameters(remove_duplicate=False)):
        new = fresh.setdefault(id(p), nn.Parameter(p.data, requires_grad=p.requires_grad))
        replace_parameter(net, name, new)


def shard(networks: Iterable[Any], device: torch.device) -> None:
    """``fully_shard`` every distinct ``nn.Module`` among ``networks`` over all processes, in place (a view
    such as a shared base's ``AdapterView`` is covered by its network). Each is sharded the same way, unit by
    unit, so elementwise updates between networks line up shard by shard. Where gradients reach the reference
    UNet, it stays gathered from its forward to the end of the backward (``reference_takes_gradients``)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    reshard = reshard_after_forward()
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    done: set[int] = set()
    for net in networks:
        if not isinstance(net, nn.Module) or id(net) in done:
            continue
        done.add(id(net))
        _own_parameters(net)
        # gradients reach the reference UNet through its features, not its output: one unit, kept gathered
        whole_reference = reference_takes_gradients(net)
        reference = getattr(net, "reference_unet", None)
        for unit in reversed(layer_units(net, whole_reference)):  # inner units first
            keep = unit is reference and whole_reference
            fully_shard(unit, mesh=mesh, reshard_after_forward=reshard and not keep)
        fully_shard(net, mesh=mesh, reshard_after_forward=reshard)
        for method in ENTRY_METHODS:
            if hasattr(net, method):
                register_fsdp_forward_method(net, method)


def full_tensors(module: nn.Module, names: list[str], keep: bool) -> dict[str, torch.Tensor]:
    """The named parameters whole, on the CPU, where ``keep`` (the main process; others get ``{}``).
    Collective for sharded parameters: every process calls it with the same names."""
    params = dict(module.named_parameters())
    out = {}
    for name in names:
        p = params[name].detach()
        whole = p.full_tensor() if is_sharded(p) else p
        if keep:
            out[name] = whole.to("cpu", copy=True).contiguous()
    return out


@torch.no_grad()
def copy_whole_into(param: torch.Tensor, whole: torch.Tensor) -> None:
    """Write a whole tensor (each process read it from a checkpoint) into this process's part of ``param``."""
    if not is_sharded(param):
        param.copy_(whole)
        return
    from torch.distributed.tensor import distribute_tensor

    # every process holds ``whole``: cut it locally (src_data_rank=None) instead of scattering it
    part = distribute_tensor(whole.to(param.device, param.dtype), param.device_mesh, param.placements,
                             src_data_rank=None)  # fmt: skip
    param.to_local().copy_(part.to_local())


def gather_whole(net: nn.Module, keep: bool) -> None:
    """Replace every sharded parameter of ``net`` by its whole tensor where ``keep`` (the main process, which
    then writes the result folder from it; others drop theirs). Collective; ends the network's training."""
    from animlcm.stages.distill.shared_base import replace_parameter

    for name, p in list(net.named_parameters()):
        if is_sharded(p):
            whole = p.detach().full_tensor()
            if keep:
                replace_parameter(net, name, nn.Parameter(whole, requires_grad=p.requires_grad))


class OptimizerShards:
    """Every process's shard of the optimizer state, in ``step-N/fsdp/``, written and read by that process."""

    name = FSDP_DIR

    def __init__(self, optimizer: torch.optim.Optimizer, rank: int, processes: int) -> None:
        self.optimizer, self.rank, self.processes = optimizer, rank, processes

    def _path(self, folder: Path) -> Path:
        return Path(folder) / FSDP_DIR / f"optimizer-{self.rank:05d}-of-{self.processes:05d}.pt"

    def save(self, folder: Path) -> None:
        """This process's shard: plain tensors and numbers (loads with ``weights_only=True``)."""
        state = self.optimizer.state_dict()
        shard = {
            "state": {i: {k: local(v) for k, v in s.items()} for i, s in state["state"].items()},
            "param_groups": state["param_groups"],
        }
        path = self._path(folder)
        path.parent.mkdir(exist_ok=True)
        torch.save(shard, path)

    def load(self, folder: Path, fix: str) -> None:
        from animlcm.safeload import load_torch_state

        path = self._path(folder)
        if not path.is_file():
            raise AnimlcmError(f"{path.parent}: no optimizer shard for process {self.rank}; {fix}")
        shard = load_torch_state(path, fix)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        try:
            state = {
                int(i): {k: _as_shard_of(params[int(i)], v) for k, v in s.items()}
                for i, s in shard["state"].items()
            }
            self.optimizer.load_state_dict({"state": state, "param_groups": shard["param_groups"]})
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError):
            raise AnimlcmError(f"{path}: does not fit this run's optimizer; {fix}") from None


def _as_shard_of(param: torch.Tensor, value: Any) -> Any:
    """A saved local tensor as the shard of a state shaped like ``param`` (a step count stays as it is)."""
    if not is_sharded(param) or not torch.is_tensor(value) or value.shape != param.to_local().shape:
        return value
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        value.to(param.device), param.device_mesh, param.placements, run_check=False, shape=param.shape,
        stride=param.stride(),
    )  # fmt: skip

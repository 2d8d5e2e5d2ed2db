"""``animlcm distill --dry-run``: the memory a distillation run needs, worked out before a GPU is spent.

The teacher, student and EMA target are built as ``trainer.run`` builds them, but on the meta device (shapes,
no memory, no weights read), so a real-size plan takes seconds on any machine. Parameters, gradients,
optimizer states and the EMA target are counted exactly from the parameters that exist and the ones that
train; the activations are the bytes the student's forward saves for its backward pass, traced on the meta
device at the run's batch, frames and size (the dominant activation cost; the teacher's and target's forwards
run without gradients and keep only a layer's worth at a time, which is not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

GB = 1024**3
_GATHERED = "fp32: the root unit, two layers, and the reference UNet where gradients reach it"


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per item (``rows``: (what, bytes, how it was counted)), for one process."""

    rows: list[tuple[str, int, str]]
    setting: str  # the run it plans, in words

    @property
    def total(self) -> int:
        return sum(b for _, b, _ in self.rows)

    def fits(self, gpu_gb: float) -> bool:
        return self.total <= gpu_gb * GB


def _unique_params(*modules: nn.Module | None) -> dict[int, nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        if m is not None:
            for p in m.parameters():
                seen.setdefault(id(p), p)
    return seen


def _nbytes(params: dict[int, nn.Parameter] | list[nn.Parameter], bytes_per: int | None = None) -> int:
    values = params.values() if isinstance(params, dict) else params
    return sum(p.numel() * (bytes_per or p.element_size()) for p in values)


def saved_activation_bytes(
    student: nn.Module,
    batch: int,
    frames: int,
    height: int,
    width: int,
    temporal: bool,
    device: str | torch.device,
) -> int:
    """Bytes the student's conditioning and forward save for backward at this batch (``batch`` references
    x samples), frames and pixel size; counted with saved-tensor hooks, each storage once (a tensor saved by
    several operations, or views of one, hold one buffer), so the same on the meta device (for planning) as
    on real tensors (what the test checks)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # the storage's C handle names it on any device, meta included; every saved tensor stays alive
        # until the count is done (the graph holds it), so a handle is never reused for another buffer
        storage = t.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
        return t

    dtype = next(student.parameters()).dtype
    h, w = height // 8, width // 8
    maps = tuple(student.pose_guider.maps)
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=dtype).to(device)

    image, latent = rand(batch, 3, height, width), rand(batch, 4, h, w)
    x = rand(batch, 4, frames, h, w)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    pose = {m: rand(batch, 3, frames, height, width) for m in maps}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cond = student.encode_conditioning(image, latent)
        out = student(x, t, pose, cond, temporal=temporal)
    del out, cond  # (kept until here: their graph holds the saved tensors)
    return sum(storages.values())


def plan_distill(
    cfg: Any, zero_processes: int | None = None, fsdp_processes: int | None = None
) -> MemoryPlan:
    """The memory plan of the distillation run ``cfg`` (a resolved ``DistillConfig``) on one GPU process.

    The teacher's architecture comes from its folder's ``animlcm.json`` (no weights read) or, without
    ``--teacher``, from the preset. Counted as the run holds them on a GPU: the student and target in fp32
    (mixed precision keeps fp32 master weights), the teacher in bf16/fp16 under mixed precision, AdamW's two
    fp32 moments per trained parameter (two bytes with ``--adam-8bit``), gradients in fp32.
    ``zero_processes``: one process of a DeepSpeed ZeRO-2 run over that many (``_training_rows``).
    ``fsdp_processes``: one process of an FSDP run over that many (``_fsdp_weight_rows``)."""
    from accelerate import init_empty_weights

    from animlcm.config import SIZES
    from animlcm.models.io import read_folder_meta
    from animlcm.models.lora import add_lora
    from animlcm.models.network import NetworkConfig
    from animlcm.models.presets import empty_network, network_config
    from animlcm.stages.distill.ema import make_target
    from animlcm.stages.distill.shared_base import share_frozen_weights, shares_base
    from animlcm.stages.distill.step import needs_faces
    from animlcm.stages.distill.trainer import _trainable, ema_follows, with_heads

    cfg = cfg.with_method_defaults()
    if cfg.teacher is not None:
        net_cfg = NetworkConfig.from_dict(read_folder_meta(cfg.teacher)["network"])
        source = f"teacher {cfg.teacher}"
    else:
        net_cfg = network_config(cfg.preset, face_tokens=False)
        source = f"the {cfg.preset} preset's architecture"
    teacher = empty_network(net_cfg).to("meta")  # buffers too (positional tables), not only parameters
    with init_empty_weights():
        student = with_heads(teacher, bool(cfg.face_tokens), bool(cfg.aux_head))
        if cfg.lora_rank:
            add_lora(student, rank=cfg.lora_rank, layers=cfg.lora_layers, targets=cfg.lora_targets or "all")
    _trainable(student, cfg)
    if cfg.gradient_checkpointing:
        from animlcm.models.checkpointing import enable_checkpointing

        enable_checkpointing(student)
    student.train()
    shared_base = shares_base(cfg, student, teacher)
    half = cfg.mixed_precision in ("bf16", "fp16")
    student_params = _unique_params(student)
    trained = [p for p in student_params.values() if p.requires_grad]
    rows = _weight_rows(student, "student")
    if fsdp_processes:
        rows = _fsdp_weight_rows(student, teacher, cfg, shared_base, fsdp_processes)
    elif shared_base:  # an EMA adapter on the student's own base (``shared_base.py``), the size of its LoRA
        rows.append(("EMA target (an adapter)", _nbytes(trained, 4), "fp32; the student's base, shared"))
        if not cfg.teacher_free:
            rows.append(("teacher", 0, "the student's base with the adapter off (--share-base)"))
    else:
        target = make_target(student, ema_follows(student, cfg))
        target_only = {k: p for k, p in _unique_params(target).items() if k not in student_params}
        rows.append(("EMA target (its own copies)", _nbytes(target_only, 4),
                     "fp32, of what the EMA follows; the rest is the student's"))  # fmt: skip
        # without --init the student's frozen weights are the teacher's (with --init: assumed not)
        if not cfg.teacher_free and share_frozen_weights(teacher, student, assume_equal=cfg.init is None):
            teacher_only = {k: p for k, p in _unique_params(teacher).items() if k not in student_params}
            rows.append(("teacher (its own copies)", _nbytes(teacher_only, 4),
                         "fp32, of what the student trains; the rest is the student's"))  # fmt: skip
        elif not cfg.teacher_free:
            rows.append(("teacher", _nbytes(_unique_params(teacher), 2 if half else 4),
                         "bf16/fp16 under mixed precision" if half else "fp32"))  # fmt: skip
    if needs_faces(student, None if cfg.teacher_free else teacher):
        rows.append(("VAE (face crops)", _vae_bytes(cfg.teacher), "fp32 weights"))
    refs = 1 + bool(cfg.needs_second_reference) + bool(cfg.needs_other_reference)
    rows += _training_rows(student, trained, cfg, refs, zero_processes, fsdp_processes)
    size = SIZES[cfg.preset]
    frames = cfg.frames_per_sample
    setting = (
        f"{cfg.method} / {cfg.stage} at {cfg.preset} ({size.height}x{size.width}, {frames} frame(s)), "
        f"batch {cfg.batch_size}, mixed precision {cfg.mixed_precision}, train_modules {cfg.train_modules}"
        f"{f', LoRA rank {cfg.lora_rank}' if cfg.lora_rank else ''}"
        f"{', gradient checkpointing' if cfg.gradient_checkpointing else ''}; architecture from {source}"
    )
    return MemoryPlan(rows, setting)


def _weight_rows(net: nn.Module, who: str) -> list[tuple[str, int, str]]:
    """``(who part, fp32 bytes)`` for each part of the network (fp32 master weights under mixed precision)."""
    parts = ("unet", "reference_unet", "image_encoder", "pose_guider", "face_projector", "aux_head")
    modules = [(part, getattr(net, part, None)) for part in parts]
    return [
        (f"{who} {part}", _nbytes(_unique_params(m), 4), "fp32 weights")
        for part, m in modules
        if m is not None
    ]


def _fsdp_weight_rows(
    student: nn.Module, teacher: nn.Module, cfg: Any, shared_base: bool, processes: int
) -> list[tuple[str, int, str]]:
    """Weights under FSDP over ``processes``: every network sharded on its own, in fp32 (``fsdp.shard``: the
    target and teacher no longer share the student's frozen tensors, and the teacher is not cast), 1/N of each
    per process, plus what is gathered at once (``fsdp.gathered_bytes``)."""
    of = f"fp32; FSDP: 1/{processes} of it"
    rows = _fsdp_shares(_weight_rows(student, "student"), student, processes)
    whole = _nbytes(_unique_params(student), 4)
    if shared_base:  # one network: the EMA adapter is in the student's rows, the teacher is a view
        rows.append(("teacher", 0, "the student's base with the adapter off (--share-base)"))
    else:
        rows.append(("EMA target", whole // processes, f"a whole network, {of}"))
        if not cfg.teacher_free:
            teacher_bytes = _nbytes(_unique_params(teacher), 4)
            rows.append(("teacher", teacher_bytes // processes, f"a whole network, {of}"))
    return rows


def _fsdp_shares(
    rows: list[tuple[str, int, str]], net: nn.Module, processes: int
) -> list[tuple[str, int, str]]:
    """``net``'s fp32 weight rows as one process of an FSDP run holds them: 1/N of each, plus the weights
    gathered at once (``fsdp.gathered_bytes``)."""
    from animlcm.stages.distill.fsdp import gathered_bytes

    of = f"fp32; FSDP: 1/{processes} of it"
    return [(what, nbytes // processes, of) for what, nbytes, _ in rows] + [
        ("gathered weights", gathered_bytes(net), _GATHERED)
    ]


def _training_rows(
    net: nn.Module, trained: list[nn.Parameter], cfg: Any, refs: int, zero_processes: int | None = None,
    fsdp_processes: int | None = None,
) -> list[tuple[str, int, str]]:  # fmt: skip
    """Gradients, optimizer states and the activations of ``net``'s forward, as a training run holds them.

    Under DeepSpeed ZeRO-2 over ``zero_processes`` processes each holds its share of the gradients and
    optimizer states, plus the engine's reduce and all-gather buckets (``zero.BUCKET_ELEMENTS`` fp32 values
    each, or the trained size where smaller); under FSDP over ``fsdp_processes`` its share of both."""
    from animlcm.config import SIZES
    from animlcm.errors import AnimlcmError
    from animlcm.stages.distill.zero import BUCKET_ELEMENTS

    if zero_processes and fsdp_processes:
        raise AnimlcmError("--zero-processes and --fsdp-processes: plan one sharding at a time")
    half = cfg.mixed_precision in ("bf16", "fp16")
    count = sum(p.numel() for p in trained)
    share, of = (1, "")
    if zero_processes:
        share, of = zero_processes, f"; ZeRO-2: 1/{zero_processes} of it"
    elif fsdp_processes:
        share, of = fsdp_processes, f"; FSDP: 1/{fsdp_processes} of it"
    rows = [("gradients", _nbytes(trained, 4) // share, f"fp32, {count:,} trained{of}")]
    rows.append(("optimizer states", _nbytes(trained, 2 if cfg.adam_8bit else 8) // share,
                 f"{'8-bit AdamW' if cfg.adam_8bit else 'AdamW: 2 fp32 moments'}{of}"))  # fmt: skip
    if zero_processes:
        bucket = min(count, BUCKET_ELEMENTS) * 4
        rows.append(("ZeRO-2 buckets", 2 * bucket, "reduce + all-gather, fp32"))
    size = SIZES[cfg.preset]
    frames = cfg.frames_per_sample
    saved = saved_activation_bytes(
        net, cfg.batch_size * refs, frames, size.height, size.width, cfg.stage == "temporal", "meta"
    )
    note = "traced on the meta device" + (", halved for bf16/fp16" if half else "")
    if cfg.gradient_checkpointing:
        note += "; checkpointed blocks recompute theirs in backward (one block's worth not counted)"
    rows.append((f"activations (batch {cfg.batch_size} x {refs} ref, {frames} frames)",
                 saved // 2 if half else saved, note))  # fmt: skip
    return rows


def plan_teacher(
    cfg: Any, zero_processes: int | None = None, fsdp_processes: int | None = None
) -> MemoryPlan:
    """The memory plan of the teacher-training run ``cfg`` (a ``TeacherTrainConfig``) on one GPU process:
    the network in fp32 (the parts its stage trains: ``teacher_trainable``), the VAE, gradients, optimizer
    states and activations, counted as for distillation."""
    from accelerate import init_empty_weights

    from animlcm.config import SIZES
    from animlcm.models.io import read_folder_meta
    from animlcm.models.network import NetworkConfig
    from animlcm.models.presets import empty_network, network_config
    from animlcm.stages.distill.teacher_training import teacher_trainable

    cfg.validate()
    if cfg.init is not None:
        net_cfg = NetworkConfig.from_dict(read_folder_meta(cfg.init)["network"])
        source = f"teacher {cfg.init}"
    else:
        net_cfg = network_config(cfg.preset, face_tokens=cfg.face_tokens)
        source = f"the {cfg.preset} preset's architecture"
    with init_empty_weights():
        net = empty_network(net_cfg)
    net = net.to("meta")
    teacher_trainable(net, cfg.stage)
    if cfg.gradient_checkpointing:
        from animlcm.models.checkpointing import enable_checkpointing

        enable_checkpointing(net)
    net.train()
    trained = [p for p in _unique_params(net).values() if p.requires_grad]
    rows = _weight_rows(net, "teacher")
    if fsdp_processes:
        rows = _fsdp_shares(rows, net, fsdp_processes)
    rows.append(("VAE", _vae_bytes(cfg.init), "fp32 weights"))
    rows += _training_rows(net, trained, cfg, 1, zero_processes, fsdp_processes)
    size = SIZES[cfg.preset]
    setting = (
        f"train-teacher / {cfg.stage} at {cfg.preset} ({size.height}x{size.width}, {cfg.frames_per_sample} "
        f"frame(s)), batch {cfg.batch_size}, mixed precision {cfg.mixed_precision}"
        f"{', gradient checkpointing' if cfg.gradient_checkpointing else ''}; architecture from {source}"
    )
    return MemoryPlan(rows, setting)


def _vae_bytes(teacher: Path | None) -> int:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    from animlcm.models.io import vae_folder

    folder = vae_folder(teacher) if teacher is not None else None
    if folder is None:
        return 83_653_863 * 4  # SD's VAE (sd-vae-ft-mse): 83.65 M parameters
    with init_empty_weights():
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder)))
    return _nbytes(_unique_params(vae), 4)


def print_plan(plan: MemoryPlan, gpu_gb: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"memory plan (one process): {plan.setting}")
    table.add_column("what")
    table.add_column("GB", justify="right")
    table.add_column("counted as")
    for what, nbytes, how in plan.rows:
        table.add_row(what, f"{nbytes / GB:.2f}", how)
    table.add_row("[bold]total", f"[bold]{plan.total / GB:.2f}", "plus the CUDA context and allocator slack")
    console = Console()
    console.print(table)
    if gpu_gb is not None:
        verdict = "fits" if plan.fits(gpu_gb) else "does NOT fit"
        console.print(f"{verdict} in {gpu_gb:g} GB ({plan.total / GB:.1f} GB planned)")

"""The one training loop (nanoGPT-flat), shared by `animlcm distill` and `animlcm train-teacher`.

What differs between the two is a step function ``step_fn(batch, model, generator) -> (loss, terms)``
and an ``after_step`` hook (the EMA target update for distillation); the loop owns everything else:
accelerate (``accelerate launch --multi_gpu -m animlcm.cli distill ...`` works unchanged), mixed precision,
gradient accumulation and clipping, AdamW (8-bit where bitsandbytes exists), atomic checkpoints,
bit-exact ``--resume``, the JSONL log, rich progress, and the NaN/inf guard.

Randomness: every (step, micro-batch, process) draws its noise and timesteps from its own generator,
seeded from ``(seed, step, micro, rank)``; samples are functions of their stream position (``data.py``).
So a resumed run sees exactly the numbers the straight run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from animlcm.config import save_config, to_plain
from animlcm.errors import AnimlcmError
from animlcm.stages.distill import fsdp, zero
from animlcm.stages.distill.checkpoint import (
    ProcessCountError,
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from animlcm.stages.distill.data import make_loader, to_device

StepFn = Callable[[dict[str, Any], nn.Module, torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class TrainJob:
    """Everything the loop needs, built by the stage's setup (distill or teacher training)."""

    out: Path
    student: nn.Module  # the network being optimised (its ``requires_grad`` parameters are trained)
    step_fn: StepFn
    dataset: torch.utils.data.Dataset
    # writes the result folder from the (unwrapped) student and the optimizer steps it has taken
    finish: Callable[[nn.Module, int], Path]
    target: nn.Module | None = None  # the EMA target, checkpointed with the student
    target_names: list[str] = field(default_factory=list)
    after_step: Callable[[nn.Module], None] | None = None  # called with the unwrapped student
    accelerator: Any = None  # made by ``make_accelerator`` before the models are built
    teacher: Any = None  # the frozen teacher the step reads (sharded with the student under FSDP)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    result: Path  # the student / teacher folder
    steps: int
    last_terms: dict[str, float]  # the mean over processes
    seconds_per_step: float
    main_process: bool = True  # False on the other ranks of a multi-process run: they print nothing


def make_accelerator(cfg: Any):
    """The accelerate ``Accelerator`` (CPU when there is no CUDA; multi-GPU when launched so; DeepSpeed ZeRO
    configured from the run's settings when launched with a DeepSpeed config; an FSDP config checked, the
    sharding itself being ``fsdp.shard``'s)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        # (accelerate skips DeepSpeed when told cpu=True; DeepSpeed has a CPU accelerator of its own)
        cpu=not torch.cuda.is_available() and not zero.requested(),
        # find_unused_parameters is set per run before prepare() (may_leave_unused)
        kwargs_handlers=[DistributedDataParallelKwargs()],
    )
    check_distributed_type(accelerator)  # (here: refused before any model loads)
    zero.configure(accelerator, cfg)
    fsdp.check(accelerator, cfg)
    return accelerator


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """A CPU generator for one micro-batch: noise and timesteps depend only on (seed, step, micro, rank)."""
    state = np.random.SeedSequence([seed, step, micro, rank]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))


def make_optimizer(params: list[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    if getattr(cfg, "adam_8bit", False):
        try:
            import bitsandbytes as bnb  # noqa: PLC0415

            return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        except ImportError:
            warnings.warn("adam_8bit: bitsandbytes is not installed; using torch AdamW", stacklevel=2)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------------------------- run folder
def check_inputs(out: Path, cache: Path, model: Path | None, resume: bool = False) -> None:
    """What a training run reads and writes, checked from files alone before the run folder is touched
    and before any model loads: --out (and its settings with --resume), the cache's manifest and files,
    the model folder's animlcm.json."""
    from animlcm.models.io import read_folder_meta
    from animlcm.outputs import check_output
    from animlcm.stages.distill.data import check_cache

    check_output(Path(out), "--out", folder=True)
    if resume and (Path(out) / "config.yaml").exists():
        _saved_settings(Path(out) / "config.yaml")
    check_cache(Path(cache))
    if model is not None:
        data = read_folder_meta(model)
        if data["kind"] != "teacher":  # a consistency student is not a diffusion model to learn from
            teacher = (data.get("meta") or {}).get("teacher")
            hint = f" (its teacher: {Path(model) / teacher})" if teacher else ""
            raise AnimlcmError(
                f"{model}: a {data['kind']} folder, not a teacher; pass the teacher folder it came from{hint}"
            )


def prepare_run_dir(out: Path, cfg: Any, resumable: frozenset[str], *, write: bool = True) -> None:
    """Check ``out`` against ``cfg`` (with ``resume``: the settings still match), then, with ``write`` (the
    main process only: the others would race it), create it and write ``config.yaml``.

    The run folder itself may have moved since it was written (``out`` is not compared), and path settings
    compare as the files they name (``runs/x`` and ``/abs/runs/x`` are the same cache)."""
    from animlcm.outputs import check_output, disk_errors

    out = Path(out)
    check_output(out, "--out", folder=True)  # before any model loads
    saved = out / "config.yaml"
    if cfg.resume:
        if not saved.exists():
            raise AnimlcmError(f"{out}: nothing to resume (no config.yaml); drop --resume to start this run")
        old = _saved_settings(saved)
        new = to_plain(cfg)
        paths = {k for k, v in dataclasses.asdict(cfg).items() if isinstance(v, Path)}
        changed = sorted(
            k
            for k in new
            if k not in resumable and k != "out" and k in old
            and not (_same_path(old[k], new[k]) if k in paths else old[k] == new[k])
        )  # fmt: skip
        if changed:
            diffs = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed[:4])
            raise AnimlcmError(
                f"{saved}: --resume with different settings ({diffs}); use the run's own settings "
                f"(--config {saved} --out {out}) or start a new --out"
            )
    elif latest_checkpoint(out) is not None:
        raise AnimlcmError(
            f"{out}: already holds checkpoints; pass --resume to continue it, or choose a new --out"
        )
    if write:
        with disk_errors(out):
            out.mkdir(parents=True, exist_ok=True)
            save_config(dataclasses.replace(cfg, resume=False), saved)


def _saved_settings(saved: Path) -> dict:
    """A run folder's config.yaml as a dict, or one line saying it is damaged."""
    import yaml

    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        old = None
    if not isinstance(old, dict):
        raise AnimlcmError(
            f"{saved}: unreadable settings (cut or broken by hand); restore the file or start a new --out"
        )
    return old


def _same_path(old: Any, new: Any) -> bool:
    """Two path settings name the same file: equal as typed, as resolved paths, or the same existing file."""
    if old == new or old is None or new is None:
        return old == new
    a, b = Path(str(old)), Path(str(new))
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


class JsonlLog:
    """``log.jsonl``: one line of every loss term per step (a resumed run drops lines past its checkpoint)."""

    def __init__(self, path: Path, keep_until_step: int | None, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        if keep_until_step is None:
            self.path.write_text("")
        elif self.path.exists():
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= keep_until_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            tmp.replace(self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def check_finite(terms: dict[str, torch.Tensor], step: int, out: Path) -> dict[str, float]:
    """The NaN/inf guard: stop, naming the step and the loss term, before a bad gradient is applied."""
    values = {k: float(v.detach().float()) for k, v in terms.items()}
    for name, value in values.items():
        if not math.isfinite(value):
            ckpt = latest_checkpoint(out)
            where = f"; the last good checkpoint is {ckpt}" if ckpt else ""
            raise AnimlcmError(
                f"step {step}: loss term '{name}' is {value} (training diverged); lower --lr, use "
                f"--mixed-precision bf16 or no, or check the cache's latents{where}"
            )
    return values


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TextColumn("{task.fields[rate]:.2f} steps/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


# ---------------------------------------------------------------------------------------------- the loop
def train(job: TrainJob, cfg: Any, *, description: str = "train") -> TrainResult:
    """Run ``cfg.max_steps`` optimizer steps of ``job.step_fn`` (continuing from a checkpoint with resume).

    A full or read-only disk stops the run with one line naming the last complete checkpoint (checkpoints
    are written whole or not at all, so ``--resume`` continues from it once there is space).
    """
    from animlcm.outputs import disk_errors

    def kept() -> str:
        ckpt = latest_checkpoint(job.out)
        if ckpt is None:
            return "no checkpoint was complete yet"
        return f"the last complete checkpoint {ckpt} is kept (--resume continues from it)"

    with disk_errors(Path(job.out), kept):
        return _train(job, cfg, description=description)


def may_leave_unused(net: nn.Module) -> bool:
    """Can a trained parameter get no gradient in a step? Where the reference net trains (the layers of its
    last up block after the last self-attention input it records feed nothing) or a face projector trains.
    DDP then searches the autograd graph after every forward (``find_unused_parameters``); everywhere else
    every trained parameter gets a gradient and the search is skipped."""
    parts = [getattr(net, name, None) for name in ("reference_unet", "face_projector")]
    return any(p.requires_grad for m in parts if m is not None for p in m.parameters())


def check_distributed_type(accelerator: Any) -> None:
    """DDP, DeepSpeed ZeRO-1/2 (``zero.configure`` refuses ZeRO-3), FSDP (``fsdp``) or one process.
    Megatron-LM's tensor parallelism splits layers the network code does not know how to split: refused in one
    line, not run wrongly."""
    kind = str(getattr(accelerator, "distributed_type", "NO")).split(".")[-1]
    if kind == "MEGATRON_LM":
        raise AnimlcmError(
            f"accelerate {kind}: not supported (it splits layers across processes); shard the weights with "
            f"FSDP instead: accelerate launch --config_file {fsdp.RECIPE}"
        )


def _train(job: TrainJob, cfg: Any, *, description: str) -> TrainResult:
    accelerator = job.accelerator or make_accelerator(cfg)
    Path(job.out).mkdir(parents=True, exist_ok=True)
    unwrapped = job.student
    train_names = [n for n, p in unwrapped.named_parameters() if p.requires_grad]
    if not train_names:
        raise AnimlcmError(f"{job.out}: nothing to train (no parameter requires grad); check train_modules")
    sharded = fsdp.requested()
    if sharded:  # student, EMA target and teacher sharded alike, in place (before the optimizer sees them)
        fsdp.shard([job.student, job.target, job.teacher], accelerator.device)
    params = [p for p in unwrapped.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    if accelerator.ddp_handler is not None:  # read by prepare(): DDP searches the graph only where needed
        accelerator.ddp_handler.find_unused_parameters = may_leave_unused(unwrapped)
    if sharded:  # the sharded network is the prepared model (accelerate's FSDP would wrap it again)
        model, engine = unwrapped, None
        shards = fsdp.OptimizerShards(optimizer, accelerator.process_index, accelerator.num_processes)
    else:
        model, optimizer = accelerator.prepare(unwrapped, optimizer)
        engine = zero.engine_of(model)  # DeepSpeed: optimizer shards are checkpointed by every process
        shards = zero.EngineShards(engine) if engine is not None else None

    # 1. resume: weights, EMA target, optimizer, RNG and data position from the newest checkpoint
    state = TrainState(step=0, data_position=0, processes=accelerator.num_processes)
    if cfg.resume:
        state = resume_state(job, unwrapped, train_names, optimizer, accelerator, shards)
    main = accelerator.is_main_process
    if state.step >= cfg.max_steps:
        if sharded:
            fsdp.gather_whole(unwrapped, keep=main)
        result = job.finish(unwrapped, state.step) if main else job.out
        accelerator.wait_for_everyone()
        return TrainResult(job.out, result, state.step, {}, 0.0, main)

    # 2. data: this process's stream, continued at its position
    per_step = cfg.batch_size * cfg.grad_accum
    loader = make_loader(
        job.dataset,
        batch_size=cfg.batch_size,
        start=state.data_position,
        offset=state.data_offset,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        num_workers=cfg.num_workers,
        pin_memory=accelerator.device.type == "cuda",
    )
    batches = iter(loader)
    log = JsonlLog(job.out / "log.jsonl", state.step if cfg.resume else None, accelerator.is_main_process)

    terms: dict[str, float] = {}
    started, first_step = time.perf_counter(), state.step
    show = bool(cfg.progress) and accelerator.is_main_process
    with _progress(show) as progress:
        task = progress.add_task(
            description, total=cfg.max_steps, completed=state.step, loss=float("nan"), rate=0.0
        )
        for step in range(state.step, cfg.max_steps):
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                batch = to_device(next(batches), accelerator.device)
                generator = step_generator(cfg.seed, step, micro, accelerator.process_index)
                with accelerator.accumulate(model):
                    with zero.autocast(accelerator, engine, cfg.mixed_precision):
                        loss, parts = job.step_fn(batch, model, generator)
                    # the terms first, so the guard names the term that went bad, not just the total
                    values = check_finite({**parts, "loss": loss}, step + 1, job.out)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:  # (the last micro-batch; a prepared optimizer checks too)
                        if cfg.grad_clip > 0:
                            accelerator.clip_grad_norm_(params, cfg.grad_clip)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
            # 3. the EMA target follows the student after every optimizer step
            if job.after_step is not None:
                job.after_step(unwrapped)
            state = dataclasses.replace(state, step=step + 1, data_position=state.data_position + per_step)
            dt = time.perf_counter() - t0
            logged = state.step % cfg.log_every == 0 or state.step == cfg.max_steps
            # every process takes part in the mean at the same steps (the log steps), so none waits alone
            terms = _mean_over_processes(sums, accelerator) if logged else sums
            if logged:
                log.write(
                    {
                        "step": state.step,
                        "loss": terms["loss"],
                        **terms,
                        "lr": optimizer.param_groups[0]["lr"],
                        "sec": round(dt, 4),
                    }
                )
            rate = (state.step - first_step) / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=state.step, loss=terms["loss"], rate=rate)
            # a wall-clock budget (--max-minutes) ends the run here, as if max_steps were reached; every
            # process takes the same decision (the slowest clock wins) so none waits alone in a collective
            out_of_time = False
            if cfg.max_minutes is not None:
                late = torch.tensor(
                    float(time.perf_counter() - started >= 60 * cfg.max_minutes), device=accelerator.device
                )
                out_of_time = bool(accelerator.reduce(late, reduction="max").item())
            # 4. checkpoint every N steps and at the end (so a later --max-steps can continue the run)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps or out_of_time:
                save_checkpoint(
                    job.out,
                    state,
                    student=unwrapped,
                    train_names=train_names,
                    optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                    target=job.target,
                    target_names=job.target_names,
                    keep=cfg.keep_checkpoints,
                    extra={"seed": cfg.seed},
                    scaler=accelerator.scaler,
                    shards=shards,
                    main=accelerator.is_main_process,
                    barrier=accelerator.wait_for_everyone,
                )
            if out_of_time:
                break
    accelerator.wait_for_everyone()
    if sharded:  # the result folder is written from whole weights (collective; the main process keeps them)
        fsdp.gather_whole(unwrapped, keep=main)
    result = job.finish(unwrapped, state.step) if main else job.out
    accelerator.wait_for_everyone()
    seconds = (time.perf_counter() - started) / max(state.step - first_step, 1)
    return TrainResult(job.out, result, state.step, terms, seconds, main)


def _mean_over_processes(terms: dict[str, float], accelerator: Any) -> dict[str, float]:
    """Each loss term averaged over the processes (each saw its own samples), in one collective."""
    if accelerator.num_processes == 1:
        return terms
    keys = sorted(terms)
    values = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    mean = accelerator.reduce(values, reduction="mean").tolist()
    return dict(zip(keys, mean, strict=True))


def _all_processes(flag: bool, accelerator: Any) -> bool:
    """True where ``flag`` holds on every process (one collective; no-op alone)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor(float(flag), device=accelerator.device)
    # (accelerate's reduce knows sum, mean and max; any other reduction silently sums)
    return bool(accelerator.reduce(value, reduction="sum").item() == accelerator.num_processes)


def resume_state(
    job: TrainJob, student: nn.Module, train_names: list[str], optimizer: Any, accelerator: Any,
    shards: Any = None,
) -> TrainState:  # fmt: skip
    """Load the newest intact checkpoint of ``job.out`` into the student, target and optimizer.

    A checkpoint that does not read (a cut file, a full disk) is reported in one line and the one before it
    is tried; a run stopped before its first checkpoint starts from step 0, as the straight run did. A run
    resumed with another process count continues the global sample stream where it stopped (no sample read
    twice or skipped); with an optimizer sharded per process (ZeRO, FSDP), it is refused."""
    found = list_checkpoints(job.out)
    say = (lambda m: print(m, flush=True)) if accelerator.is_main_process else (lambda m: None)
    now = accelerator.num_processes
    if not found:
        say(f"{job.out}: no checkpoint yet (stopped before the first); starting from step 0")
        return TrainState(step=0, data_position=0, processes=now)
    inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    reasons = []
    for ckpt in reversed(found):
        try:
            state = load_checkpoint(
                ckpt, student=student, train_names=train_names, optimizer=inner, target=job.target,
                target_names=job.target_names, scaler=accelerator.scaler, shards=shards,
                processes=now if shards is not None else None,
            )  # fmt: skip
            error = None
        except ProcessCountError:
            raise
        except AnimlcmError as damaged:  # one damaged file: the checkpoint before it may be whole
            error = damaged
        # every process continues from the same checkpoint: one whose shard does not read anywhere is dropped
        if _all_processes(error is None, accelerator):
            if state.processes == now:
                return state
            # each process takes every now-th sample from the first one not yet read
            say(
                f"{ckpt}: written by {state.processes} process(es), continued with {now}: the sample stream "
                f"goes on from sample {state.consumed()} (a step reads {now} x --batch-size x --grad-accum)"
            )
            return TrainState(step=state.step, data_position=0, processes=now, data_offset=state.consumed())
        reasons.append(str(error) if error is not None else f"{ckpt}: does not read on another process")
        line = f"{reasons[-1]}; trying the checkpoint before it" if ckpt != found[0] else reasons[-1]
        if error is not None or accelerator.is_main_process:  # (a process's own shard: it says so itself)
            print(line, flush=True)
    older = f"; none of the {len(found) - 1} checkpoint(s) before it reads either" if len(found) > 1 else ""
    raise AnimlcmError(reasons[0] + older)


# ---------------------------------------------------------------------------------------------- distill run
def _trainable(student: nn.Module, cfg: Any) -> None:
    """Freeze everything, then switch on what this method and stage train (DESIGN section 4)."""
    student.requires_grad_(False)
    mode = cfg.train_modules
    for name, p in student.named_parameters():
        head = name.split(".", 1)[0]
        if head in ("face_projector", "aux_head"):
            on = head == "face_projector" or bool(cfg.aux_head)  # an unused head would get no gradient (DDP)
        elif mode == "lora":
            on = "lora_" in name
        elif mode == "motion":
            on = head == "unet" and "motion_modules" in name and "lora_" not in name
        else:  # all: the denoiser and pose guider; motion modules only where they run (temporal stage)
            on = head in ("unet", "pose_guider") and (cfg.stage == "temporal" or "motion_modules" not in name)
        p.requires_grad_(on)


def _covers_motion(net: nn.Module) -> bool:
    return any("motion_modules" in n and "lora_" in n for n, _ in net.named_parameters())


def _init_folder(init: Path) -> Path:
    """``--init`` names a run folder (its ``student/``) or a model folder itself."""
    init = Path(init)
    return init / "student" if (init / "student").is_dir() else init


def with_heads(
    net: nn.Module, face_tokens: bool, aux_head: bool, *, copy: bool = True, share_tensors: bool = False
) -> nn.Module:
    """A copy of ``net`` (``copy=False``: ``net`` itself) with DanceLCM's face projector / aux head added
    (fresh) or removed as asked. ``share_tensors``: the copy's modules are new but hold ``net``'s own
    parameter and buffer tensors (the caller gives the ones that will train copies: ``own_trained_weights``),
    so the host never holds two copies of the network.

    A face projector added to a network without one is zero-initialised and read by decoupled attention, so
    the copy predicts exactly what ``net`` predicts until it trains."""
    import copy as copying

    from animlcm.models.conditioning import FaceProjector
    from animlcm.models.network import AuxHead

    memo = {id(t): t for t in (*net.parameters(), *net.buffers())} if share_tensors else {}
    out = copying.deepcopy(net, memo) if copy else net
    out.config = dataclasses.replace(net.config, face_tokens=face_tokens, aux_head=aux_head)
    width, c0 = out.unet.config.cross_attention_dim, out.unet.config.block_out_channels[0]
    if face_tokens and out.face_projector is None:
        # a new projector starts as a no-op (zero tokens, read decoupled): the student starts as its teacher
        out.config.face_attention = "decoupled"
        projector = FaceProjector(4, width, out.config.face_patch_size, zero_init=True)
        out.face_projector = projector.to(out.device)
    elif not face_tokens:
        out.face_projector = None
    if aux_head and out.aux_head is None:
        out.aux_head = AuxHead(c0, out.unet.config.norm_num_groups).to(out.device)
    elif not aux_head:
        out.aux_head = None
    return out


def ema_follows(student: nn.Module, cfg: Any) -> list[str]:
    """The parameters the EMA target follows: the trained ones, plus, under AnimateLCM's init strategy, the
    LoRA it zeroes in the target (which enters it only through the EMA)."""
    from animlcm.stages.distill.ema import ema_names

    lora_names = [n for n, _ in student.named_parameters() if "lora_" in n]
    return ema_names(student, extra=lora_names if cfg.lora_init_strategy else ())


def own_trained_weights(student: nn.Module, teacher: nn.Module) -> None:
    """Give every trainable parameter of a student built on the teacher's tensors (``load_student_start``)
    a copy of its own, so that training never writes into the teacher; frozen ones stay shared."""
    from animlcm.stages.distill.shared_base import replace_parameter

    theirs = {id(p) for p in teacher.parameters()}
    for name, p in list(student.named_parameters()):
        if p.requires_grad and id(p) in theirs:
            replace_parameter(student, name, nn.Parameter(p.detach().clone()))


def load_student_start(
    cfg: Any, teacher: nn.Module, device: torch.device, *, in_place: bool = False
) -> tuple[nn.Module, dict, Path | None]:
    """The student before training: the teacher's weights (or ``--init``'s), the method's heads, its LoRA.
    ``in_place``: built on the teacher network itself (a shared base, which needs no separate teacher).
    Otherwise, without ``--init``, the student holds the teacher's tensors until ``own_trained_weights``.

    Returns the student, ``--init``'s meta, and the folder holding the student's base weights (what a
    LoRA-only result is saved against; None where no folder does)."""
    from animlcm.models.io import load_model_folder
    from animlcm.models.lora import add_lora, has_lora, merge_lora

    init_meta: dict = {}
    base = teacher
    # the folder whose weights are the student's base (what a LoRA-only result is saved against)
    lora_base: Path | None = Path(cfg.teacher) if cfg.teacher is not None else None
    if cfg.init is not None:
        loaded = load_model_folder(_init_folder(cfg.init), device, vae=False)
        base, init_meta = loaded.net, dict(loaded.meta)
        lora_base = loaded.path
        if has_lora(base):  # a LoRA student: its base is its own base teacher (a link relative to it)
            from animlcm.models.linked import meta_target

            lora_base = meta_target(init_meta, "base_teacher", loaded.path, what="base teacher")
    # built on the teacher's own tensors (the caller gives what trains its copies: ``own_trained_weights``)
    student = with_heads(
        base, bool(cfg.face_tokens), bool(cfg.aux_head), copy=not in_place, share_tensors=base is teacher
    )
    if cfg.lora_rank and cfg.lora_layers == "all" and has_lora(student) and not _covers_motion(student):
        # a spatial LoRA from --init folds into the base; the new adapter covers spatial and motion layers.
        # No folder holds that base, so the result is saved with full weights.
        merge_lora(student)
        lora_base = None
    if cfg.lora_rank and not has_lora(student):
        add_lora(student, rank=cfg.lora_rank, layers=cfg.lora_layers, targets=cfg.lora_targets or "all")
    student.train()
    return student, init_meta, lora_base


def save_student(
    student: nn.Module,
    vae: Any,
    folder: Path,
    cfg: Any,
    teacher_path: Path,
    init_meta: dict,
    steps: int,
    lora_base: Path | None = None,
) -> Path:
    """The result folder the renderer loads: LoRA-only when nothing but the LoRA (and small heads) trained,
    else the full weights with any LoRA merged in."""
    from animlcm.diffusion.timesteps import segment_edges, segmented_plan
    from animlcm.models.io import save_model_folder
    from animlcm.models.lora import has_lora, merge_lora
    from animlcm.stages.distill.methods import ablation_label, merge_ablations
    from animlcm.stages.distill.shared_base import remove_ema_adapter

    remove_ema_adapter(student)  # the EMA target's adapter (shared base) is not part of the student

    segments = int(cfg.segments or 1)
    edges = segment_edges(segments, cfg.num_ddim_steps)
    # a stage started from an earlier student of the same method inherits that student's ablation
    earlier = init_meta.get("ablation", "") if init_meta.get("method") == cfg.method else ""
    meta = {
        "method": cfg.method,
        "ablation": merge_ablations(earlier, ablation_label(cfg)),
        "stage": cfg.stage,
        "trained_steps": steps,
        # the teacher guidance it imitates (a w_range student is trained for a range; None: unguided)
        "guidance_w": None if cfg.w_range is not None else float(cfg.w or 0.0),
        "segments": segments,
        "segment_edges": edges,
        "num_ddim_steps": cfg.num_ddim_steps,
        # 4 steps (or one per segment, if more): the (t, edge) walk the renderer takes by default
        "recommended_timesteps": [t for t, _ in segmented_plan(edges, max(4, segments), cfg.num_ddim_steps)],
    }
    # paths relative to the student folder (+ absolute fallbacks): a moved run folder still loads
    links = {"teacher": teacher_path, "spatial_run": cfg.init}
    # LoRA-only when nothing else trained and a folder holds the base the adapter applies to
    lora_only = has_lora(student) and cfg.train_modules == "lora" and lora_base is not None
    if lora_only:
        links["base_teacher"] = lora_base
    elif has_lora(student):
        merge_lora(student)
    student.eval()
    return save_model_folder(
        student,
        vae,
        folder,
        kind="student",
        meta=meta,
        lora=lora_only,
        links=links,
        share_from=None if cfg.standalone else teacher_path,
    )


@dataclass
class DistillNetworks:
    """What ``build_networks`` gives the distillation run."""

    student: nn.Module
    target: Any  # a module, or an AdapterView of the student (shared base)
    teacher: Any  # a module, an AdapterView of the student, or None (teacher-free)
    vae: nn.Module | None
    schedule: Any
    names: list[str]  # the parameters the EMA target follows
    init_meta: dict
    lora_base: Path | None


def build_networks(cfg: Any, device: torch.device) -> DistillNetworks:
    """Teacher, student and EMA target of the distillation run ``cfg`` (resolved), on ``device``.

    1. The frozen teacher, and the student: the teacher's weights (or ``--init``'s) plus the method's heads.
       Both are built on the host and moved once they are final, so the device never holds a transient
       second copy: its peak is what the memory plan counts. The student is built on the teacher's own
       tensors (a LoRA-only run on the teacher network itself) and takes copies only of what it trains, so
       the host never holds two fp32 copies either (19 GB at sd15).
    2. The EMA target copies what the EMA follows; the teacher keeps of its own what the student trains
       (``share_frozen_weights``), or, where the student trains most of it, a copy of everything in bf16/fp16
       under mixed precision. AnimateLCM's init strategy: the LoRA reaches the target only through the EMA.
    """
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.ema import make_target, zero_lora_in_target
    from animlcm.stages.distill.shared_base import (
        AdapterView,
        add_ema_adapter,
        share_frozen_weights,
        shares_base,
        shares_base_up_front,
    )

    loaded = load_model_folder(cfg.teacher, "cpu")
    teacher, vae = loaded.net.requires_grad_(False).eval(), loaded.vae
    in_place = cfg.init is None and shares_base_up_front(cfg, teacher)
    student, init_meta, lora_base = load_student_start(cfg, teacher, torch.device("cpu"), in_place=in_place)
    _trainable(student, cfg)
    if not in_place:
        own_trained_weights(student, teacher)
    if cfg.gradient_checkpointing:
        from animlcm.models.checkpointing import enable_checkpointing

        enable_checkpointing(student)
    names = ema_follows(student, cfg)
    shared_base = shares_base(cfg, student, None if in_place else teacher)
    if in_place and not shared_base:
        raise RuntimeError("shares_base_up_front and shares_base disagree: a bug, please report it")
    if shared_base:  # LoRA-only: teacher and target are the student's own base seen through its adapters
        target = add_ema_adapter(student).to_device(device)
        teacher = None if cfg.teacher_free else AdapterView(student, None)
    else:
        target = make_target(student, follows=names)
        shares_frozen = not cfg.teacher_free and share_frozen_weights(teacher, student) > 0
        student.to(device)
        target.to(device)
    if cfg.lora_init_strategy and cfg.stage == "temporal":
        zero_lora_in_target(target, owned=names)
    if cfg.teacher_free:
        teacher = None  # no teacher call at all: free its memory
    elif not shared_base:  # (a shared base runs in the student's dtype, under autocast; so do shared weights)
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
        teacher.to(device=device, dtype=half if device.type == "cuda" and not shares_frozen else None)
    vae = vae.to(device) if vae is not None else None
    return DistillNetworks(student, target, teacher, vae, loaded.schedule, names, init_meta, lora_base)


def run(cfg: Any, *, progress: bool | None = None) -> TrainResult:
    """`animlcm distill`: build teacher, student and EMA target, then train (see ``step.distill_step``)."""
    from animlcm.stages.distill.data import DistillDataset
    from animlcm.stages.distill.ema import update_ema
    from animlcm.stages.distill.step import DistillModels, distill_step, needs_faces, same_conditioning

    cfg = cfg.with_method_defaults()
    if progress is not None:
        cfg = dataclasses.replace(cfg, progress=progress)
    cfg.check_paths()
    out = Path(cfg.out)
    check_inputs(out, cfg.cache, cfg.teacher, cfg.resume)
    accelerator = make_accelerator(cfg)
    prepare_run_dir(out, cfg, _resumable(), write=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.seed)  # model heads built below start the same in a straight and a resumed run

    # 1-2. teacher, student and EMA target, built on the host and moved to the device once final (under FSDP
    #      the loop moves them, shard by shard, as it shards them)
    nets = build_networks(cfg, torch.device("cpu") if fsdp.requested() else accelerator.device)
    student, target, teacher, vae, names = nets.student, nets.target, nets.teacher, nets.vae, nets.names
    vae = vae.to(accelerator.device) if vae is not None else None
    init_meta, lora_base = nets.init_meta, nets.lora_base

    # 3. data: clips (temporal) or single frames (spatial), with the references the losses need, and face
    #    crops when the student or the teacher has face tokens (each sees the conditioning it has)
    faces = needs_faces(student, teacher)
    if faces and vae is None:
        raise AnimlcmError(
            f"{cfg.teacher}: the teacher folder has no vae/, which face tokens need for the face crops; "
            "re-create it with `animlcm teacher init`, or distill a teacher and student without face tokens"
        )
    dataset = DistillDataset(
        cfg.cache,
        num_frames=cfg.frames_per_sample,
        stride=cfg.frame_stride,
        maps=tuple(student.pose_guider.maps),
        second_reference=cfg.needs_second_reference,
        other_reference=cfg.needs_other_reference,
        motion_delta=cfg.motion_delta,
        faces=faces,
        preload=cfg.preload,
        seed=cfg.seed,
    )
    # the frozen reference net runs once per step where target and teacher would compute the same features
    models = DistillModels(
        student=student, target=target, teacher=teacher, schedule=nets.schedule,
        vae=vae if faces else None,
        target_same_conditioning=cfg.reuse_reference and same_conditioning(student, target),
        teacher_same_conditioning=cfg.reuse_reference and same_conditioning(student, teacher),
    )  # fmt: skip

    def step_fn(batch, model, generator):
        return distill_step(batch, model, models, cfg, generator)

    def finish(trained: nn.Module, steps: int) -> Path:
        return save_student(trained, vae, out / "student", cfg, cfg.teacher, init_meta, steps, lora_base)

    job = TrainJob(
        out=out, student=student, step_fn=step_fn, dataset=dataset, finish=finish, target=target,
        target_names=names, after_step=lambda s: update_ema(target, s, names, cfg.ema),
        accelerator=accelerator, teacher=teacher,
    )  # fmt: skip
    return train(job, cfg, description=f"distill {cfg.method}/{cfg.stage}")


def _resumable() -> frozenset[str]:
    from animlcm.stages.distill.config import RESUMABLE_CHANGES

    return RESUMABLE_CHANGES

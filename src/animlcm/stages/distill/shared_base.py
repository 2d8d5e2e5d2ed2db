"""One copy of the base network for teacher, student and EMA target in LoRA distillation (diffusers' LCM-LoRA
script does the same): the student is the base + its LoRA adapter, the teacher is the same network with the
adapters off, and the EMA target is the same network with a second adapter (``ema``) that holds the EMA of
the student's adapter (AnimateLCM's init strategy: it starts at zero and the LoRA enters it only through the
EMA). At sd15 that saves the teacher's copy (4.6 GB in bf16) and the target's (4.9 GB in fp32).

It applies when only the LoRA trains (``--train-modules lora``), the student has no face projector (which
would train and need its own EMA), and the student's base weights equal the teacher's (no ``--init`` from a
full student). The numbers are the same as with separate copies, bit for bit (tested): the adapter switch
only chooses which LoRA branch a layer adds, exactly as separate networks would.

Adapters are switched by setting peft's per-layer ``_active_adapter`` / ``_disable_adapters`` directly rather
than with ``set_adapter``, which would also flip ``requires_grad`` on the student's adapter mid-step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from animlcm.models.lora import ADAPTER

EMA_ADAPTER = "ema"


def shares_base(cfg: Any, student: nn.Module, teacher: nn.Module | None) -> bool:
    """Can teacher and target be views of the student (see the module doc)? On the meta device (the memory
    plan) the architectures are compared, the weights assumed equal."""
    from animlcm.models.lora import has_lora

    if not (cfg.share_base and cfg.train_modules == "lora" and has_lora(student)):
        return False
    if getattr(student, "face_projector", None) is not None:
        return False
    trained = [n for n, p in student.named_parameters() if p.requires_grad]
    if any(f".{ADAPTER}." not in n for n in trained):  # a trained head (aux head) would need its own EMA
        return False
    return cfg.teacher_free or teacher is None or _base_equals(student, teacher)


def shares_base_up_front(cfg: Any, teacher: nn.Module) -> bool:
    """Will :func:`shares_base` hold for a student built from ``teacher`` itself (no ``--init``)? Decided from
    the settings before the student exists, so that it can be built on the teacher network in place: a
    LoRA-only run, no face projector in the student (nor one in the teacher that the student would drop),
    no trained aux head."""
    return bool(
        cfg.share_base
        and cfg.train_modules == "lora"
        and cfg.lora_rank
        and not cfg.face_tokens
        and not cfg.aux_head
        and getattr(teacher, "face_projector", None) is None
    )


def _base_equals(student: nn.Module, teacher: nn.Module) -> bool:
    """The student's weights without its adapter are the teacher's, value for value."""
    mine = {n.replace(".base_layer", ""): p for n, p in student.named_parameters() if "lora_" not in n} | {
        n.replace(".base_layer", ""): b for n, b in student.named_buffers()
    }
    theirs = dict(teacher.named_parameters()) | dict(teacher.named_buffers())
    drop = {n for n in mine if n.split(".", 1)[0] == "aux_head"}  # the student's own head (frozen here)
    mine = {n: v for n, v in mine.items() if n not in drop}
    same = (
        mine[n].shape == theirs[n].shape
        and mine[n].dtype == theirs[n].dtype
        # on the meta device (the memory plan) only the architecture can be compared
        and (mine[n].is_meta or theirs[n].is_meta or torch.equal(mine[n], theirs[n]))
        for n in mine
    )
    return mine.keys() == theirs.keys() and all(same)


def _tuner_layers(net: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in net.unet.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def adapter(net: nn.Module, name: str | None) -> Iterator[None]:
    """Run ``net`` with adapter ``name`` active (None: no adapter, the base network) and in eval mode, as the
    separate teacher and target copies run, then restore both."""
    layers = _tuner_layers(net)
    saved = [(m._active_adapter, m._disable_adapters) for m in layers]
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        for m in layers:
            if name is None:
                m._disable_adapters = True
            else:
                m._active_adapter = name if isinstance(m._active_adapter, str) else [name]
                m._disable_adapters = False
        yield
    finally:
        for m, (active, disabled) in zip(layers, saved, strict=True):
            m._active_adapter, m._disable_adapters = active, disabled
        for m, training in modes:
            m.training = training


class AdapterView:
    """The student network seen through one adapter: the teacher (``None``) or the EMA target (``"ema"``).

    Calls and ``encode_conditioning`` run with that adapter; every other attribute is the student's own
    (the frozen encoders, heads, dtype). ``named_parameters`` gives the target's followed weights: the EMA
    adapter's tensors under the student's adapter names, which is what the EMA update and the checkpoint
    read (so a checkpoint is the same whether or not the base is shared)."""

    def __init__(self, net: nn.Module, name: str | None):
        self._net = net
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with adapter(self._net, self._name):
            return self._net(*args, **kwargs)

    def encode_conditioning(self, *args: Any, **kwargs: Any) -> Any:
        with adapter(self._net, self._name):
            return self._net.encode_conditioning(*args, **kwargs)

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        if self._name is None:
            return iter(())
        own = f".{self._name}."
        return ((n.replace(own, f".{ADAPTER}."), p) for n, p in self._net.named_parameters() if own in n)

    def parameters(self) -> Iterator[nn.Parameter]:
        return (p for _, p in self.named_parameters())

    def to_device(self, device: torch.device) -> AdapterView:
        """Move the (whole, shared) network to ``device``; returns this view."""
        self._net.to(device)
        return self

    def __getattr__(self, item: str) -> Any:
        return getattr(self._net, item)


def add_ema_adapter(student: nn.Module) -> AdapterView:
    """Give the student a frozen second adapter holding a copy of its own (the EMA target's start) and return
    the target's view of it."""
    import copy

    unet = student.unet
    config = copy.deepcopy(unet.peft_config[ADAPTER])
    trainable = {n: p.requires_grad for n, p in student.named_parameters()}
    unet.add_adapter(config, adapter_name=EMA_ADAPTER)
    # diffusers' add_adapter activates the new adapter; make the student's own the active one again, and put
    # every requires_grad back as it was (peft's set_adapter would change them)
    for m in _tuner_layers(student):
        m._active_adapter = ADAPTER if isinstance(m._active_adapter, str) else [ADAPTER]
    params = dict(student.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            if f".{EMA_ADAPTER}." in n:
                p.copy_(params[n.replace(f".{EMA_ADAPTER}.", f".{ADAPTER}.")])
                p.requires_grad_(False)
            else:
                p.requires_grad_(trainable[n])
    return AdapterView(student, EMA_ADAPTER)


def remove_ema_adapter(student: nn.Module) -> None:
    """Drop the EMA adapter (before the student is saved or merged)."""
    if EMA_ADAPTER in getattr(student.unet, "peft_config", {}):
        student.unet.delete_adapters(EMA_ADAPTER)
        for m in _tuner_layers(student):
            m._active_adapter = ADAPTER if isinstance(m._active_adapter, str) else [ADAPTER]


def share_frozen_weights(
    teacher: nn.Module, student: nn.Module, *, assume_equal: bool = False, at_least: float = 0.5
) -> int:
    """Where the student holds one of the teacher's weights frozen and unchanged, make the teacher use the
    student's tensor instead of its own copy; returns the number of weights shared (0: none, the teacher
    then holds every weight of its own).

    For runs that train more than a LoRA, the other half of the shared base: in AnimateLCM's temporal stage
    only the motion modules train, and the teacher's spatial UNet, reference net and image encoder (4.6 GB in
    bf16 at sd15) are the student's frozen ones. Exact: those tensors never change in the run. Done only
    when at least half (``at_least``) of the teacher's weights are shared, since the teacher then runs on
    the student's fp32 tensors (under autocast) instead of a bf16 copy; below that, tensors the two already
    share (a student built on the teacher's) are copied back into the teacher, which may then be cast. Call
    it with both networks on the host, before either moves to the device. ``assume_equal``: on the meta
    device (the memory plan) values cannot be compared; the caller says whether the student was built from
    this teacher."""
    frozen = {
        n.replace(".base_layer", ""): p
        for n, p in student.named_parameters()
        if not p.requires_grad and "lora_" not in n
    }
    pairs = []
    for name, mine in teacher.named_parameters():
        theirs = frozen.get(name)
        if theirs is None or theirs.shape != mine.shape or theirs.dtype != mine.dtype:
            continue
        if theirs is mine or (assume_equal if mine.is_meta or theirs.is_meta else torch.equal(mine, theirs)):
            pairs.append((name, theirs))
    shared = sum(p.numel() for _, p in pairs)
    students = {id(p) for p in student.parameters()}
    if shared < at_least * sum(p.numel() for p in teacher.parameters()):
        pairs = [(n, p.detach().clone()) for n, p in teacher.named_parameters() if id(p) in students]
        shared = 0
    for name, tensor in pairs:
        replace_parameter(teacher, name, tensor if shared else nn.Parameter(tensor, requires_grad=False))
    return shared


def replace_parameter(net: nn.Module, name: str, param: nn.Parameter) -> None:
    """Make ``net``'s parameter ``name`` (dotted) the tensor ``param``: shared with another network, or a
    copy that ends a sharing."""
    owner, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(owner), leaf, param)

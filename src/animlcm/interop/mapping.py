"""Strict matching of teacher checkpoint tensors to the network's state dict, and the way back.

``match_sources`` decides, for every source tensor, where it goes (or that it is a known extra) and checks
that every network tensor the format covers is filled; anything else is collected and reported in one
error that lists the names. ``export_tensors`` is the inverse: network state dict -> the format's files.
Both work on plain ``{name: tensor}`` dicts, so they are tested without building big models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from animlcm.errors import AnimlcmError
from animlcm.interop import layouts
from animlcm.interop.layouts import FileSpec, TeacherFormat

# The sinusoidal tables are recomputed in float32 on both sides; a fp16 checkpoint rounds them to ~5e-4.
PE_TOLERANCE = 2e-3
SHOW_NAMES = 12


@dataclass
class SourceFile:
    """The tensors of one teacher checkpoint file."""

    spec: FileSpec
    path: Path
    tensors: dict[str, torch.Tensor]

    @property
    def label(self) -> str:
        return self.path.name


@dataclass
class Match:
    """Where each source tensor goes: ``assign[target] = (file label, source key)``; extras set aside."""

    assign: dict[str, tuple[str, str]] = field(default_factory=dict)
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # stem -> key -> tensor
    position_tables: int = 0  # pos_encoder.pe tables checked against the network's own

    def tensors(self, files: Iterable[SourceFile]) -> dict[str, torch.Tensor]:
        by_label = {f.label: f for f in files}
        return {t: by_label[label].tensors[key] for t, (label, key) in self.assign.items()}


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOW_NAMES])
    return shown + (f" ... and {len(items) - SHOW_NAMES} more" if len(items) > SHOW_NAMES else "")


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def match_sources(
    fmt: TeacherFormat, files: list[SourceFile], target: dict[str, torch.Tensor], where: str | Path = ""
) -> Match:
    """Map every tensor of ``files`` onto ``target`` (the network's state dict), or fail listing the misfits.

    Strict both ways: every source tensor is used or is a known extra (``layouts.SOURCE_EXTRAS``), and every
    network tensor under the covered submodules is filled or is a known unfilled buffer
    (``layouts.TARGET_UNFILLED``). Pose-guider encoders count only for the maps the files provide.
    """
    match = Match()
    unexpected: list[str] = []
    shapes: list[str] = []
    conflicts: list[str] = []
    bad_pe: list[str] = []
    for f in files:
        for key, tensor in f.tensors.items():
            pe_target = layouts.source_pe_target(key) if f.spec.part == "unet" else None
            if pe_target is not None:
                pe_target = f.spec.target_prefix + pe_target
                own = target.get(pe_target)
                if own is None or own.shape != tensor.shape:
                    bad_pe.append(
                        f"{f.label}:{key} ({_shape(tensor)} vs {_shape(own) if own is not None else 'none'})"
                    )
                elif not torch.allclose(own.float(), tensor.float(), atol=PE_TOLERANCE, rtol=0):
                    bad_pe.append(f"{f.label}:{key} (values differ from the sinusoidal table)")
                else:
                    match.position_tables += 1
                continue
            t = layouts.source_to_target(f.spec, key)
            # unused network tensors (the reference net's output head) are never overwritten: a checkpoint
            # that carries them keeps them as extras, so the export writes back exactly what came in
            if t not in target or layouts.is_target_unfilled(t):
                if layouts.is_source_extra(f.spec, key):
                    match.extras.setdefault(f.spec.stem, {})[key] = tensor
                else:
                    unexpected.append(f"{f.label}:{key}")
                continue
            if target[t].shape != tensor.shape:
                shapes.append(f"{f.label}:{key} {_shape(tensor)} -> {t} {_shape(target[t])}")
                continue
            if t in match.assign:
                # the same tensor in two files (e.g. a denoising_unet saved with its motion modules, and
                # motion_module.pth beside it) is fine as long as both hold the same values
                other_label, other_key = match.assign[t]
                other = next(x for x in files if x.label == other_label).tensors[other_key]
                if not torch.equal(other.to(tensor.dtype), tensor):
                    conflicts.append(f"{t} ({other_label} vs {f.label})")
                continue
            match.assign[t] = (f.label, key)

    guider_prefixes = tuple(f.spec.target_prefix for f in files if f.spec.part == "guider")
    missing = [
        t
        for t in target
        if layouts.is_covered(t)
        and t not in match.assign
        and not layouts.is_target_unfilled(t)
        and (not t.startswith("pose_guider.") or t.startswith(guider_prefixes))
    ]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} source tensors match no network parameter: {_names(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} network parameters have no source tensor: {_names(missing)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_names(shapes)}")
    if conflicts:
        problems.append(f"{len(conflicts)} tensors given twice with different values: {_names(conflicts)}")
    if bad_pe:
        problems.append(
            f"{len(bad_pe)} temporal position tables do not match (max length must be 32): {_names(bad_pe)}"
        )
    if problems:
        raise AnimlcmError(
            f"{where or 'teacher weights'}: not a {fmt.title} checkpoint of the expected layout "
            f"({fmt.layout_source}); "
            + "; ".join(problems)
            + ". Pass the original files (renamed keys and other architectures are not supported)"
        )
    return match


def load_into(net: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy matched tensors into the network's parameters/buffers in place (cast to each one's dtype)."""
    state = net.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value.to(dtype=state[name].dtype))


def check_exportable(fmt: TeacherFormat, state: dict[str, torch.Tensor]) -> None:
    """Refuse networks whose pose guider the format's own code would run differently."""
    maps = sorted({k.split(".")[2] for k in state if k.startswith("pose_guider.encoders.")})
    has_attention = any(".attentions." in k for k in state if k.startswith("pose_guider.encoders."))
    if fmt.name == "moore-aa":
        if maps != ["skeleton"]:
            raise AnimlcmError(
                f"this network's pose guider takes {', '.join(maps)}; Moore-AnimateAnyone's format holds one "
                "skeleton pose guider: export it with --format champ, or distill a skeleton-only student"
            )
        if has_attention:
            raise AnimlcmError(
                "this network's pose guider uses Champ's guidance attention, which Moore-AnimateAnyone's "
                "PoseGuider lacks: export it with --format champ"
            )
    if fmt.name == "champ" and not has_attention:
        raise AnimlcmError(
            "Champ's GuidanceEncoder runs an attention layer this network's pose guider does not have "
            "(it was not imported from Champ): export it with --format moore-aa"
        )


def export_tensors(
    fmt: TeacherFormat,
    state: dict[str, torch.Tensor],
    extras: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """The network's state dict as the format's files: ``{file stem: {source key: tensor}}``.

    Inverse of ``match_sources``: the position tables are written from the network's own (identical) ones,
    and ``extras`` (known extras set aside at import) go back into their files, so an import followed by
    an export gives the original files back bit for bit.
    """
    check_exportable(fmt, state)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for t, value in state.items():
        if not layouts.is_covered(t):
            continue
        if t.endswith(".pos_embed.pe") and t.startswith("unet."):
            for key in layouts.target_pe_sources(t[len("unet.") :]):
                # one copy each: files written with safetensors may not share storage between tensors
                out.setdefault("motion_module", {})[key] = value.clone()
            continue
        if layouts.is_target_unfilled(t):
            continue
        spec = layouts.export_spec_for(fmt, t)
        if spec is None:
            raise AnimlcmError(f"network tensor {t} has no place in the {fmt.title} format")
        out.setdefault(spec.stem, {})[layouts.target_to_source(spec, t)] = value
    for stem, tensors in (extras or {}).items():
        for key, value in tensors.items():
            out.setdefault(stem, {}).setdefault(key, value)
    return out

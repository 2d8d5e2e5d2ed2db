"""Model folders in the diffusers layout: one subfolder per component, each loadable with its library's own
``from_pretrained``, and a ``model_index.json`` naming the pipeline (``animlcm.AnimationPipeline``).

    DIR/model_index.json                     {"_class_name": "AnimationPipeline", part: [library, class]}
    DIR/unet/                                diffusers UNetMotionModel (config.json +
                                             diffusion_pytorch_model.safetensors)
    DIR/reference_unet/                      diffusers UNet2DConditionModel
    DIR/pose_guider/                         animlcm.models.components.PoseGuiderModel
    DIR/image_encoder/                       transformers CLIPVisionModelWithProjection (model.safetensors)
    DIR/face_projector/, DIR/aux_head/       animlcm.models.components models, where the network has them
    DIR/vae/                                 diffusers AutoencoderKL
    DIR/scheduler/                           DDIMScheduler | LCMScheduler | SegmentedConsistencyScheduler

A student's parts that equal its teacher's bit for bit may be left out and linked instead (``shared``, see
``linked.py``): the index still names them, their files stay in the teacher's folder.

``animlcm.json`` stays next to them: kind, meta and the network config the project's own loader (and every
stage's precheck) reads without touching weights. This module writes and reads the components; ``io.py``
owns the folder as a whole (atomic writes, strict loads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_INDEX = "model_index.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
PIPELINE_CLASS = "AnimationPipeline"
COMPONENTS_LIBRARY = "animlcm.models.components"
NETWORK_PARTS = ("unet", "reference_unet", "pose_guider", "image_encoder", "face_projector", "aux_head")
OPTIONAL_PARTS = ("face_projector", "aux_head")
# The network drops the reference net's output layers (never used: only its attention inputs are); the
# folder keeps neutral ones so that reference_unet/ loads as a plain UNet2DConditionModel.
REFERENCE_HEAD = ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias")


def is_diffusers_folder(directory: str | Path) -> bool:
    return (Path(directory) / MODEL_INDEX).is_file()


def weights_file(directory: Path, part: str) -> Path:
    """Where a component's weights live (transformers names its file differently from diffusers)."""
    return directory / part / (TRANSFORMERS_WEIGHTS if part == "image_encoder" else DIFFUSERS_WEIGHTS)


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # LoRA layers are never part of a component: a LoRA student keeps its adapter in lora/
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items() if "lora_" not in k}


def _reference_head(reference_unet: nn.Module, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Neutral output layers (unit GroupNorm, zero conv) for the reference net's folder."""
    cfg = reference_unet.config
    if cfg.norm_num_groups is None:
        return {
            "conv_out.weight": like.new_zeros(cfg.out_channels, cfg.block_out_channels[0], 3, 3),
            "conv_out.bias": like.new_zeros(cfg.out_channels),
        }
    c0 = cfg.block_out_channels[0]
    return {
        "conv_norm_out.weight": like.new_ones(c0),
        "conv_norm_out.bias": like.new_zeros(c0),
        "conv_out.weight": like.new_zeros(cfg.out_channels, c0, 3, 3),
        "conv_out.bias": like.new_zeros(cfg.out_channels),
    }


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # "format": "pt" is what transformers' loader checks; diffusers writes the same header
    save_file(state, str(path), metadata={"format": "pt"})


def write_components(
    tmp: Path,
    net: nn.Module,
    vae: Any,
    scheduler: Any,
    extra: dict | None = None,
    shared: set[str] | frozenset[str] = frozenset(),
) -> dict:
    """Write every component of ``net`` (+ ``vae``, ``scheduler``) into ``tmp`` and its ``model_index.json``
    (``extra``: the pipeline's config values); parts in ``shared`` are indexed but not written (they live in
    the teacher's folder). Returns the index."""
    import diffusers

    from animlcm.models.components import part_model

    index: dict[str, Any] = {"_class_name": PIPELINE_CLASS, "_diffusers_version": diffusers.__version__}
    index.update(extra or {})
    for part in NETWORK_PARTS:
        module = getattr(net, part, None)
        index[part] = [None, None] if module is None else _index_entry(part, module)
        if module is None or part in shared:
            continue
        state = _plain_state(module)
        sub = tmp / part
        sub.mkdir(parents=True)
        if part == "image_encoder":
            module.config.save_pretrained(str(sub))
        elif part in ("unet", "reference_unet"):
            module.save_config(str(sub))
            if part == "reference_unet":
                state.update(_reference_head(module, next(iter(state.values()))))
        else:
            part_model(part, module).save_config(str(sub))
        _save_weights(state, weights_file(tmp, part))
    if vae is not None:
        if "vae" not in shared:
            vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)
        index["vae"] = _index_entry("vae", vae)
    scheduler.save_pretrained(str(tmp / "scheduler"))
    index["scheduler"] = [_library_of(scheduler), type(scheduler).__name__]
    (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


def _index_entry(part: str, module: nn.Module) -> list[str]:
    """``[library, class]`` as ``write_components`` indexes ``part`` (the VAE included)."""
    from animlcm.models.components import part_model

    if part == "image_encoder":
        return ["transformers", type(module).__name__]
    if part in ("unet", "reference_unet", "vae"):
        return ["diffusers", type(module).__name__]
    return [COMPONENTS_LIBRARY, type(part_model(part, module)).__name__]


def shareable_parts(net: nn.Module, vae: Any, teacher: Path, read: Any) -> list[str]:
    """The parts of ``net`` (and ``vae``) whose weights equal those in the diffusers-layout folder
    ``teacher`` value for value (so loading the teacher's file gives back exactly this student's tensors);
    ``read(path)`` reads one weights file."""
    if not is_diffusers_folder(teacher):
        return []
    index = read_index(teacher)
    modules = {p: getattr(net, p, None) for p in NETWORK_PARTS}
    modules["vae"] = vae
    same = []
    for part, module in modules.items():
        entry = index.get(part)
        path = weights_file(teacher, part)
        if module is None or not entry or entry[0] is None or not path.is_file():
            continue
        if _index_entry(part, module) != list(entry):
            continue
        theirs = read(path)
        if part == "reference_unet":
            theirs = {k: v for k, v in theirs.items() if k not in REFERENCE_HEAD}
        ours = _plain_state(module)
        if ours.keys() == theirs.keys() and all(
            ours[k].shape == theirs[k].shape and torch.equal(theirs[k].to(ours[k].dtype), ours[k])
            for k in ours
        ):
            same.append(part)
    return same


def _library_of(obj: Any) -> str:
    """diffusers' own rule (``_fetch_class_library_tuple``): the top package for diffusers/transformers
    classes, the defining module for anyone else's, which is what ``from_pretrained`` imports."""
    module = type(obj).__module__
    top = module.split(".")[0]
    return top if top in ("diffusers", "transformers") else module


def read_index(directory: Path) -> dict:
    from animlcm.errors import AnimlcmError

    path = directory / MODEL_INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnimlcmError(f"{path}: unreadable ({exc.__class__.__name__}); copy the folder again") from None
    if not isinstance(index, dict) or index.get("_class_name") != PIPELINE_CLASS:
        raise AnimlcmError(f"{path}: not an animlcm model index (_class_name must be {PIPELINE_CLASS})")
    return index


def read_network_state(directory: Path, read: Any, shared: dict | None = None) -> dict[str, torch.Tensor]:
    """The network's state dict (``part.key``) from the component folders (``shared``: the parts linked to
    another folder, see ``linked.py``); ``read(path)`` reads one file."""
    from animlcm.models.linked import shared_source

    index = read_index(directory)
    state: dict[str, torch.Tensor] = {}
    for part in NETWORK_PARTS:
        entry = index.get(part)
        if not entry or entry[0] is None:
            continue
        home = shared_source(directory, part, shared[part]) if part in (shared or {}) else directory
        tensors = read(weights_file(home, part))
        if part == "reference_unet":
            tensors = {k: v for k, v in tensors.items() if k not in REFERENCE_HEAD}
        state.update({f"{part}.{k}": v for k, v in tensors.items()})
    return state

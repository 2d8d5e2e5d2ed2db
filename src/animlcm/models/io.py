"""Model folders: what ``teacher init`` / ``teacher import`` / ``train-teacher`` / ``distill`` write and every
later stage loads with one call.

New full-weight folders are in the diffusers layout (``diffusers_folder.py``: ``model_index.json``, one
subfolder per component, ``scheduler/``), so ``AnimationPipeline.from_pretrained`` and each library's own
``from_pretrained`` load them; ``animlcm.json`` ("format": 2, "layout": "diffusers") rides along. Folders in
the earlier flat layout ("format": 1) still load, and LoRA students are still written in it:

    DIR/animlcm.json          {"format": 1, "kind": "teacher"|"student", "network": NetworkConfig,
                               "schedule": NoiseSchedule dict, "meta": {...}}
    DIR/model.safetensors     the full state dict                  (full weights), or
    DIR/lora/                 pytorch_lora_weights.safetensors     (LoRA student: base = meta["base_teacher"])
    DIR/extra.safetensors     the LoRA student's own non-UNet parts (pose guider, face projector, aux head)
    DIR/vae/                  a diffusers AutoencoderKL folder

Folders a folder points at (a student's ``teacher``, a LoRA student's ``base_teacher``, the teacher holding a
full student's ``shared`` parts) are recorded relative to it, with the absolute path as a fallback
(``linked.py``): a moved or copied pair still loads.

Writes go to ``DIR.tmp``, renamed at the end; loads are strict (every key, right shapes, nothing extra).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError
from animlcm.models.aligned import realign
from animlcm.models.network import AnimationNetwork, NetworkConfig

META_FILE = "animlcm.json"
WEIGHTS_FILE = "model.safetensors"
EXTRA_FILE = "extra.safetensors"
LORA_DIR = "lora"
VAE_DIR = "vae"
KINDS = ("teacher", "student")
FORMAT = 1  # the flat layout
DIFFUSERS_FORMAT = 2
LAYOUTS = ("diffusers", "flat")
LORA_EXTRA_PARTS = ("pose_guider.", "face_projector.", "aux_head.")
ModelFolderKind = Literal["teacher", "student"]


@dataclass
class LoadedModel:
    """A loaded model folder."""

    net: AnimationNetwork
    vae: Any  # diffusers AutoencoderKL
    schedule: NoiseSchedule
    kind: str  # "teacher" | "student"
    meta: dict = field(default_factory=dict)
    path: Path | None = None


def read_folder_meta(directory: str | Path) -> dict:
    """``animlcm.json`` of a model folder; one clear line when DIR is not a model folder."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.exists():
        what = "does not exist" if not directory.exists() else f"has no {META_FILE}"
        raise AnimlcmError(
            f"{directory}: not a teacher or student folder ({what}); make one with `animlcm teacher init` "
            "or `animlcm distill`"
        )
    try:
        data = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise AnimlcmError(f"{meta_path}: not valid JSON ({exc.msg}); re-create the folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AnimlcmError(f"{meta_path}: unreadable ({why}); check its permissions, or re-create it") from (
            None
        )
    if not isinstance(data, dict) or data.get("kind") not in KINDS or "network" not in data:
        raise AnimlcmError(
            f"{meta_path}: kind must be one of {KINDS} with a network config; re-create the folder"
        )
    return data


def result_folder(path: str | Path) -> Path:
    """A model folder as given, or the result inside a run folder (``distill``'s ``student/``,
    ``train-teacher``'s ``teacher/``), so every command that takes a model folder takes a run folder too."""
    path = Path(path)
    if not (path / META_FILE).exists():
        for inner in ("student", "teacher"):
            if (path / inner / META_FILE).exists():
                return path / inner
    return path


def vae_folder(directory: str | Path) -> Path | None:
    """The VAE folder a model folder uses: its own ``vae/``, the linked teacher's (a student that shares it),
    or its LoRA base's; None when it has none (the preset's default VAE then)."""
    from animlcm.models.linked import meta_target, shared_source

    directory = Path(directory)
    own = directory / VAE_DIR
    if (own / "config.json").exists():
        return own
    data = read_folder_meta(directory)
    shared = data.get("shared") or {}
    if "vae" in shared:
        return shared_source(directory, "vae", shared["vae"]) / VAE_DIR
    if is_lora_folder(directory):
        base = meta_target(data.get("meta") or {}, "base_teacher", directory, what="base teacher") / VAE_DIR
        return base if (base / "config.json").exists() else None
    return None


def folder_kind(directory: str | Path) -> ModelFolderKind:
    """``"teacher"`` or ``"student"`` (AnimlcmError when DIR is neither)."""
    return read_folder_meta(directory)["kind"]


def is_lora_folder(directory: str | Path) -> bool:
    return (Path(directory) / LORA_DIR).is_dir()


def _atomic_dir(directory: Path) -> Path:
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _commit_dir(tmp: Path, directory: Path) -> None:
    # safetensors writes 0600 files; a model folder is meant to be shared like any other output
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp.rglob("*"):
        if f.is_file():
            f.chmod(0o666 & ~umask)
    if directory.exists():
        # replace an older folder: move it aside first so that a crash never leaves neither
        old = directory.with_name(directory.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)


def _state_dict_for_saving(net: torch.nn.Module, keep=None) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().contiguous().cpu()
        for k, v in net.state_dict().items()
        if "lora_" not in k and (keep is None or keep(k))
    }


def save_model_folder(
    net: AnimationNetwork,
    vae,
    directory: str | Path,
    kind: str = "teacher",
    schedule: NoiseSchedule | dict | None = None,
    meta: dict | None = None,
    *,
    lora: bool = False,
    layout: str = "diffusers",
    scheduler: Any = None,
    links: dict[str, str | Path] | None = None,
    share_from: str | Path | None = None,
    absolute_links: bool = True,
) -> Path:
    """Write a model folder (atomically). ``layout``: ``diffusers`` (one subfolder per component, the
    default) or ``flat`` (one ``model.safetensors``, the earlier format). ``lora=True``: the LoRA adapter +
    the student's own small parts (always flat); ``links["base_teacher"]`` (or ``meta["base_teacher"]``)
    must then name the teacher folder the adapter applies to. ``scheduler``: what ``scheduler/`` holds
    (default: the one that samples this kind of model as it was trained, ``folder_scheduler``).

    ``links``: meta keys naming other folders (``teacher``, ``base_teacher``, ``spatial_run``), stored
    relative to DIR (+ the absolute path unless ``absolute_links`` is False). ``share_from``: a teacher folder
    in the diffusers layout; the parts equal to its own are linked, not written (diffusers layout only)."""
    from safetensors.torch import save_file

    from animlcm.models.diffusers_folder import shareable_parts, weights_file
    from animlcm.models.linked import file_digest, link, meta_link
    from animlcm.models.lora import has_lora, save_lora

    if kind not in KINDS:
        raise AnimlcmError(f"model folder kind '{kind}': use one of {KINDS}")
    if layout not in LAYOUTS:
        raise AnimlcmError(f"model folder layout '{layout}': use one of {LAYOUTS}")
    if lora:
        layout = "flat"
    meta = dict(meta or {})
    directory = Path(directory)
    if schedule is None:
        schedule = net.config.schedule
    schedule_d = schedule.to_dict() if isinstance(schedule, NoiseSchedule) else dict(schedule)
    NoiseSchedule.from_dict(schedule_d)  # validate before writing anything
    links = {k: v for k, v in (links or {}).items() if v is not None}
    if lora:
        if not has_lora(net):
            raise AnimlcmError("save_model_folder(lora=True): the network has no LoRA adapter")
        base = links.get("base_teacher") or meta.get("base_teacher")
        if not base or not (Path(base) / META_FILE).exists():
            raise AnimlcmError(
                f"a LoRA student needs meta['base_teacher'] = an existing teacher folder (got {base!r})"
            )
        links["base_teacher"] = base
    elif has_lora(net):
        raise AnimlcmError(
            "the network has an unmerged LoRA adapter: save with lora=True, or merge_lora(net) first"
        )

    for key, target in links.items():
        meta_link(meta, key, target, directory, absolute=absolute_links)
    shared: dict[str, dict] = {}
    if share_from is not None and layout == "diffusers":
        teacher = Path(share_from)
        for part in shareable_parts(net, vae, teacher, lambda p: _read_weights(p, teacher)):
            entry = link(teacher, directory, absolute=absolute_links)
            shared[part] = {**entry, "sha256": file_digest(weights_file(teacher, part))}

    tmp = _atomic_dir(directory)
    try:
        network = net.config.to_dict()
        network["schedule"] = schedule_d
        record = {"format": FORMAT, "kind": kind, "network": network, "schedule": schedule_d, "meta": meta}
        if layout == "diffusers":
            record = {**record, "format": DIFFUSERS_FORMAT, "layout": "diffusers"}
            if shared:
                record["shared"] = shared
        (tmp / META_FILE).write_text(json.dumps(record, indent=1))
        header = {"format": "pt", "kind": kind}
        if layout == "diffusers":
            from animlcm.diffusion.scheduler import folder_scheduler
            from animlcm.models.diffusers_folder import write_components

            if scheduler is None:
                scheduler = folder_scheduler(kind, NoiseSchedule.from_dict(schedule_d), meta)
            write_components(tmp, net, vae, scheduler, extra=_index_extra(kind, net), shared=set(shared))
            vae = None  # written with the components
        elif lora:
            save_lora(net, tmp / LORA_DIR)
            extra = _state_dict_for_saving(net, keep=lambda k: k.startswith(LORA_EXTRA_PARTS))
            save_file(extra, str(tmp / EXTRA_FILE), metadata=header)
        else:
            save_file(_state_dict_for_saving(net), str(tmp / WEIGHTS_FILE), metadata=header)
        if vae is not None:
            vae.save_pretrained(str(tmp / VAE_DIR), safe_serialization=True)
        _commit_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _index_extra(kind: str, net: AnimationNetwork) -> dict[str, Any]:
    """What ``AnimationPipeline`` needs beyond its components, as ``model_index.json`` config values."""
    return {"kind": kind, "preset": net.config.preset, "face_attention": net.config.face_attention}


def _load_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """All keys of ``net`` (minus LoRA) from ``state``, right shapes, nothing extra; one line otherwise."""
    expected = {k: v for k, v in net.state_dict().items() if "lora_" not in k}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = ", ".join(
            f"{n} {what} (e.g. {lst[0]})"
            for n, what, lst in (
                (len(missing), "missing", missing),
                (len(unexpected), "unexpected", unexpected),
                (len(wrong), "wrong-shape", wrong),
            )
            if lst
        )
        raise AnimlcmError(
            f"{source}: weights do not match the network config ({detail}); re-create the folder"
        )
    result = net.load_state_dict(state, strict=False, assign=True)
    if [k for k in result.missing_keys if "lora_" not in k] or result.unexpected_keys:
        raise AnimlcmError(f"{source}: weights do not match the network config; re-create the folder")


def _read_weights(path: Path, folder: Path | None = None) -> dict[str, torch.Tensor]:
    from animlcm.safeload import load_safetensors

    folder = folder or path.parent
    return load_safetensors(
        path, f"the model folder {folder} is incomplete or damaged: copy it again or re-create it"
    )


def _network_state(directory: Path, shared: dict | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The network's whole state dict from a folder of either layout, and what to name in errors."""
    from animlcm.models.diffusers_folder import is_diffusers_folder, read_network_state

    if is_diffusers_folder(directory):
        state = read_network_state(directory, lambda p: _read_weights(p, p.parent.parent), shared)
        return state, str(directory)
    return _read_weights(directory / WEIGHTS_FILE), str(directory / WEIGHTS_FILE)


def load_model_folder(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    vae: bool = True,
) -> LoadedModel:
    """Load a teacher or student folder (strict; safetensors only); a LoRA student loads its base first."""
    from animlcm.models.linked import meta_target
    from animlcm.models.lora import load_lora
    from animlcm.models.presets import empty_network

    directory = Path(directory)
    data = read_folder_meta(directory)
    try:
        cfg = NetworkConfig.from_dict(data["network"])
    except (TypeError, ValueError) as exc:
        raise AnimlcmError(
            f"{directory / META_FILE}: bad network config ({exc}); re-create the folder"
        ) from None
    schedule = NoiseSchedule.from_dict(data.get("schedule") or cfg.schedule)
    meta = data.get("meta", {})
    net = empty_network(cfg)
    shared = data.get("shared") or {}
    if is_lora_folder(directory):
        base = meta_target(meta, "base_teacher", directory, what="base teacher (of this LoRA student)")
        state, source = _network_state(base, read_folder_meta(base).get("shared"))
        state.update(_read_weights(directory / EXTRA_FILE))
        # the base teacher may lack the student's extra parts (face projector, aux head): from extra
        expected = set(net.state_dict())
        state = {k: v for k, v in state.items() if k in expected}
        _load_strict(net, state, f"{source} + {directory / EXTRA_FILE}")
        net.to(device=device, dtype=dtype)
        load_lora(net, directory / LORA_DIR)
    else:
        _load_strict(net, *_network_state(directory, shared))
    net.to(device=device, dtype=dtype).eval()
    realign(net)
    loaded_vae = None
    if vae:
        vae_dir = vae_folder(directory)
        if vae_dir is not None:
            from diffusers import AutoencoderKL

            # torch_dtype at load time (not .to(dtype) after): diffusers keeps the parts that must stay
            # float32 in float32 that way, and warns on every load otherwise
            try:
                loaded_vae = AutoencoderKL.from_pretrained(
                    str(vae_dir), use_safetensors=True, torch_dtype=dtype
                ).to(device)
            except Exception as exc:  # diffusers passes on safetensors', json's and OS errors as they are
                from animlcm.safeload import reason

                raise AnimlcmError(
                    f"{vae_dir}: unreadable VAE folder ({reason(exc)}); copy the model folder again or "
                    "re-create it"
                ) from None
            realign(loaded_vae).eval()
    return LoadedModel(
        net=net, vae=loaded_vae, schedule=schedule, kind=data["kind"], meta=meta, path=directory
    )


# Names from docs/ARCHITECTURE.md ("io.py: save_network / load_network").
def save_network(net: AnimationNetwork, directory: str | Path, vae=None, **kwargs: Any) -> Path:
    return save_model_folder(net, vae, directory, **kwargs)


def load_network(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
):
    """``(net, vae)`` of a model folder (see :func:`load_model_folder` for the schedule, kind and meta)."""
    loaded = load_model_folder(directory, device, dtype)
    return loaded.net, loaded.vae


def component_sources(directory: str | Path) -> dict[str, str]:
    """Where each component's weights are read from, in words (``teacher info``): this folder's own
    subfolder or file, a linked teacher's (and whether its digest still matches), or a LoRA student's
    base."""
    from animlcm.models.diffusers_folder import NETWORK_PARTS, is_diffusers_folder, read_index, weights_file
    from animlcm.models.linked import file_digest, meta_target, resolve_link

    directory = Path(directory)
    data = read_folder_meta(directory)
    meta = data.get("meta") or {}
    out: dict[str, str] = {}
    if is_lora_folder(directory):
        try:
            base = str(meta_target(meta, "base_teacher", directory, what="base teacher"))
        except AnimlcmError:
            base = f"{meta.get('base_teacher')} (MISSING)"
        out["unet"] = f"base teacher {base} + {LORA_DIR}/ adapter"
        out["other parts"] = f"base teacher {base}; the student's own in {EXTRA_FILE}"
        return out
    if not is_diffusers_folder(directory):
        return {"all parts": WEIGHTS_FILE, "vae": f"{VAE_DIR}/" if (directory / VAE_DIR).is_dir() else "none"}
    index = read_index(directory)
    shared = data.get("shared") or {}
    for part in (*NETWORK_PARTS, "vae"):
        entry = index.get(part)
        if not entry or entry[0] is None:
            continue
        if part not in shared:
            out[part] = f"{part}/"
            continue
        link = shared[part]
        try:
            source = resolve_link(
                link.get("from"), directory, link.get("absolute"), what="teacher", hub=False
            )
        except AnimlcmError:
            out[part] = f"linked: {link.get('from')}/{part}/ (MISSING)"
            continue
        path = weights_file(source, part)
        ok = path.is_file() and (not link.get("sha256") or file_digest(path) == link["sha256"])
        state = "digest matches" if ok else "CHANGED since written"
        out[part] = f"linked: {link.get('from')}/{part}/ = {source}/{part}/ ({state})"
    return out

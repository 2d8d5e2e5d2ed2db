"""``animlcm convert SRC DST``: rewrite a model folder in today's layout (diffusers components, relative
links, shared teacher parts), keeping every weight as it is, and check that it loads back to the same tensors.

What it reads: any teacher or student folder the project ever wrote (the flat ``model.safetensors`` layout of
format 1 included), LoRA students too. What it writes:

- a full folder in the diffusers layout; each network part in the dtype it was stored in (``dtype`` casts
  the network instead; the VAE always keeps its own: SD's VAE overflows in float16);
- a full student links the parts equal to its teacher's (``teacher``, else the one it records) unless
  ``standalone``; a LoRA student stays a LoRA file + its own parts, linked to its base teacher;
- links relative to DST, plus absolute fallbacks unless ``absolute_links`` is False (a pair that always moves
  together, like the built-in models, needs only the relative one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from animlcm.errors import AnimlcmError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass
class ConvertResult:
    out: Path
    kind: str
    lora: bool
    shared: list[str]  # parts linked to the teacher instead of written
    teacher: Path | None
    bytes_written: int


def stored_dtypes(directory: Path) -> dict[str, torch.dtype]:
    """The dtype each network part is stored in (float32 where a part mixes dtypes: lossless either way)."""
    from safetensors import safe_open

    from animlcm.models.diffusers_folder import NETWORK_PARTS, is_diffusers_folder, weights_file
    from animlcm.models.io import WEIGHTS_FILE

    seen: dict[str, set[str]] = {}

    def scan(path: Path, part: str | None) -> None:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                name = part or key.split(".", 1)[0]
                seen.setdefault(name, set()).add(f.get_slice(key).get_dtype())

    if is_diffusers_folder(directory):
        for part in NETWORK_PARTS:
            if weights_file(directory, part).is_file():
                scan(weights_file(directory, part), part)
    elif (directory / WEIGHTS_FILE).is_file():
        scan(directory / WEIGHTS_FILE, None)
    return {part: _one_dtype(kinds) for part, kinds in seen.items()}


def _one_dtype(kinds: set[str]) -> torch.dtype:
    """The torch dtype of a set of safetensors dtype names; float32 where they mix (lossless either way)."""
    return _SAFE_DTYPES.get(next(iter(kinds)), torch.float32) if len(kinds) == 1 else torch.float32


def _check_paths(src: Path, dst: Path) -> None:
    from animlcm.outputs import check_output

    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents or d in s.parents:
        raise AnimlcmError(
            f"convert: {dst} overlaps the folder it converts ({src}); write to a new folder beside it"
        )
    if dst.exists() and any(dst.iterdir()):
        raise AnimlcmError(
            f"convert: {dst} exists and is not empty; give a new folder (convert never overwrites)"
        )
    check_output(dst, "convert OUT", folder=True)


def convert_folder(
    src: str | Path,
    dst: str | Path,
    *,
    teacher: str | Path | None = None,
    standalone: bool = False,
    dtype: str | None = None,
    absolute_links: bool = True,
) -> ConvertResult:
    """Write ``src`` as a new folder ``dst`` (see the module doc); returns what was written."""
    from animlcm.models.io import (
        is_lora_folder,
        load_model_folder,
        read_folder_meta,
        result_folder,
        save_model_folder,
    )
    from animlcm.models.linked import meta_target

    src, dst = result_folder(src), Path(dst)
    data = read_folder_meta(src)
    _check_paths(src, dst)
    if dtype is not None and dtype not in DTYPES:
        raise AnimlcmError(f"convert --dtype {dtype}: use one of {', '.join(DTYPES)}")
    lora = is_lora_folder(src)
    kind = data["kind"]
    meta = dict(data.get("meta") or {})
    teacher_dir = Path(teacher) if teacher is not None else None
    if teacher_dir is not None and not (teacher_dir / "animlcm.json").is_file():
        raise AnimlcmError(f"convert --teacher {teacher_dir}: not a teacher folder (no animlcm.json)")
    if teacher_dir is None and kind == "student":
        for key in ("base_teacher", "teacher") if lora else ("teacher",):
            try:
                teacher_dir = meta_target(meta, key, src, what="teacher")
                break
            except AnimlcmError:
                if lora and key == "base_teacher":
                    raise
    loaded = load_model_folder(src)
    net, vae = loaded.net, loaded.vae
    original = {k: v.clone() for k, v in net.state_dict().items()}
    vae_original = {k: v.clone() for k, v in vae.state_dict().items()} if vae is not None else None
    if dtype is not None:
        _cast(net, DTYPES[dtype])
    elif not lora:
        for part, kept in stored_dtypes(src).items():
            module = getattr(net, part, None)
            if module is not None:
                _cast(module, kept)
    if vae is not None:
        _cast(vae, _vae_dtype(src))

    links: dict[str, Path] = {}
    for key in ("teacher", "spatial_run"):
        meta.pop(key + "_absolute", None)
        if key in meta and meta[key]:
            try:
                links[key] = meta_target(meta, key, src, what=key)
            except AnimlcmError:
                pass  # a record of where it came from, no longer there: kept as written
    if teacher_dir is not None and kind == "student":
        links["teacher"] = teacher_dir
    if lora:
        links["base_teacher"] = teacher_dir
    share = teacher_dir if (kind == "student" and not lora and not standalone) else None
    save_model_folder(
        net,
        vae,
        dst,
        kind,
        loaded.schedule,
        meta,
        lora=lora,
        links=links,
        share_from=share,
        absolute_links=absolute_links,
    )
    _check_round_trip(dst, original, vae_original, exact=dtype is None)
    written = read_folder_meta(dst)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    return ConvertResult(dst, kind, lora, sorted(written.get("shared") or {}), teacher_dir, size)


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Floating-point parameters and buffers to ``dtype`` in place (``ModelMixin.to`` would warn about
    float32-only modules on every part; none of these has any)."""
    for p in module.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    for sub in module.modules():
        for name, b in sub._buffers.items():
            if b is not None and b.is_floating_point():
                sub._buffers[name] = b.to(dtype)


def _vae_dtype(src: Path) -> torch.dtype:
    """The dtype of the VAE file ``src`` loads (``vae_folder``: its own, its teacher's, its LoRA base's)."""
    from safetensors import safe_open

    from animlcm.models.diffusers_folder import DIFFUSERS_WEIGHTS
    from animlcm.models.io import vae_folder

    folder = vae_folder(src)
    if folder is None or not (folder / DIFFUSERS_WEIGHTS).is_file():
        return torch.float32
    with safe_open(str(folder / DIFFUSERS_WEIGHTS), framework="pt") as f:
        return _one_dtype({f.get_slice(k).get_dtype() for k in f.keys()})


def _check_round_trip(
    dst: Path, original: dict[str, torch.Tensor], vae: dict[str, torch.Tensor] | None, *, exact: bool
) -> None:
    """The written folder loads (in float32) to the very tensors the source loaded to."""
    from animlcm.models.io import load_model_folder

    back = load_model_folder(dst)
    state = back.net.state_dict()
    bad = [k for k in original if k not in state or state[k].shape != original[k].shape]
    if exact:
        bad += [k for k in original if k in state and not torch.equal(state[k], original[k])]
    if vae is not None and back.vae is not None:
        theirs = back.vae.state_dict()
        bad += [f"vae.{k}" for k, v in vae.items() if not torch.equal(theirs[k], v)]
    if bad:
        raise AnimlcmError(
            f"convert: {dst} does not load back to the source's weights ({len(bad)} tensors differ, e.g. "
            f"{bad[0]}); this is a bug, please report it with the source folder's animlcm.json"
        )

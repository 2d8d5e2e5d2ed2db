"""Folders that point at other folders: a student's teacher, a LoRA student's base, shared components.

A student records the folder it came from as a path *relative to the student folder* (so a run folder, or a
teacher + student pair, still loads after it is moved or copied as a whole), plus the absolute path it had
when written (so a student moved on its own, on the same machine, still finds its teacher). A link that is
neither is read as a Hugging Face hub id (a pair shared on the hub), served from the local hub cache.

A full student in the diffusers layout does not store again the parts it shares with its teacher bit for bit
(the frozen reference net, CLIP encoder and VAE: ~2 GB at sd15 in float16). ``animlcm.json`` names them:

    "shared": {"reference_unet": {"from": "../teacher", "absolute": "/runs/teacher",
                                  "sha256": "<the teacher file's digest when the student was written>"}, ...}

and ``model_index.json`` still lists them, so a loader passes them in from the teacher (``AnimationPipeline``
does). The digest is checked at every load: a teacher changed in place since is an error, not a silent
drift.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from animlcm.errors import AnimlcmError

META_FILE = "animlcm.json"
ABSOLUTE_SUFFIX = "_absolute"
_CHUNK = 1 << 22


def link(target: str | Path, folder: str | Path, *, absolute: bool = True) -> dict[str, str]:
    """``{"from": TARGET relative to FOLDER, "absolute": TARGET}`` (``absolute=False``: the relative path
    only, for a pair that always moves together, like the built-in models)."""
    target = Path(target).resolve()
    out = {"from": Path(os.path.relpath(target, Path(folder).resolve())).as_posix()}
    if absolute:
        out["absolute"] = str(target)
    return out


def meta_link(meta: dict, key: str, target: str | Path, folder: str | Path, *, absolute: bool = True) -> None:
    """Store a link in a folder's meta as ``meta[key]`` (relative) + ``meta[key + "_absolute"]``."""
    entry = link(target, folder, absolute=absolute)
    meta[key] = entry["from"]
    meta.pop(key + ABSOLUTE_SUFFIX, None)
    if "absolute" in entry:
        meta[key + ABSOLUTE_SUFFIX] = entry["absolute"]


def resolve_link(
    spec: str | None, folder: str | Path, absolute: str | None = None, *, what: str, hub: bool = True
) -> Path:
    """The folder a link names: ``spec`` taken from ``folder``, ``spec`` as an absolute path, ``absolute``,
    then (``hub``) ``spec`` as a hub id from the local hub cache. One line naming what is missing
    otherwise."""
    folder = Path(folder)
    candidates = []
    if spec:
        p = Path(spec)
        candidates.append(p if p.is_absolute() else Path(os.path.normpath(folder / p)))
    if absolute:
        candidates.append(Path(absolute))
    for cand in candidates:
        if (cand / META_FILE).is_file() or (cand / "model_index.json").is_file():
            return cand
    if hub and spec and not Path(spec).is_absolute() and not spec.startswith("."):
        from animlcm.models.hub import looks_like_hub_id

        if looks_like_hub_id(spec) and spec.count("/") == 1:
            local = _hub_snapshot(spec)
            if local is not None:
                return local
    tried = " or ".join(str(c) for c in candidates) or "no path recorded"
    raise AnimlcmError(
        f"{folder}: its {what} is not there (looked for {tried}); put that folder back beside it, or copy "
        f"the pair together (links are relative), or edit {folder / META_FILE}"
    )


def meta_target(meta: dict, key: str, folder: str | Path, *, what: str, hub: bool = True) -> Path:
    """The folder ``meta[key]`` links to (see :func:`resolve_link`)."""
    return resolve_link(meta.get(key), folder, meta.get(key + ABSOLUTE_SUFFIX), what=what, hub=hub)


def teacher_key(meta: dict) -> str | None:
    """Which meta key names the teacher a student came from: ``teacher``, else a LoRA student's
    ``base_teacher``; None when it records neither."""
    for key in ("teacher", "base_teacher"):
        if meta.get(key):
            return key
    return None


def _hub_snapshot(repo_id: str) -> Path | None:
    """A hub model already in the local cache (this never downloads: nothing is fetched at run time)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): the caller's line names the link
        return None


def file_digest(path: str | Path) -> str:
    """sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def shared_source(folder: Path, part: str, entry: dict) -> Path:
    """The folder a shared component lives in, checked against the digest recorded for it."""
    from animlcm.models.diffusers_folder import weights_file

    source = resolve_link(entry.get("from"), folder, entry.get("absolute"), what=f"teacher (for {part}/)")
    path = weights_file(source, part)
    if not path.is_file():
        raise AnimlcmError(
            f"{folder}: its {part}/ comes from {source}, which has no {path.relative_to(source)}; point the "
            f"student at the teacher it was distilled from (edit {folder / META_FILE})"
        )
    if entry.get("sha256") and file_digest(path) != entry["sha256"]:
        raise AnimlcmError(
            f"{path}: changed since {folder} was written (its sha256 differs), so the student would load "
            f"other {part} weights than it was trained with; restore that teacher, or re-run the distillation"
        )
    return source

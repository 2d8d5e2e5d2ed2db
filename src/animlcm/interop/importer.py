"""``animlcm teacher import``: a Moore-AnimateAnyone or Champ checkpoint folder -> an animlcm teacher folder.

Steps: find and read the format's files (``.pth`` with ``torch.load(weights_only=True)``, or
``.safetensors``),
build the network at the size the checkpoint implies (UNet config from ``--base``, CLIP image encoder from
``--image-encoder``), match every tensor strictly (``mapping.match_sources``), copy, and write the teacher
folder with the schedule both teachers ship (v-prediction, zero-SNR, trailing, linear betas).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from animlcm.errors import AnimlcmError
from animlcm.interop import layouts
from animlcm.interop.files import find_file, read_state_dict
from animlcm.interop.layouts import TeacherFormat
from animlcm.interop.mapping import Match, SourceFile, load_into, match_sources

EXTRAS_FILE = (
    "interop_extras.safetensors"  # known-extra source tensors, kept in the teacher folder for export
)
SOURCE_FILE = "interop_source.json"  # which format and files the teacher came from


@dataclass(frozen=True)
class ImportConfig:
    """Settings of ``animlcm teacher import``."""

    preset: str = "sd15"
    format: str = "auto"
    """Checkpoint format: auto (from the files present) | moore-aa (Moore-AnimateAnyone) | champ."""
    weights: Path | None = None
    """Folder with the teacher's files (denoising_unet.pth, reference_unet.pth, motion_module.pth, ...)."""
    base: str | None = None
    """SD1.5 folder or hub id (diffusers layout): its unet/config.json sizes the network, vae/ is the VAE."""
    vae: str | None = None
    """VAE folder or hub id when not the one in --base (both teachers use stabilityai/sd-vae-ft-mse)."""
    image_encoder: str | None = None
    """CLIP image encoder folder or hub id (lambdalabs/sd-image-variations-diffusers/image_encoder)."""
    out: Path | None = None
    """Teacher folder to write."""
    overwrite: bool = False

    @classmethod
    def from_preset(cls, name: str) -> ImportConfig:
        return cls(preset=name)

    def validate(self) -> None:
        layouts.check_format_name(self.format)
        for flag, value in (("--weights", self.weights), ("--base", self.base), ("--out", self.out)):
            if value is None:
                raise AnimlcmError(f"teacher import: {flag} is required")
        if self.image_encoder is None:
            raise AnimlcmError(
                "teacher import: --image-encoder is required (both teachers use the CLIP image encoder of "
                "lambdalabs/sd-image-variations-diffusers, folder image_encoder/)"
            )


@dataclass
class ImportSummary:
    out: Path
    format: str
    files: dict[str, int]  # file name -> tensors read
    maps: tuple[str, ...]
    loaded: int  # network tensors filled from the files
    extras: int  # known extras set aside (kept for export)
    position_tables: int
    parameters: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ reading
def read_sources(fmt: TeacherFormat, folder: Path) -> list[SourceFile]:
    """The format's files found in ``folder``; fails naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnimlcmError(
            f"{folder}: no such folder; pass --weights the folder holding the {fmt.title} files"
        )
    found = {spec.stem: find_file(folder, spec.stem) for spec in fmt.files}
    required = ["denoising_unet", "reference_unet"]
    missing = [s for s in required if found[s] is None]
    guiders = [s.stem for s in fmt.guider_files]
    if not any(found[s] for s in guiders):
        missing.append(guiders[0] if len(guiders) == 1 else "guidance_encoder_<type> (at least one)")
    if missing:
        have = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise AnimlcmError(
            f"{folder}: missing {', '.join(m + '.pth' for m in missing)} for the {fmt.title} format "
            f"(found: {', '.join(have) or 'nothing'})"
        )
    files = [
        SourceFile(spec, found[spec.stem], read_state_dict(found[spec.stem]))
        for spec in fmt.files
        if found[spec.stem]
    ]
    has_motion = any(layouts.is_motion_key(k) for f in files if f.spec.part == "unet" for k in f.tensors)
    if not has_motion:
        raise AnimlcmError(
            f"{folder}: no motion modules: add motion_module.pth (the stage-2 checkpoint) "
            "beside denoising_unet.pth"
        )
    return files


def detect_format(folder: Path) -> TeacherFormat:
    """Moore-AnimateAnyone ships ``pose_guider``, Champ ``guidance_encoder_<type>`` files."""
    if find_file(folder, "pose_guider") is not None:
        return layouts.FORMATS["moore-aa"]
    if any(find_file(folder, f.stem) for f in layouts.FORMATS["champ"].guider_files):
        return layouts.FORMATS["champ"]
    raise AnimlcmError(
        f"{folder}: neither pose_guider.pth (Moore-AnimateAnyone) nor guidance_encoder_<type>.pth (Champ) "
        "found; pass --weights the folder holding the teacher's files"
    )


def source_dtypes(files: list[SourceFile]) -> dict[str, str]:
    out = {}
    for f in files:
        dtypes = {str(t.dtype).removeprefix("torch.") for t in f.tensors.values() if t.is_floating_point()}
        out[f.spec.stem] = dtypes.pop() if len(dtypes) == 1 else "float32"
    return out


# ------------------------------------------------------------------------------------------------ building
def guider_widths(files: list[SourceFile]) -> tuple[int, ...]:
    """The pose guider's block widths as the checkpoint has them (conv_in, then every second block)."""
    f = next(f for f in files if f.spec.part == "guider")
    t = f.tensors
    try:
        n = len({k.split(".")[1] for k in t if k.startswith("blocks.")})
        return (t["conv_in.weight"].shape[0], *(t[f"blocks.{i}.weight"].shape[0] for i in range(1, n, 2)))
    except KeyError as exc:
        raise AnimlcmError(
            f"{f.path}: no {exc.args[0]}: not a pose guider / guidance encoder checkpoint"
        ) from None


def teacher_schedule():
    from animlcm.diffusion.schedule import NoiseSchedule

    k = layouts.TEACHER_SCHEDULER_KWARGS
    return NoiseSchedule(
        num_train_timesteps=int(k["num_train_timesteps"]),
        beta_start=float(k["beta_start"]),
        beta_end=float(k["beta_end"]),
        beta_schedule=str(k["beta_schedule"]),
        prediction_type=str(k["prediction_type"]),
        zero_snr=bool(k["rescale_betas_zero_snr"]),
        timestep_spacing=str(k["timestep_spacing"]),
        steps_offset=int(k["steps_offset"]),
    )


def teacher_network_config(files: list[SourceFile], unet2d: dict, clip: dict, preset: str):
    """The ``NetworkConfig`` a checkpoint implies: UNet sizes from the base config; pose maps, guider widths
    and Champ attention from the files; the teachers' schedule; no face tokens, no aux head."""
    import dataclasses

    from animlcm.models.pose_guider import PoseGuiderConfig
    from animlcm.models.presets import network_config

    maps = tuple(f.spec.guidance_map for f in files if f.spec.part == "guider")
    champ = any(k.startswith("attentions.") for f in files if f.spec.part == "guider" for k in f.tensors)
    config = network_config(
        preset,
        pose_maps=maps,
        face_tokens=False,
        aux_head=False,
        champ_attention=champ,
        schedule=teacher_schedule(),
        unet2d=unet2d,
        motion=dict(layouts.MOTION_KWARGS),
        clip=clip,
    )
    pose = PoseGuiderConfig.from_dict(config.pose_guider)
    pose = dataclasses.replace(pose, block_out_channels=guider_widths(files))
    return dataclasses.replace(config, pose_guider=pose.to_dict())


def build_teacher_network(files: list[SourceFile], unet2d: dict, image_encoder, preset: str):
    """The (randomly initialised) network the checkpoint fills, around the given CLIP image encoder."""
    from animlcm.models.network import AnimationNetwork, plain_config

    config = teacher_network_config(files, unet2d, plain_config(image_encoder.config), preset)
    try:
        return AnimationNetwork(config, image_encoder=image_encoder)
    except ValueError as exc:  # size mismatches between the base UNet and the image encoder
        raise AnimlcmError(f"teacher import: the parts do not fit together: {exc}") from None


def import_into(fmt: TeacherFormat, files: list[SourceFile], net, where: Path | str = "") -> Match:
    """Match ``files`` onto ``net`` strictly and copy the tensors in; returns the match (extras, counts)."""
    state = net.state_dict()
    match = match_sources(fmt, files, state, where)
    load_into(net, match.tensors(files))
    return match


# ------------------------------------------------------------------------------------------------ base parts
def _hub_error(spec: str, what: str, exc: Exception) -> AnimlcmError:
    return AnimlcmError(
        f"{spec}: no such local folder and the hub id could not be loaded ({type(exc).__name__}: offline?); "
        f"download {what} with `huggingface-cli download {spec}` and pass the folder"
    )


def load_unet2d_config(base: str) -> dict[str, Any]:
    """The SD1.5 UNet config (``BASE/unet/config.json`` or a hub id's ``unet`` subfolder)."""
    path = Path(base)
    if path.exists():
        cand = path / "unet" / "config.json"
        cfg = json.loads(cand.read_text()) if cand.is_file() else {}
    else:
        from diffusers import UNet2DConditionModel

        try:
            cfg = dict(UNet2DConditionModel.load_config(base, subfolder="unet"))
        except Exception as exc:  # hub errors come in many types
            raise _hub_error(base, "Stable Diffusion 1.5", exc) from None
    if not {"block_out_channels", "down_block_types", "up_block_types"} <= set(cfg):
        raise AnimlcmError(
            f"{base}: no unet/config.json of a UNet2DConditionModel; pass --base the Stable Diffusion 1.5 "
            "folder (diffusers layout, e.g. runwayml/stable-diffusion-v1-5)"
        )
    return cfg


def load_image_encoder(spec: str):
    """``CLIPVisionModelWithProjection`` from a folder (or its ``image_encoder/``) or a hub id."""
    from transformers import CLIPVisionModelWithProjection

    path = Path(spec)
    if path.exists():
        sub = path / "image_encoder" if (path / "image_encoder" / "config.json").is_file() else path
        try:
            return CLIPVisionModelWithProjection.from_pretrained(sub).eval()
        except (OSError, ValueError) as exc:
            raise AnimlcmError(
                f"{spec}: not a CLIP image encoder folder ({str(exc).splitlines()[0]}); pass the "
                "image_encoder folder of lambdalabs/sd-image-variations-diffusers"
            ) from None
    try:
        return CLIPVisionModelWithProjection.from_pretrained(spec, subfolder="image_encoder").eval()
    except Exception:
        try:
            return CLIPVisionModelWithProjection.from_pretrained(spec).eval()
        except Exception as exc:
            raise _hub_error(spec, "the CLIP image encoder", exc) from None


def load_base_vae(spec: str):
    """The VAE from a local folder (or its ``vae/``), else a hub id's ``vae`` subfolder or the id itself.
    diffusers reads ``.safetensors``, or ``.bin`` with ``torch.load(weights_only=True)``."""
    from diffusers import AutoencoderKL

    path = Path(spec)
    if path.exists():
        sub = path / "vae" if (path / "vae" / "config.json").is_file() else path
        try:
            return AutoencoderKL.from_pretrained(sub).eval()
        except (OSError, ValueError) as exc:
            raise AnimlcmError(
                f"{spec}: no VAE there ({str(exc).splitlines()[0]}); pass --vae the folder of "
                "stabilityai/sd-vae-ft-mse, or an SD1.5 folder with vae/"
            ) from None
    for sub in ("vae", None):
        try:
            return AutoencoderKL.from_pretrained(spec, subfolder=sub).eval()
        except Exception as exc:  # hub errors come in many types
            last = exc
    raise _hub_error(spec, "the VAE", last) from None


# ------------------------------------------------------------------------------------------------ the stage
def run(cfg: ImportConfig, progress: bool = True) -> ImportSummary:
    """Import a teacher checkpoint folder and write an animlcm teacher folder at ``cfg.out``."""
    from safetensors.torch import save_file

    from animlcm.models.io import save_model_folder
    from animlcm.models.network import parameter_counts

    cfg.validate()
    fmt = detect_format(Path(cfg.weights)) if cfg.format == "auto" else layouts.get_format(cfg.format)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise AnimlcmError(f"{out}: already exists and is not empty; pass --overwrite or another --out")

    steps = ["parts", "read", "build", "match", "write"]
    with _Progress(progress, len(steps)) as bar:
        # the small parts first: a wrong --base fails before gigabytes of weights are read
        bar.step("loading the UNet config, VAE and image encoder")
        unet2d = load_unet2d_config(str(cfg.base))
        vae = load_base_vae(str(cfg.vae or cfg.base))
        image_encoder = load_image_encoder(str(cfg.image_encoder))
        bar.step(f"reading {fmt.title} files from {cfg.weights}")
        files = read_sources(fmt, Path(cfg.weights))
        bar.step("building the network")
        net = build_teacher_network(files, unet2d, image_encoder, cfg.preset)
        bar.step("matching tensors")
        match = import_into(fmt, files, net, cfg.weights)
        bar.step(f"writing {out}")
        meta = {
            "source": {
                "format": fmt.name,
                "layout": fmt.layout_source,
                "weights": str(Path(cfg.weights).resolve()),
                "files": [f.path.name for f in files],
                "dtypes": source_dtypes(files),
            },
            "base": str(cfg.base),
            "image_encoder": str(cfg.image_encoder),
        }
        save_model_folder(net, vae, out, "teacher", teacher_schedule(), meta)
        extras = {f"{stem}/{k}": v.contiguous() for stem, d in match.extras.items() for k, v in d.items()}
        if extras:
            tmp = out / (EXTRAS_FILE + ".tmp")
            save_file(extras, str(tmp))
            tmp.replace(out / EXTRAS_FILE)
        tmp = out / (SOURCE_FILE + ".tmp")
        tmp.write_text(json.dumps(meta["source"], indent=2))
        tmp.replace(out / SOURCE_FILE)
    return ImportSummary(
        out=out,
        format=fmt.name,
        files={f.path.name: len(f.tensors) for f in files},
        maps=tuple(net.pose_guider.maps),
        loaded=len(match.assign),
        extras=len(extras),
        position_tables=match.position_tables,
        parameters=parameter_counts(net),
    )


def read_extras(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The known extras an import set aside in ``folder`` (``{}`` when there are none)."""
    path = Path(folder) / EXTRAS_FILE
    if not path.is_file():
        return {}
    from safetensors.torch import load_file

    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in load_file(str(path)).items():
        stem, key = name.split("/", 1)
        out.setdefault(stem, {})[key] = tensor
    return out


class _Progress:
    """A rich progress bar over a few coarse steps (silent with ``enabled=False``)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.done = enabled, total, -1
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def step(self, text: str) -> None:
        """Mark the previous step done and show the next one."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, description=text, completed=self.done)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.total)
            self._bar.__exit__(*exc)

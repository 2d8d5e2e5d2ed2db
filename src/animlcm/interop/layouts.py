"""How the public teachers' checkpoint files map onto animlcm's network: file tables and key rules.

Pure name logic (no torch): which files a format has, which network submodule each file fills, how a
source key becomes a network key and back, and which names are *known extras* on either side. The
layouts come from ``shared/data/teacher_layouts`` (built from Moore-AnimateAnyone a914ef3 and Champ 02e5533):

- ``denoising_unet`` and ``reference_unet`` keys are diffusers' ``UNet2DConditionModel`` names unchanged;
- ``motion_module`` keys (AnimateDiff v2 layout) map by diffusers' own conversion renames
  (``scripts/convert_animatediff_motion_module_to_diffusers.py``), see ``MOTION_RENAMES``;
- ``pose_guider`` (Moore) and ``guidance_encoder_<type>`` (Champ) keys go under
  ``pose_guider.encoders.<map>.`` unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Diffusers' AnimateDiff conversion, in its order (source substring -> diffusers substring).
MOTION_RENAMES: tuple[tuple[str, str], ...] = (
    (".norms.0", ".norm1"),
    (".norms.1", ".norm2"),
    (".ff_norm", ".norm3"),
    (".attention_blocks.0", ".attn1"),
    (".attention_blocks.1", ".attn2"),
    (".temporal_transformer", ""),
)

# AnimateDiff keeps a sinusoidal table per temporal attention (two per transformer block); diffusers keeps one
# per transformer block (``pos_embed.pe``) and applies it before both attentions. Same formula, same values.
_SOURCE_PE = re.compile(
    r"^(?P<block>.+\.motion_modules\.\d+\.temporal_transformer\.transformer_blocks\.\d+)"
    r"\.attention_blocks\.(?P<attn>\d+)\.pos_encoder\.pe$"
)
_TARGET_PE = re.compile(r"^(?P<block>.+\.motion_modules\.\d+\.transformer_blocks\.\d+)\.pos_embed\.pe$")
_TARGET_MOTION = re.compile(
    r"^(?P<head>(?:down_blocks|up_blocks)\.\d+\.motion_modules\.\d+|mid_block\.motion_modules\.\d+)"
    r"\.(?P<rest>.+)$"
)

# Champ's guidance types -> animlcm's guidance map names (DESIGN section 3; cache maps).
CHAMP_MAPS: dict[str, str] = {
    "dwpose": "skeleton",
    "depth": "depth",
    "normal": "normal",
    "semantic_map": "semantic",
}

# Source tensors that have no place in the network and are nevertheless expected in a genuine file.
# A source key matching one of these is set aside (kept for export) when the network has no tensor under its
# mapped name, or only an unused one (TARGET_UNFILLED); otherwise it is loaded like any other tensor.
SOURCE_EXTRAS: dict[str, tuple[str, ...]] = {
    # sinusoidal position tables (buffers): regenerated, checked against the network's own table
    "unet": (r"\.pos_encoder\.pe$",),
    # Moore's ReferenceNet drops the output head; Champ (strict=False loading) may ship it anyway
    "reference": (r"^conv_norm_out\.", r"^conv_out\."),
    # Champ's GuidanceEncoder builds attentions its forward never uses (all but attentions[-1] at 02e5533)
    "guider": (r"^guidance_attention\.", r"^attentions\.\d+\."),
}

# Network tensors that no teacher file fills, and why that is fine.
TARGET_UNFILLED: tuple[str, ...] = (
    r"^unet\..*\.pos_embed\.pe$",  # deterministic sinusoidal buffers built by diffusers
    r"^reference_unet\.conv_norm_out\.",  # the reference net's output head is never run
    r"^reference_unet\.conv_out\.",
)

# Submodules that the checkpoint files describe; the rest (image encoder, ...) come from --image-encoder etc.
COVERED_PREFIXES: tuple[str, ...] = ("unet.", "reference_unet.", "pose_guider.")


@dataclass(frozen=True)
class FileSpec:
    """One checkpoint file of a teacher format."""

    stem: str  # file name without extension, e.g. "denoising_unet"
    part: str  # "unet" | "reference" | "guider"
    target_prefix: str  # where its tensors land in AnimationNetwork's state dict
    guidance_map: str | None = None  # animlcm map name for guider files


@dataclass(frozen=True)
class TeacherFormat:
    """A public teacher's checkpoint format: its files and the noise schedule it was trained with."""

    name: str
    title: str
    files: tuple[FileSpec, ...]
    layout_source: str  # repository and commit whose code defines the layout

    def spec(self, stem: str) -> FileSpec:
        for f in self.files:
            if f.stem == stem:
                return f
        raise KeyError(stem)

    @property
    def guider_files(self) -> tuple[FileSpec, ...]:
        return tuple(f for f in self.files if f.part == "guider")


_UNET_FILES = (
    FileSpec("reference_unet", "reference", "reference_unet."),
    FileSpec("denoising_unet", "unet", "unet."),
    FileSpec("motion_module", "unet", "unet."),
)

FORMATS: dict[str, TeacherFormat] = {
    "moore-aa": TeacherFormat(
        name="moore-aa",
        title="Moore-AnimateAnyone",
        files=(*_UNET_FILES, FileSpec("pose_guider", "guider", "pose_guider.encoders.skeleton.", "skeleton")),
        layout_source="MooreThreads/Moore-AnimateAnyone a914ef3",
    ),
    "champ": TeacherFormat(
        name="champ",
        title="Champ",
        files=(
            *_UNET_FILES,
            *(
                FileSpec(f"guidance_encoder_{src}", "guider", f"pose_guider.encoders.{dst}.", dst)
                for src, dst in CHAMP_MAPS.items()
            ),
        ),
        layout_source="fudan-generative-vision/champ 02e5533",
    ),
}

# Both teachers ship this scheduler (Moore configs/inference/inference_v2.yaml; Champ configs/inference/
# inference.yaml with enable_zero_snr): note "linear" betas, not SD1.5's "scaled_linear".
TEACHER_SCHEDULER_KWARGS: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

# AnimateDiff motion-module settings both teachers use (their inference configs), as diffusers kwargs.
MOTION_KWARGS: dict[str, object] = {
    "motion_num_attention_heads": 8,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}


def get_format(name: str) -> TeacherFormat:
    from animlcm.errors import AnimlcmError

    try:
        return FORMATS[name]
    except KeyError:
        raise AnimlcmError(f"unknown teacher format '{name}': choose auto, {', '.join(FORMATS)}") from None


def check_format_name(name: str) -> None:
    """``auto`` or a known format (for config validation)."""
    if name != "auto":
        get_format(name)


def is_motion_key(key: str) -> bool:
    return ".motion_modules." in key or key.startswith("mid_block.motion_modules.")


def motion_key_to_diffusers(key: str) -> str:
    """An AnimateDiff motion-module key -> diffusers ``UNetMotionModel`` key (diffusers' own renames)."""
    for old, new in MOTION_RENAMES:
        key = key.replace(old, new)
    return key


def motion_key_from_diffusers(key: str) -> str:
    """Inverse of ``motion_key_to_diffusers`` for a diffusers motion-module key."""
    m = _TARGET_MOTION.match(key)
    if m is None:
        raise ValueError(f"not a motion-module key: {key}")
    rest = "." + m["rest"]
    # only the transformer-block sub-names were renamed; the top-level norm/proj_in/proj_out were not
    for old, new in reversed(MOTION_RENAMES[:5]):
        rest = rest.replace(new + ".", old + ".")
    return f"{m['head']}.temporal_transformer{rest}"


def source_pe_target(key: str) -> str | None:
    """``...attention_blocks.N.pos_encoder.pe`` -> the network's ``pos_embed.pe`` holding the same table."""
    m = _SOURCE_PE.match(key)
    if m is None:
        return None
    return motion_key_to_diffusers(m["block"]) + ".pos_embed.pe"


def target_pe_sources(target: str, attentions: int = 2) -> list[str]:
    """The source pe keys (one per temporal attention) for a network ``pos_embed.pe`` key."""
    m = _TARGET_PE.match(target)
    if m is None:
        raise ValueError(f"not a pos_embed key: {target}")
    block = motion_key_from_diffusers(m["block"] + ".x")[: -len(".x")]
    return [f"{block}.attention_blocks.{i}.pos_encoder.pe" for i in range(attentions)]


def source_to_target(spec: FileSpec, key: str) -> str:
    """The network key a source tensor fills (it may not exist in the network: the caller checks)."""
    if spec.part == "unet" and is_motion_key(key):
        key = motion_key_to_diffusers(key)
    return spec.target_prefix + key


def target_to_source(spec: FileSpec, target: str) -> str:
    if not target.startswith(spec.target_prefix):
        raise ValueError(f"{target} is not under {spec.target_prefix}")
    key = target[len(spec.target_prefix) :]
    if spec.part == "unet" and is_motion_key(key):
        key = motion_key_from_diffusers(key)
    return key


def is_source_extra(spec: FileSpec, key: str) -> bool:
    return any(re.search(p, key) for p in SOURCE_EXTRAS[spec.part])


def is_target_unfilled(target: str) -> bool:
    return any(re.search(p, target) for p in TARGET_UNFILLED)


def is_covered(target: str) -> bool:
    return target.startswith(COVERED_PREFIXES)


def export_spec_for(fmt: TeacherFormat, target: str) -> FileSpec | None:
    """Which file of ``fmt`` a network key is written to on export (``None``: not part of the format)."""
    if target.startswith("unet."):
        return fmt.spec("motion_module" if is_motion_key(target[len("unet.") :]) else "denoising_unet")
    if target.startswith("reference_unet."):
        return fmt.spec("reference_unet")
    for f in fmt.guider_files:
        if target.startswith(f.target_prefix):
            return f
    return None

"""``animlcm export``: a student (or teacher) folder -> the teacher's own checkpoint files, LoRA merged.

The files are those the original code loads (Moore-AnimateAnyone ``scripts/pose2vid.py``; Champ
``inference.py``; wrappers reading the same files), plus ``scheduler_config.json`` (diffusers
``LCMScheduler``) and a ``README.md`` with the 4-step consistency sampling settings.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from animlcm.errors import AnimlcmError
from animlcm.interop import layouts
from animlcm.interop.files import write_state_dict
from animlcm.interop.importer import SOURCE_FILE, read_extras
from animlcm.interop.layouts import TeacherFormat
from animlcm.interop.mapping import export_tensors

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ORIGINAL_STEPS = 50  # LCM's skipping grid, for folders that record none (a teacher's own folder)


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``animlcm export``."""

    preset: str = "sd15"
    format: str = "auto"
    """Target format: auto (the imported teacher's, else from the pose guider) | moore-aa | champ."""
    student: Path | None = None
    """Student folder (from ``animlcm distill``), LoRA or full weights; a teacher folder works too."""
    out: Path | None = None
    """Folder to write the checkpoint files into."""
    steps: int = 4
    """Sampling steps to document in the README and scheduler config."""
    dtype: str = "auto"
    """auto (the imported teacher files' dtype, else float32) | float32 | float16 | bfloat16."""
    file_format: str = "pth"
    """pth (what the original scripts torch.load) | safetensors."""
    overwrite: bool = False

    @classmethod
    def from_preset(cls, name: str) -> ExportConfig:
        return cls(preset=name)

    def validate(self) -> None:
        layouts.check_format_name(self.format)
        if self.student is None or self.out is None:
            raise AnimlcmError("export: give the student folder and --out DIR")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise AnimlcmError(f"export: --dtype {self.dtype}: use auto, {', '.join(DTYPES)}")
        if self.file_format not in ("pth", "safetensors"):
            raise AnimlcmError(f"export: --file-format {self.file_format}: use pth or safetensors")
        if self.steps < 1:
            raise AnimlcmError(f"export: --steps {self.steps}: use 1 or more (4 is the usual)")


@dataclass
class ExportSummary:
    out: Path
    format: str
    files: dict[str, int]  # file name -> tensors written
    timesteps: list[int]
    dtype: str
    merged_lora: bool


# ------------------------------------------------------------------------------------------------ helpers
def _teacher_folders(folder: Path, meta: dict) -> list[Path]:
    """The folder itself and the teacher it came from (where an import left its extras and source record)."""
    from animlcm.models.linked import meta_target

    out = [folder]
    for key in ("base_teacher", "teacher"):
        if isinstance(meta.get(key), str):
            try:
                out.append(meta_target(meta, key, folder, what=key, hub=False))
            except AnimlcmError:
                continue
    return out


def find_import_record(folder: Path, meta: dict) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Extras and source record of the import behind ``folder`` (``({}, {})`` when not imported)."""
    for cand in _teacher_folders(folder, meta):
        if (cand / SOURCE_FILE).is_file():
            return read_extras(cand), json.loads((cand / SOURCE_FILE).read_text())
    return {}, {}


def default_format(state: dict[str, torch.Tensor], source: dict) -> str:
    """The imported teacher's format; for a teacher animlcm trained, the one its pose guider fits."""
    if source.get("format") in layouts.FORMATS:
        return source["format"]
    return "champ" if any(".attentions." in k for k in state if k.startswith("pose_guider.")) else "moore-aa"


def consistency_scheduler(schedule, steps: int, original_steps: int = ORIGINAL_STEPS):
    """diffusers' ``LCMScheduler`` for the student: the teacher's betas and prediction type, LCM boundary
    scalings (timestep_scaling 10, as distilled), the student's skipping grid (``original_steps`` = its
    ``--num-ddim-steps``); ``set_timesteps(steps)`` done. It samples a K = 1 student exactly as ``render``."""
    sched = schedule.make_scheduler("lcm", original_inference_steps=original_steps, timestep_scaling=10.0)
    sched.set_timesteps(steps)
    return sched


def sampling_grid(folder: Path, meta: dict, steps: int) -> int:
    """The student's skipping grid N, after checking that LCMScheduler samples it as it was distilled.

    A K > 1 (segmented, DanceLCM) student maps x_t to its segment's lower edge with a DDIM jump; LCMScheduler
    reads every output as the LCM boundary form of x0, so above the first inner edge it would sample wrongly:
    refused rather than written.
    """
    segments = int(meta.get("segments") or 1)
    if segments > 1:
        raise AnimlcmError(
            f"{folder}: a {segments}-segment student maps x_t to its segment's lower edge, which diffusers' "
            "LCMScheduler (what the original code would sample it with) reads as x0; distill it with "
            "--segments 1 to export it"
        )
    grid = int(meta.get("num_ddim_steps") or ORIGINAL_STEPS)
    if steps > grid:
        raise AnimlcmError(f"export: --steps {steps}: this student's grid has {grid} steps; use 1..{grid}")
    return grid


def cast_files(
    files: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype
) -> dict[str, dict[str, torch.Tensor]]:
    return {
        stem: {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        for stem, tensors in files.items()
    }


_HOWTO = {
    "moore-aa": """In Moore-AnimateAnyone (`scripts/pose2vid.py`): point `denoising_unet_path`,
`reference_unet_path`, `pose_guider_path` and `motion_module_path` of `configs/prompts/animation.yaml` at
these files, replace `scheduler = DDIMScheduler(**sched_kwargs)` with
`scheduler = LCMScheduler.from_pretrained("{folder}")` (this folder), and run with
`--steps {steps} --cfg 1`.""",
    "champ": """In Champ (`inference.py`): set `ckpt_dir` and `motion_module_path` of
`configs/inference/inference.yaml` to this folder, `num_inference_steps: {steps}` and `guidance_scale: 1.0`,
and replace `noise_scheduler = DDIMScheduler(**sched_kwargs)` with
`noise_scheduler = LCMScheduler.from_pretrained("{folder}")` (this folder).
In ComfyUI wrappers: the LCM sampler, {steps} steps, CFG 1.""",
}
_SCHEDULE_KEYS = (
    "beta_start", "beta_end", "beta_schedule", "prediction_type", "rescale_betas_zero_snr",
    "timestep_spacing", "steps_offset", "original_inference_steps", "timestep_scaling",
)  # fmt: skip


def readme_text(
    fmt: TeacherFormat,
    student: Path,
    folder: str,
    files: dict[str, int],
    sched,
    dtype: str,
    ext: str,
    merged: bool = False,
) -> str:
    """The export folder's README: what the files are and how to sample the student."""
    cfg = dict(sched.config)
    timesteps = [int(t) for t in sched.timesteps]
    steps = len(timesteps)
    kw = ", ".join(f"{k}={cfg[k]!r}" for k in _SCHEDULE_KEYS if k in cfg)
    rows = "\n".join(f"| `{name}` | {n} |" for name, n in files.items())
    howto = _HOWTO[fmt.name].format(folder=folder, steps=steps)
    merge_note = "LoRA merged into the weights; " if merged else ""
    return f"""# {steps}-step consistency student in the {fmt.title} checkpoint format

Exported by `animlcm export --format {fmt.name}` from `{student}` on {datetime.now(timezone.utc):%Y-%m-%d}
({merge_note}tensors in {dtype}). The files replace the teacher's files of the same name. The VAE
(`stabilityai/sd-vae-ft-mse`) and the CLIP image encoder (`lambdalabs/sd-image-variations-diffusers`,
`image_encoder/`) are unchanged: keep the teacher's.

| file | tensors |
|---|---|
{rows}

## Sampling: {steps} consistency steps, no classifier-free guidance

This is a consistency model: do **not** sample it with the teacher's DDIM sampler and CFG.

- **timesteps**: `{timesteps}` ({steps} of the {cfg["original_inference_steps"]}-step skipping grid over 1000
  training steps, the one the student was distilled on)
- **consistency sampling**: at each timestep the network's output ({cfg["prediction_type"]}) gives x0, the
  LCM boundary scalings (`timestep_scaling` 10) give the consistency output, and the next step re-noises
  that x0 to the next timestep with fresh noise; the last step's x0 is the result. diffusers'
  `LCMScheduler` does exactly this.
- **no CFG**: guidance scale 1, one network call per step (the teacher's guidance is distilled in).
- noise schedule as the teacher: `{kw}`.

`scheduler_config.json` in this folder is that scheduler:

```python
from diffusers import LCMScheduler
scheduler = LCMScheduler.from_pretrained("{folder}")   # this folder
scheduler.set_timesteps({steps})                        # -> {timesteps}
```

{howto}

The files are plain `{{name: tensor}}` dicts: `torch.load(path, weights_only=True)` reads the `.{ext}` files.
"""


# ------------------------------------------------------------------------------------------------ the stage
def run(cfg: ExportConfig, progress: bool = True) -> ExportSummary:
    """Write the student at ``cfg.student`` in ``cfg.format``'s file layout to ``cfg.out``."""
    from animlcm.models.io import META_FILE, load_model_folder
    from animlcm.models.lora import has_lora, merge_lora
    from animlcm.outputs import check_output

    cfg.validate()
    student, out = Path(cfg.student), Path(cfg.out)
    check_output(out, "--out", folder=True)  # before the model loads
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise AnimlcmError(f"{out}: already exists and is not empty; pass --overwrite or another --out")

    if not (student / META_FILE).exists() and (student / "student" / META_FILE).exists():
        student = student / "student"  # a distill run folder: its student
    loaded = load_model_folder(student, vae=False)
    grid = sampling_grid(student, loaded.meta, cfg.steps)
    net = loaded.net
    merged = has_lora(net)
    if merged:
        merge_lora(net)
    if getattr(net, "face_projector", None) is not None:
        raise AnimlcmError(
            f"{student}: this student uses DanceLCM face tokens, which Moore-AnimateAnyone's and Champ's "
            "code cannot feed; distill without face tokens to export it"
        )
    extras, source = find_import_record(student, loaded.meta)
    fmt = layouts.get_format(cfg.format if cfg.format != "auto" else default_format(net.state_dict(), source))
    if source and source.get("format") != fmt.name:
        extras = {}  # another format's extras mean nothing here
    files = export_tensors(fmt, net.state_dict(), extras)
    dtype = cfg.dtype
    if dtype == "auto":
        known = set((source.get("dtypes") or {}).values()) if source.get("format") == fmt.name else set()
        dtype = known.pop() if len(known) == 1 and known <= set(DTYPES) else "float32"
    files = cast_files(files, DTYPES[dtype])
    sched = consistency_scheduler(loaded.schedule, cfg.steps, grid)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts: dict[str, int] = {}
    try:
        for stem, tensors in _progress(files.items(), progress, "writing"):
            name = f"{stem}.{cfg.file_format}"
            write_state_dict(tensors, tmp / name)
            counts[name] = len(tensors)
        sched.save_config(str(tmp))
        text = readme_text(fmt, student, out.name, counts, sched, dtype, cfg.file_format, merged)
        (tmp / "README.md").write_text(text)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportSummary(
        out=out,
        format=fmt.name,
        files=counts,
        timesteps=[int(t) for t in sched.timesteps],
        dtype=dtype,
        merged_lora=merged,
    )


def _progress(items: Any, enabled: bool, text: str):
    items = list(items)
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=text, transient=True)

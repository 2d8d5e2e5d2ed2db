"""``animlcm.AnimationPipeline``: a diffusers ``DiffusionPipeline`` over a teacher or student folder.

    pipe = AnimationPipeline.from_pretrained(folder, torch_dtype=torch.float16).to("cuda")
    frames = pipe(reference_image, poses, num_inference_steps=4, generator=g).frames[0]

It samples with ``render_clip``, the project's one sampler (``render``, ``eval`` and the server call it too),
so a seed gives the same frames here as on the command line. Which sampler runs follows ``pipe.scheduler``:
``SegmentedConsistencyScheduler`` (K-segment students), ``LCMScheduler`` (K = 1), ``DDIMScheduler`` (teachers,
with classifier-free guidance ``guidance_scale``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import BaseOutput

from animlcm.errors import AnimlcmError

__all__ = ["AnimationPipeline", "AnimationPipelineOutput"]

OUTPUT_TYPES = ("pil", "np", "pt")
DEFAULT_STUDENT_STEPS = 4
DEFAULT_TEACHER_STEPS = 25
DEFAULT_GUIDANCE = 3.5


@dataclass
class AnimationPipelineOutput(BaseOutput):
    """``frames``: one video per call (batch of 1): a list of PIL images (``pil``), float ``(1, F, H, W, 3)``
    in [0, 1] (``np``) or ``(1, F, 3, H, W)`` (``pt``)."""

    frames: Any


class AnimationPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Pose-guided animation of a reference image with an animlcm teacher or student (see the module doc).

    ``pipe.load_lora_weights(student / "lora")`` puts a LoRA student's adapter on its teacher's pipeline
    (diffusers' own loader: the file is a pipeline LoRA file, keys ``unet.*``).
    """

    _lora_loadable_modules = ["unet"]
    text_encoder = None  # the UNet is conditioned on CLIP image tokens: no text encoder takes a LoRA
    model_cpu_offload_seq = "image_encoder->reference_unet->pose_guider->unet->vae"
    _optional_components = ["face_projector", "aux_head"]
    _callback_tensor_inputs = ["latents", "denoised"]

    def __init__(
        self,
        unet: Any,
        reference_unet: Any,
        pose_guider: Any,
        image_encoder: Any,
        vae: Any,
        scheduler: Any,
        face_projector: Any = None,
        aux_head: Any = None,
        kind: str = "student",
        preset: str = "tiny",
        face_attention: str = "concat",
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            reference_unet=reference_unet,
            pose_guider=pose_guider,
            image_encoder=image_encoder,
            vae=vae,
            scheduler=scheduler,
            face_projector=face_projector,
            aux_head=aux_head,
        )
        self.register_to_config(kind=kind, preset=preset, face_attention=face_attention)
        self._network = None

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> AnimationPipeline:
        """A folder in the diffusers layout (or a hub id) as diffusers loads it; a folder in animlcm's earlier
        flat layout (``animlcm.json`` + ``model.safetensors``) through the project's loader."""
        from animlcm.models.diffusers_folder import MODEL_INDEX
        from animlcm.models.io import META_FILE

        path = Path(pretrained_model_name_or_path)
        if path.is_dir() and not (path / MODEL_INDEX).exists() and (path / META_FILE).exists():
            return cls.from_model_folder(path, torch_dtype=kwargs.get("torch_dtype") or kwargs.get("dtype"))
        # diffusers loads components only from modules already imported (it never imports one a folder names)
        import animlcm.diffusion.scheduler  # noqa: F401  (SegmentedConsistencyScheduler)
        import animlcm.models.components  # noqa: F401

        # float32 unless asked (as the project's loader): transformers would otherwise keep a float16 file's
        # CLIP encoder in float16 next to float32 diffusers parts; diffusers 0.42 calls torch_dtype "dtype"
        if kwargs.get("torch_dtype") is not None:
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        kwargs.setdefault("dtype", torch.float32)
        if path.is_dir() and (path / META_FILE).exists():
            kwargs = {**_shared_components(path, kwargs), **kwargs}
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_model_folder(
        cls, folder: str | Path, torch_dtype: torch.dtype | None = None
    ) -> AnimationPipeline:
        """Any teacher or student folder (either layout, LoRA students too) via ``load_model_folder``."""
        from animlcm.models.io import load_model_folder

        loaded = load_model_folder(folder, dtype=torch_dtype or torch.float32)
        return cls.from_network(loaded.net, loaded.vae, loaded.kind, loaded.schedule, loaded.meta)

    @classmethod
    def from_network(cls, net: Any, vae: Any, kind: str, schedule: Any, meta: dict | None = None):
        """A pipeline around a loaded :class:`AnimationNetwork` (shared, not copied); its scheduler is the
        one that samples this kind of model as it was trained."""
        from animlcm.diffusion.scheduler import folder_scheduler
        from animlcm.models.lora import has_lora, merge_lora

        if has_lora(net):
            merge_lora(net)  # the pipeline's UNet is a plain one (save_pretrained writes full weights)
        if vae is None:
            from animlcm.models.vae import load_vae

            vae = load_vae(None, net.config.preset).to(net.device)
        parts = {name: _as_component(name, getattr(net, name)) for name in _OWN_PARTS}
        for name, module in parts.items():
            setattr(net, name, module)
        pipe = cls(
            unet=net.unet,
            reference_unet=net.reference_unet,
            image_encoder=net.image_encoder,
            vae=vae,
            scheduler=folder_scheduler(kind, schedule, meta or {}),
            kind=kind,
            preset=net.config.preset,
            face_attention=net.config.face_attention,
            **parts,
        )
        pipe._network = net
        return pipe

    def save_pretrained(self, save_directory: str | Path, **_: Any) -> None:
        """Write the diffusers-layout model folder (atomically, through the project's writer)."""
        from animlcm.models.io import save_model_folder

        net = self.network
        meta = {k: v for k, v in self._sampling_meta().items() if k != "teacher"}
        save_model_folder(
            net, self.vae, save_directory, self.config.kind, self._schedule(), meta, scheduler=self.scheduler
        )

    @classmethod
    def load_lora_into_text_encoder(cls, *args: Any, **kwargs: Any) -> None:
        """No text encoder here (the mixin's call is a no-op)."""

    # ------------------------------------------------------------------------------------------ the network
    @property
    def network(self):
        """The :class:`AnimationNetwork` made of this pipeline's components (built once, sharing them)."""
        if self._network is None or self._network.unet is not self.unet:
            self._network = self._build_network()
        return self._network

    def _build_network(self):
        from animlcm.models.aligned import realign
        from animlcm.models.network import AnimationNetwork, NetworkConfig, plain_config

        face = self.face_projector
        config = NetworkConfig(
            unet=plain_config(self.unet.config),
            reference_unet=plain_config(self.reference_unet.config),
            image_encoder=plain_config(self.image_encoder.config),
            pose_guider=self.pose_guider.guider_config.to_dict(),
            face_tokens=face is not None,
            face_patch_size=int(face.config.patch_size) if face is not None else 4,
            face_attention=self.config.face_attention,
            aux_head=self.aux_head is not None,
            schedule=self._schedule().to_dict(),
            preset=self.config.preset,
        )
        net = AnimationNetwork(
            config, unet=self.unet, reference_unet=self.reference_unet, image_encoder=self.image_encoder
        )
        for name in _OWN_PARTS:  # the components themselves, not the fresh ones the constructor made
            setattr(net, name, getattr(self, name))
        # as load_model_folder does: the same bits as render whichever loader mapped the files
        realign(net)
        realign(self.vae)
        return net.eval()

    def _schedule(self):
        from animlcm.diffusion.scheduler import schedule_of

        return schedule_of(self.scheduler.config)

    def _sampling_meta(self) -> dict:
        """Which sampler ``pipe.scheduler`` stands for, in the meta keys ``render_clip`` reads."""
        name = type(self.scheduler).__name__
        config = self.scheduler.config
        if name == "SegmentedConsistencyScheduler":
            return {
                "segments": int(config.num_segments),
                "num_ddim_steps": int(config.original_inference_steps),
                "deterministic": bool(config.deterministic),
            }
        if name == "LCMScheduler":
            return {"segments": 1, "num_ddim_steps": int(config.original_inference_steps or 50)}
        if name == "DDIMScheduler":
            return {"teacher": True}
        raise AnimlcmError(
            f"AnimationPipeline: scheduler {name} is not one animlcm samples with; use "
            "SegmentedConsistencyScheduler, LCMScheduler (students) or DDIMScheduler (teachers)"
        )

    # ------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        reference_image: Any,
        poses: Any,
        num_inference_steps: int | None = None,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict | None] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        face_image: Any = None,
        context_frames: int = 16,
        context_overlap: int = 4,
    ) -> AnimationPipelineOutput | tuple:
        """Animate ``reference_image`` (PIL, uint8 ``(H, W, 3)`` array or ``(3, H, W)`` tensor in [0, 1])
        with ``poses`` (skeleton images: a list of PIL/arrays, a uint8 ``(F, H, W, 3)`` array or an
        ``(F, 3, H, W)`` tensor in [0, 1]); the reference is fitted to the poses' size as ``render`` does.

        ``num_inference_steps``: default 4 (students; at least one per segment) or 25 (teachers, which use
        ``guidance_scale``); ``generator``: the noise (default: seed 0 on the CPU, as ``render --seed 0``);
        ``callback_on_step_end(pipe, i, t, {"latents", "denoised"})`` after each step (the values it returns
        are not fed back: sampling stays the project's one path); ``face_image``: the reference's 256x256
        face crop for face-token models (default: detected as ``render`` does).
        """
        from animlcm.stages.render.pipeline import RenderModel, SamplerSettings, reference_face, render_clip
        from animlcm.stages.render.sources import fit_frames

        if output_type not in OUTPUT_TYPES:
            raise AnimlcmError(f"AnimationPipeline: output_type {output_type!r}; use one of {OUTPUT_TYPES}")
        skeleton = _frames_uint8(poses, "poses")
        reference = _image_uint8(reference_image, "reference_image")
        reference_full = reference
        reference = fit_frames(reference[None], skeleton.shape[1], skeleton.shape[2])[0]
        meta = self._sampling_meta()
        teacher = bool(meta.get("teacher"))
        steps = num_inference_steps or (DEFAULT_TEACHER_STEPS if teacher else DEFAULT_STUDENT_STEPS)
        net = self.network
        if face_image is None and net.face_projector is not None:
            face_image = reference_face(reference_full)
        elif face_image is not None:
            face_image = _image_uint8(face_image, "face_image")
        model = RenderModel(
            net=net,
            vae=self.vae,
            schedule=self._schedule(),
            kind=self.config.kind,
            meta=meta,
            device=self._execution_device,
            dtype=net.dtype,
        )
        settings = SamplerSettings(
            steps=steps,
            teacher=teacher,
            cfg=guidance_scale,
            segments=meta.get("segments"),
            deterministic=bool(meta.get("deterministic", False)),
            window=context_frames,
            overlap=context_overlap,
        )
        wanted = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = sorted(set(wanted) - set(self._callback_tensor_inputs))
        if unknown:
            raise AnimlcmError(
                f"callback_on_step_end_tensor_inputs {unknown}: use {self._callback_tensor_inputs}"
            )
        with self.progress_bar(total=steps) as bar:

            def on_step(info: dict) -> None:
                bar.update()
                if callback_on_step_end is not None:
                    values = {"latents": info["x"], "denoised": info["denoised"]}
                    callback_on_step_end(self, int(info["i"]), int(info["t"]), {k: values[k] for k in wanted})

            out = render_clip(
                model, reference, skeleton, settings, face=face_image, generator=generator, on_step=on_step
            )
        self.maybe_free_model_hooks()
        frames = _convert(out.frames, output_type)
        return AnimationPipelineOutput(frames=frames) if return_dict else (frames,)


_OWN_PARTS = ("pose_guider", "face_projector", "aux_head")


def _shared_components(folder: Path, kwargs: dict) -> dict:
    """The components a student links to its teacher (``animlcm.json`` "shared"), each loaded from the
    teacher's folder with its own library's ``from_pretrained`` (the digest checked first)."""
    import importlib

    from animlcm.models.diffusers_folder import read_index
    from animlcm.models.io import read_folder_meta
    from animlcm.models.linked import shared_source

    shared = read_folder_meta(folder).get("shared") or {}
    index = read_index(folder)
    out = {}
    for part, entry in shared.items():
        if part in kwargs:  # the caller's own component wins, as in diffusers
            continue
        source = shared_source(folder, part, entry)
        library, name = index[part]
        cls = getattr(importlib.import_module(library), name)
        out[part] = cls.from_pretrained(str(source), subfolder=part, dtype=kwargs["dtype"])
    return out


def _as_component(name: str, module: Any) -> Any:
    """The network's own part as its diffusers twin (same weights, moved in, not copied)."""
    from animlcm.models.components import part_model

    if module is None or hasattr(module, "save_config"):
        return module
    twin = part_model(name, module)
    twin.load_state_dict(module.state_dict(), assign=True)  # strict: every key, right shapes
    return twin.eval()


def _image_uint8(image: Any, what: str) -> np.ndarray:
    """PIL / uint8 (H, W, 3) / float (3, H, W) tensor in [0, 1] -> uint8 (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise AnimlcmError(f"{what}: a tensor must be (3, H, W) in [0, 1], got {tuple(image.shape)}")
        image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise AnimlcmError(f"{what}: want an RGB image (PIL or uint8 (H, W, 3)), got {arr.dtype} {arr.shape}")
    return arr


def _frames_uint8(poses: Any, what: str) -> np.ndarray:
    """A list of images / uint8 (F, H, W, 3) / float (F, 3, H, W) tensor in [0, 1] -> uint8 (F, H, W, 3)."""
    if isinstance(poses, torch.Tensor) and poses.ndim == 4:
        return np.stack([_image_uint8(p, what) for p in poses])
    if isinstance(poses, np.ndarray) and poses.ndim == 4:
        if poses.dtype != np.uint8 or poses.shape[-1] != 3 or not len(poses):
            raise AnimlcmError(f"{what}: want uint8 (F, H, W, 3) frames, got {poses.dtype} {poses.shape}")
        return np.ascontiguousarray(poses)
    frames = [_image_uint8(p, what) for p in poses]
    if not frames or len({f.shape for f in frames}) != 1:
        raise AnimlcmError(f"{what}: want one or more frames of one size")
    return np.stack(frames)


def _convert(frames: np.ndarray, output_type: str) -> Any:
    if output_type == "pil":
        from PIL import Image

        return [[Image.fromarray(f) for f in frames]]
    as_float = frames.astype(np.float32)[None] / 255.0
    if output_type == "np":
        return as_float
    return torch.from_numpy(as_float).permute(0, 1, 4, 2, 3)

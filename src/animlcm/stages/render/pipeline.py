"""From a loaded network to frames: conditioning once, a sampler over context windows, VAE decode.

The three parts are timed separately (``timings``: conditioning, denoising, decode) because they scale
differently: conditioning is once per clip, denoising is steps x windows network calls, decode is per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.render.windows import windowed_denoiser

DEFAULT_GRID = 50  # LCM's skipping grid, for folders that record none (teachers, students before the meta)


@dataclass
class RenderModel:
    """What rendering needs from a model folder (or a random network)."""

    net: Any  # AnimationNetwork
    vae: Any  # diffusers AutoencoderKL
    schedule: Any  # NoiseSchedule
    kind: str  # "student" | "teacher" | "random"
    meta: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def method(self) -> str:
        return str(self.meta.get("method", self.kind))

    @property
    def num_ddim_steps(self) -> int:
        """N of the skipping grid the student was distilled on (its meta; 50, LCM's, for other folders)."""
        return int(self.meta.get("num_ddim_steps") or DEFAULT_GRID)

    def segments(self, settings: SamplerSettings) -> int:
        """K of the consistency sampler: ``--segments`` if given, else the student's own (1 = plain LCM)."""
        return int(settings.segments if settings.segments is not None else self.meta.get("segments") or 1)

    def min_steps(self, settings: SamplerSettings) -> int:
        """The fewest steps ``settings`` can sample this model with: one per segment (the teacher: 1)."""
        return 1 if settings.teacher else self.segments(settings)


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 4
    teacher: bool = False  # DDIM + CFG (the teacher's sampler) instead of consistency sampling
    cfg: float = 3.5
    segments: int | None = None
    deterministic: bool = False
    seed: int = 0
    window: int = 16
    overlap: int = 4


@dataclass
class RenderOutput:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    timings: dict[str, float]  # seconds: conditioning, denoising, decode
    calls: int  # network calls (windows x steps x CFG branches)
    sampler: str


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """auto: CUDA when present with bf16 (fp16 on GPUs without bf16), else CPU fp32."""
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AnimlcmError(f"--device {device}: CUDA is not available here; use --device cpu")
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return dev, torch.float32
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtypes |= {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise AnimlcmError(f"--dtype {dtype}: choose auto, fp32, fp16 or bf16")
    return dev, dtypes[dtype]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _timed(timings: dict[str, float], key: str, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def image_tensor(image: np.ndarray, device, dtype) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [0, 1]."""
    return (
        torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].to(device=device, dtype=dtype)
        / 255.0
    )


def clip_tensor(frames: np.ndarray, device, dtype) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (1, 3, F, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]
    return x.to(device=device, dtype=dtype) / 255.0


@torch.no_grad()
def encode_latent(vae, image01: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> posterior mean x scaling factor (the cache's latent convention)."""
    return vae.encode(image01 * 2 - 1).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def encode_reference(model: RenderModel, reference: np.ndarray, face: np.ndarray | None = None):
    """The ONE conditioning computation per clip: CLIP (+ face) tokens and reference-net features.

    ``face``: the reference's 256x256 face crop for face-token models (None: no face, zero face tokens,
    which is how the network was trained on frames without a detected face).
    """
    ref = image_tensor(reference, model.device, model.dtype)
    ref_latent = encode_latent(model.vae, ref)
    face_latent = found = None
    if getattr(model.net, "face_projector", None) is not None and face is not None:
        face_latent = encode_latent(model.vae, image_tensor(face, model.device, model.dtype))
        found = torch.ones(1, dtype=torch.bool)
    return model.net.encode_conditioning(ref, ref_latent, face_latent, found)


def reference_face(image: np.ndarray, margin: float = 0.5) -> np.ndarray | None:
    """The reference's face crop, found and cropped exactly as extract does (MediaPipe, square + margin,
    256x256), on the full-resolution image; None when no face is found or mediapipe is missing."""
    from animlcm.stages.extract import face as face_mod

    try:
        detector = face_mod.FaceDetector()
    except AnimlcmError:
        return None
    try:
        boxes, found = detector(image[None])
    finally:
        detector.close()
    if not found[0]:
        return None
    return face_mod.crop_faces(image[None], face_mod.square_boxes(boxes, margin), found)[0]


def pose_maps(net, skeleton: torch.Tensor) -> dict[str, torch.Tensor]:
    """The guidance maps the network's pose guider wants; render has skeletons only (SMPL maps: extract)."""
    guider = getattr(net, "pose_guider", None)
    maps = tuple(getattr(guider, "maps", ("skeleton",)))
    missing = [m for m in maps if m != "skeleton"]
    if missing:
        raise AnimlcmError(
            f"this model also wants {', '.join(missing)} guidance maps: render from a cache entry with them "
            "(CACHE_DIR:video_name, extracted with --smpl-model) or use a skeleton-only model"
        )
    return {"skeleton": skeleton}


def check_steps(model: RenderModel, settings: SamplerSettings) -> None:
    """A K-segment student maps x_t to its segment's lower edge, so it samples in K steps at least: with
    fewer, an edge estimate (still noisy) would be taken for x0."""
    need = model.min_steps(settings)
    if settings.steps < need:
        raise AnimlcmError(
            f"--steps {settings.steps}: this student was distilled with {need} segments and samples in at "
            f"least {need} steps (--steps {need}); distill it with --segments 1 for 1-step sampling"
        )


@torch.no_grad()
def render_clip(
    model: RenderModel,
    reference: np.ndarray,
    skeleton: np.ndarray,
    settings: SamplerSettings,
    *,
    face: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> RenderOutput:
    """Animate ``reference`` (uint8 (H, W, 3)) with ``skeleton`` (uint8 (F, H, W, 3)) -> frames + timings.

    The one sampling path of the project: ``render``, ``eval``, the server and ``AnimationPipeline`` all
    come here. ``generator``: where the initial and re-noising noise comes from (default: a CPU generator
    seeded with ``settings.seed``); ``on_step(info)``: the sampler's ``{"x", "i", "t", "denoised"}`` after
    each network call (the pipeline's ``callback_on_step_end``).
    """
    from animlcm.diffusion import sampling, timesteps
    from animlcm.diffusion.param import consistency_from_output
    from animlcm.models.layout import frames_to_batch
    from animlcm.models.vae import decode_latents

    net, dev, dt = model.net, model.device, model.dtype
    num_frames, height, width = skeleton.shape[:3]
    if height % 8 or width % 8:
        raise AnimlcmError(f"resolution {height}x{width} (HxW) is not divisible by 8; pick multiples of 8")
    # the student's own skipping grid and segments (its meta)
    grid, segments = model.num_ddim_steps, model.segments(settings)
    check_steps(model, settings)
    timings: dict[str, float] = {}
    calls = 0

    # 1. conditioning, once per clip: every step and every window reuses it
    with _timed(timings, "conditioning", dev):
        cond = encode_reference(model, reference, face)
        pose_all = clip_tensor(skeleton, dev, dt)

    # 2. the sampler over all frames; context windows are blended inside the callable it sees
    abar = model.schedule.alphas_cumprod(device=dev)
    kind = model.schedule.prediction_type
    # a CPU generator by default: the same noise on every device
    gen = generator if generator is not None else torch.Generator().manual_seed(settings.seed)
    shape = (1, 4, num_frames, height // 8, width // 8)
    x_T = torch.randn(shape, generator=gen, device=gen.device).to(dev, dt)

    def noise_fn(like: torch.Tensor, _i: int) -> torch.Tensor:
        return torch.randn(like.shape, generator=gen, device=gen.device).to(like.device, like.dtype)

    def raw(c) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The network's raw output (eps / v) over all frames, windowed, for conditioning ``c``."""

        def window_out(x: torch.Tensor, t: torch.Tensor, frames: range) -> torch.Tensor:
            nonlocal calls
            calls += 1
            pose = pose_maps(net, pose_all[:, :, frames.start : frames.stop])
            return net(x.to(dt), t, pose, c)

        return windowed_denoiser(window_out, num_frames, settings.window, settings.overlap)

    cb = _callback(progress, on_step)
    with _timed(timings, "denoising", dev):
        if settings.teacher:
            ts = timesteps.teacher_timesteps(settings.steps, model.schedule)
            # the "conditioning" the sampler hands back is the bound, windowed network for that branch
            latents = sampling.sample_ddim_cfg(
                lambda x, t, branch: branch(x, t),
                x_T,
                ts,
                cond=raw(cond),
                uncond=raw(cond.uncond()),
                cfg=settings.cfg,
                schedule=model.schedule,
                callback=cb,
            )
            sampler = f"teacher DDIM, CFG {settings.cfg:g}"
        elif segments > 1:
            raw_c = raw(cond)
            latents = sampling.sample_segmented(
                lambda x, t, s: consistency_from_output(raw_c(x, t), x, t, abar=abar, kind=kind, s=s),
                x_T,
                timesteps.segment_edges(segments, grid),
                abar=abar,
                steps=settings.steps,
                num_ddim_steps=grid,
                noise_fn=noise_fn,
                deterministic=settings.deterministic,
                callback=cb,
            )
            sampler = f"segmented consistency, K={segments}"
        else:
            raw_c = raw(cond)
            latents = sampling.sample_consistency(
                lambda x, t: consistency_from_output(raw_c(x, t), x, t, abar=abar, kind=kind),
                x_T,
                timesteps.lcm_timesteps(settings.steps, original_steps=grid),
                abar=abar,
                noise_fn=noise_fn,
                deterministic=settings.deterministic,
                callback=cb,
            )
            sampler = "consistency"
        if settings.deterministic and not settings.teacher:
            sampler += ", deterministic"

    # 3. VAE decode, in frame batches to bound memory at real size
    with _timed(timings, "decode", dev):
        frames = decode_latents(model.vae, frames_to_batch(latents), batch_size=8)
    return RenderOutput(frames=frames, timings=timings, calls=calls, sampler=sampler)


def _callback(progress: Callable[[int], None] | None, on_step: Callable[[dict], None] | None = None):
    """Adapt the samplers' ``callback(info)`` to a progress advance (then ``on_step(info)``)."""
    if progress is None and on_step is None:
        return None

    def callback(info: dict) -> None:
        if progress is not None:
            progress(int(info["i"]) + 1)
        if on_step is not None:
            on_step(info)

    return callback

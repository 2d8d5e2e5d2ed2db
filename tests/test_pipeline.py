"""``animlcm.AnimationPipeline``: from_pretrained on the built-in student and on a diffusers-layout folder,
the same frames as ``animlcm render`` for the same seed, diffusers' calling conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animlcm import AnimationPipeline
from animlcm.errors import AnimlcmError
from animlcm.stages.render import RenderConfig, run, videoio
from animlcm.stages.render.precheck import BUILTIN_STUDENT
from animlcm.stages.render.run import builtin_dance
from animlcm.stages.render.sources import fit_frames

H, W, FRAMES = 64, 48, 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = np.zeros((80, 60, 3), np.uint8)
    ref[10:75, 20:40] = (200, 120, 90)
    path = tmp_path_factory.mktemp("ref") / "ref.png"
    videoio.write_image(path, ref)
    return path, ref


@pytest.fixture(scope="module")
def pipe():
    return AnimationPipeline.from_pretrained(BUILTIN_STUDENT)


@pytest.fixture(scope="module")
def cli_frames(reference, tmp_path_factory):
    """What `animlcm render --steps 2 --seed 3` writes, frame by frame (lossless PNGs)."""
    out = tmp_path_factory.mktemp("render")
    cfg = RenderConfig(
        reference=reference[0],
        out=out / "o.mp4",
        frames_dir=out / "frames",
        steps=2,
        seed=3,
        height=H,
        width=W,
        max_frames=FRAMES,
        device="cpu",
        dtype="fp32",
        progress=False,
    )
    run(cfg)
    return videoio.read_image_folder(out / "frames")


def pipeline_inputs(reference):
    return reference[1], builtin_dance(H, W, FRAMES, seed=3).skeleton


def test_builtin_student_through_the_pipeline_is_render(pipe, reference, cli_frames, tmp_path):
    ref, poses = pipeline_inputs(reference)
    out = pipe(
        ref, poses, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np"
    )
    frames = np.rint(out.frames[0] * 255).astype(np.uint8)
    assert frames.shape == (FRAMES, H, W, 3) and frames.std() > 1
    assert np.array_equal(frames, cli_frames)

    # the same from the diffusers-layout folder the pipeline saves, loaded by diffusers' machinery
    pipe.save_pretrained(tmp_path / "saved")
    again = AnimationPipeline.from_pretrained(tmp_path / "saved")
    assert type(again.scheduler).__name__ == "SegmentedConsistencyScheduler"
    out2 = again(
        ref, poses, num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np"
    )
    assert np.array_equal(out2.frames, out.frames)
    # and a different seed is a different video: the generator is really used
    out3 = pipe(
        ref, poses, num_inference_steps=2, generator=torch.Generator().manual_seed(4), output_type="np"
    )
    assert not np.array_equal(out3.frames, out.frames)


def test_inputs_outputs_and_callbacks(pipe, reference):
    from PIL import Image

    ref, poses = pipeline_inputs(reference)
    seen: list[tuple[int, int, tuple]] = []

    def on_step(p, i, t, values):
        assert p is pipe
        seen.append((i, t, tuple(values["latents"].shape), tuple(values["denoised"].shape)))
        return {}

    pil = pipe(
        Image.fromarray(ref),
        [Image.fromarray(p) for p in poses],
        num_inference_steps=2,
        callback_on_step_end=on_step,
        callback_on_step_end_tensor_inputs=["latents", "denoised"],
    )
    assert len(pil.frames) == 1 and len(pil.frames[0]) == FRAMES and pil.frames[0][0].size == (W, H)
    assert [(i, t) for i, t, *_ in seen] == [(0, 999), (1, 499)]  # the K = 2 student's two segments
    assert seen[0][2] == (1, 4, FRAMES, H // 8, W // 8)
    pt = pipe(
        torch.from_numpy(ref).permute(2, 0, 1) / 255.0,
        torch.from_numpy(poses).permute(0, 3, 1, 2) / 255.0,
        num_inference_steps=2,
        output_type="pt",
    ).frames
    assert pt.shape == (1, FRAMES, 3, H, W)
    # PIL in, tensor in and arrays in are the same video (default seed 0 each time)
    as_np = np.stack([np.asarray(f) for f in pil.frames[0]])
    assert np.array_equal(as_np, (pt[0].permute(0, 2, 3, 1) * 255).round().byte().numpy())
    assert fit_frames(ref[None], H, W).shape == (1, H, W, 3)


def test_clear_errors(pipe, reference):
    ref, poses = pipeline_inputs(reference)
    with pytest.raises(AnimlcmError, match="output_type 'latent'"):
        pipe(ref, poses, output_type="latent")
    with pytest.raises(AnimlcmError, match="at least 2 steps"):
        pipe(ref, poses, num_inference_steps=1)
    with pytest.raises(AnimlcmError, match="poses: want uint8"):
        pipe(ref, poses.astype(np.float32))
    with pytest.raises(AnimlcmError, match="tensor_inputs"):
        pipe(ref, poses, callback_on_step_end_tensor_inputs=["noise"])


def test_a_teacher_samples_with_ddim_and_guidance(tmp_path, reference):
    """A teacher folder ships DDIMScheduler; the pipeline then runs render's teacher sampler (DDIM + CFG)."""
    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import tiny_network
    from animlcm.models.vae import build_tiny_vae
    from animlcm.stages.render.model import load_render_model
    from animlcm.stages.render.pipeline import SamplerSettings, render_clip

    folder = save_model_folder(tiny_network(seed=1), build_tiny_vae(), tmp_path / "t", kind="teacher")
    teacher = AnimationPipeline.from_pretrained(folder)
    assert type(teacher.scheduler).__name__ == "DDIMScheduler"
    ref, poses = pipeline_inputs(reference)
    ref = fit_frames(ref[None], H, W)[0]
    out = teacher(ref, poses, num_inference_steps=3, guidance_scale=2.0, output_type="np").frames[0]
    model = load_render_model(folder, preset="tiny", device=torch.device("cpu"), dtype=torch.float32)
    want = render_clip(model, ref, poses, SamplerSettings(steps=3, teacher=True, cfg=2.0)).frames
    assert np.array_equal(np.rint(out * 255).astype(np.uint8), want)

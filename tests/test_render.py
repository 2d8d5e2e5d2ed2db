"""`animlcm render` end to end on the tiny preset: mp4 + preview out, conditioning once, clear errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from animlcm.config import resolve_config
from animlcm.errors import AnimlcmError
from animlcm.stages.render import RenderConfig, pipeline, run, videoio
from animlcm.stages.render.run import preview_path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny teacher folder (what `animlcm teacher init --preset tiny` writes), face tokens off for speed."""
    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import tiny_network
    from animlcm.models.vae import build_tiny_vae

    out = tmp_path_factory.mktemp("models") / "teacher"
    save_model_folder(
        tiny_network(seed=0, face_tokens=False, aux_head=False), build_tiny_vae(), out, kind="teacher"
    )
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A reference image and a 6-frame skeleton video at 10 fps (the built-in dance, drawn by extract)."""
    from animlcm.stages.render.run import builtin_dance

    d = tmp_path_factory.mktemp("inputs")
    clip = builtin_dance(96, 64, 6)
    videoio.write_video(d / "pose.mp4", clip.skeleton, fps=10)
    ref = np.zeros((120, 80, 3), np.uint8)
    ref[20:110, 25:55] = (200, 120, 90)
    videoio.write_image(d / "ref.png", ref)
    return d


def _cfg(**kw) -> RenderConfig:
    base = dict(steps=1, progress=False, window=4, overlap=1, device="cpu")
    return resolve_config(RenderConfig, "tiny", None, {**base, **kw})


def _probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return (
            sum(1 for _ in c.decode(s)),
            float(s.average_rate),
            (s.codec_context.height, s.codec_context.width),
        )


def test_render_writes_mp4_preview_and_frames(teacher_dir, inputs, tmp_path):
    out = tmp_path / "out.mp4"
    res = run(_cfg(reference=inputs / "ref.png", pose=str(inputs / "pose.mp4"), model=teacher_dir, out=out,
                   steps=2, max_frames=5, frames_dir=tmp_path / "frames"))  # fmt: skip
    assert _probe(out) == (5, 10.0, (128, 128))  # frame count and the driving fps survive
    assert res.num_frames == 5 and res.sampler == "consistency"
    prev = videoio.read_image(preview_path(out))
    assert preview_path(out).name == "out.preview.png" and prev.shape[1] > prev.shape[0] > 128
    assert len(list((tmp_path / "frames").glob("*.png"))) == 5
    assert set(res.timings) == {"conditioning", "denoising", "decode"}


def test_teacher_sampler_and_builtin_dance(teacher_dir, inputs, tmp_path):
    out = tmp_path / "t.mp4"
    res = run(_cfg(reference=inputs / "ref.png", model=teacher_dir, out=out, teacher=True, steps=2, cfg=2.0,
                   max_frames=3))  # fmt: skip
    assert res.sampler.startswith("teacher DDIM") and _probe(out)[0] == 3


def _tiny_model(teacher_dir):
    from animlcm.stages.render.model import load_render_model

    return load_render_model(teacher_dir, preset="tiny", device=torch.device("cpu"), dtype=torch.float32)


def test_conditioning_computed_once_and_seeded(teacher_dir, inputs):
    model = _tiny_model(teacher_dir)
    calls = {"n": 0}
    encode = model.net.encode_conditioning

    def counting(*a, **k):
        calls["n"] += 1
        return encode(*a, **k)

    model.net.encode_conditioning = counting
    ref = np.full((128, 128, 3), 128, np.uint8)
    skel = np.zeros((7, 128, 128, 3), np.uint8)
    s = pipeline.SamplerSettings(steps=3, window=4, overlap=2, seed=5)
    a = pipeline.render_clip(model, ref, skel, s)
    assert calls["n"] == 1  # 3 steps x 3 windows of network calls, one conditioning
    assert a.calls == 3 * 3 and a.frames.shape == (7, 128, 128, 3)
    b = pipeline.render_clip(model, ref, skel, s)
    np.testing.assert_array_equal(a.frames, b.frames)  # same seed, same video
    c = pipeline.render_clip(model, ref, skel, pipeline.SamplerSettings(steps=3, window=4, overlap=2, seed=6))
    assert not np.array_equal(a.frames, c.frames)
    d = pipeline.render_clip(
        model, ref, skel, pipeline.SamplerSettings(steps=2, segments=2, deterministic=True)
    )
    assert d.sampler == "segmented consistency, K=2, deterministic" and d.calls == 2  # one window
    # one step with a K=2 student would take the edge estimate at t=499 (still noisy) for x0: refused
    with pytest.raises(AnimlcmError, match=r"--steps 1: .* 2 segments .* at least 2 steps \(--steps 2\)"):
        pipeline.render_clip(model, ref, skel, pipeline.SamplerSettings(segments=2, steps=1))


SKELETON = np.zeros((2, 128, 128, 3), np.uint8)


def _timesteps_seen(model, settings) -> list[int]:
    seen = []
    forward = model.net.forward
    model.net.forward = lambda x, t, *a, **k: seen.append(int(t[0])) or forward(x, t, *a, **k)
    try:
        pipeline.render_clip(model, np.full((128, 128, 3), 99, np.uint8), SKELETON, settings)
    finally:
        del model.net.forward
    return seen


@pytest.mark.parametrize(
    "meta, steps, expected",
    [
        ({}, 4, [999, 759, 499, 259]),  # no meta (a teacher folder): LCM's 50-step grid
        ({"num_ddim_steps": 50, "segments": 1}, 4, [999, 759, 499, 259]),
        ({"num_ddim_steps": 20, "segments": 1}, 4, [999, 749, 499, 249]),  # the student's own grid
        ({"num_ddim_steps": 20, "segments": 2}, 4, [999, 749, 499, 249]),  # split on its grid's levels
        ({"num_ddim_steps": 50, "segments": 2}, 2, [999, 499]),  # one call per segment
        ({"num_ddim_steps": 50, "segments": 4}, 5, [999, 879, 759, 499, 259]),
    ],
)
def test_render_samples_on_the_students_grid_and_segments(teacher_dir, meta, steps, expected):
    model = _tiny_model(teacher_dir)
    model.meta = dict(meta)
    assert _timesteps_seen(model, pipeline.SamplerSettings(steps=steps, window=16)) == expected
    if meta.get("segments", 1) > 1:
        with pytest.raises(AnimlcmError, match=f"at least {meta['segments']} steps"):
            settings = pipeline.SamplerSettings(steps=meta["segments"] - 1)
            pipeline.render_clip(model, np.zeros((128, 128, 3), np.uint8), SKELETON, settings)


def test_clear_errors(teacher_dir, inputs, tmp_path):
    ok = dict(
        reference=inputs / "ref.png", pose=str(inputs / "pose.mp4"), model=teacher_dir, out=tmp_path / "o.mp4"
    )
    with pytest.raises(AnimlcmError, match="nope.png: reference image not found"):
        run(_cfg(**{**ok, "reference": tmp_path / "nope.png"}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnimlcmError, match="no skeleton images"):
        run(_cfg(**{**ok, "pose": str(tmp_path / "empty")}))
    with pytest.raises(AnimlcmError, match="not a teacher or student folder"):
        run(_cfg(**{**ok, "model": tmp_path / "empty"}))
    with pytest.raises(AnimlcmError, match="not divisible by 8"):
        _cfg(**{**ok, "height": 100})
    with pytest.raises(AnimlcmError, match="at least 1 sampling step"):
        _cfg(**{**ok, "steps": 0})
    assert not (tmp_path / "o.mp4").exists()


def test_out_never_lands_on_an_input(inputs, tmp_path):
    """`render ref.png --out ref.png` once overwrote the reference with mp4 bytes: refused before loading."""
    import shutil

    ref, pose = tmp_path / "ref.png", tmp_path / "pose.mp4"
    shutil.copy(inputs / "ref.png", ref)
    shutil.copy(inputs / "pose.mp4", pose)
    before = ref.read_bytes(), pose.read_bytes()
    ok = dict(reference=ref, pose=str(pose))
    with pytest.raises(AnimlcmError, match=r"--out .*ref.png: render writes an H.264 mp4; .*\.mp4"):
        _cfg(**ok, out=ref)
    with pytest.raises(AnimlcmError, match=r"would overwrite the pose video .*pose.mp4; choose another"):
        _cfg(**ok, out=tmp_path / "." / "pose.mp4")
    # the preview written next to the video must not hit an input either
    shutil.copy(inputs / "ref.png", tmp_path / "clip.preview.png")
    with pytest.raises(AnimlcmError, match="would overwrite the reference image"):
        _cfg(reference=tmp_path / "clip.preview.png", pose=str(pose), out=tmp_path / "clip.mp4")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(AnimlcmError, match="is a folder"):
        _cfg(**ok, out=tmp_path / "folder.mp4")
    for msg_cfg in (dict(out=ref), dict(out=pose)):
        with pytest.raises(AnimlcmError) as err:
            _cfg(**ok, **msg_cfg)
        assert "\n" not in str(err.value)
    assert (ref.read_bytes(), pose.read_bytes()) == before
    _cfg(**ok, out=tmp_path / "out.mp4")  # a new file next to the inputs is fine


def test_render_refuses_a_tiny_reference_and_names_a_transparent_one(inputs, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from animlcm.cli import app

    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    args = ["render", str(tmp_path / "dot.png"), "--pose", str(inputs / "pose.mp4"), "--random",
            "--steps", "1", "--max-frames", "2", "--out", str(tmp_path / "o.mp4")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, AnimlcmError), result.output
    assert "is 1x1 pixels" in str(result.exception) and "at least 32x32" in str(result.exception)
    assert not (tmp_path / "o.mp4").exists()
    rgba = np.full((64, 48, 4), 255, np.uint8)
    rgba[:, :8, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    args[1] = str(tmp_path / "cut.png")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "transparent pixels are rendered as a white background" in result.output


def test_no_model_without_builtin_student_says_pass_model(inputs, tmp_path, monkeypatch):
    from animlcm.stages.render import model as model_mod
    from animlcm.stages.render import precheck

    monkeypatch.setattr(model_mod, "BUILTIN_STUDENT", tmp_path / "absent")
    monkeypatch.setattr(precheck, "BUILTIN_STUDENT", tmp_path / "absent")  # its --steps check reads it
    with pytest.raises(AnimlcmError, match="pass --model DIR"):
        run(_cfg(reference=inputs / "ref.png", out=tmp_path / "o.mp4"))


def test_resolve_device_dtype_names():
    assert pipeline.resolve_device("cpu", "float32") == (torch.device("cpu"), torch.float32)
    assert pipeline.resolve_device("cpu", "bf16")[1] == torch.bfloat16
    assert pipeline.resolve_device("cpu", "auto")[1] == torch.float32
    with pytest.raises(AnimlcmError, match="--dtype double: choose auto, fp32, fp16 or bf16"):
        pipeline.resolve_device("cpu", "double")


def test_model_folder_takes_a_run_folder(tmp_path):
    from animlcm.models.io import result_folder

    (tmp_path / "run" / "student").mkdir(parents=True)
    (tmp_path / "run" / "student" / "animlcm.json").write_text("{}")
    assert result_folder(tmp_path / "run") == tmp_path / "run" / "student"
    assert result_folder(tmp_path / "run" / "student") == tmp_path / "run" / "student"
    assert result_folder(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # left for the loader's error


def test_builtin_model_says_it_knows_only_synthetic_dancers(real_data, tmp_path):
    from typer.testing import CliRunner

    from animlcm.cli import app
    from animlcm.stages.render.domain import BUILTIN_WORLD_NOTE, builtin_model_note

    photo = real_data / "ref_person_1.png"
    args = ["render", str(photo), "--steps", "2", "--max-frames", "8", "--out", str(tmp_path / "o.mp4")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert BUILTIN_WORLD_NOTE in result.output  # one line, unwrapped
    assert "knows only the synthetic dancers" in result.output and "teacher import" in result.output
    # a model of the user's own, or random weights, make no claim about the built-in one
    assert builtin_model_note(_cfg(reference=photo, model=tmp_path)) is None
    assert builtin_model_note(_cfg(reference=photo, random=True)) is None


def test_synthetic_references_get_no_note(tmp_path):
    from animlcm.stages.render.domain import BUILTIN_WORLD_NOTE, builtin_model_note
    from animlcm.synth.world import generate
    from test_eval import write_tiny_cache

    generate(tmp_path / "set", identities=1, clips=1, frames=2, size=64, refs=True, progress=False)
    ref = tmp_path / "set" / "refs" / "id000.png"
    assert ref.exists() and builtin_model_note(_cfg(reference=ref)) is None
    # a frame saved anywhere, driven by a cache of synthetic clips (labelled), is the synthetic world too
    cache = write_tiny_cache(tmp_path / "cache", labelled=("clip_b",))
    frame = tmp_path / "frame.png"
    videoio.write_image(frame, np.zeros((64, 64, 3), np.uint8))
    assert builtin_model_note(_cfg(reference=frame, pose=f"{cache}:clip_b")) is None
    assert builtin_model_note(_cfg(reference=frame, pose=f"{cache}:clip_a")) == BUILTIN_WORLD_NOTE
    assert builtin_model_note(_cfg(reference=frame)) == BUILTIN_WORLD_NOTE

"""`animlcm eval` on a tiny cache: metrics.json schema, the markdown table, the plot; cache pose sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from animlcm.config import resolve_config
from animlcm.errors import AnimlcmError
from animlcm.stages.evaluate import EvalConfig, report, run
from animlcm.stages.render import sources


def write_tiny_cache(root, names=("clip_a", "clip_b"), frames=4, size=128, fps=12.0, labelled=("clip_b",)):
    """A cache folder with every required dataset, written through the cache's own writer; the videos in
    ``labelled`` also get body-part labels (the person's upper half "head", the lower half "torso")."""
    from animlcm.cache import schema
    from animlcm.cache.writer import STATUS_OK, Manifest, ManifestEntry, VideoWriter
    from animlcm.stages.extract.skeleton import draw_skeletons, pad_layout
    from animlcm.synth.motion import dance_keypoints

    for k, name in enumerate(names):
        kp = pad_layout(dance_keypoints(k, frames, (size, size)))
        skel = draw_skeletons(kp, size, size)
        rgb = np.full((frames, size, size, 3), 40 + 30 * k, np.uint8)
        rgb[skel.max(-1) > 0] = 220  # a "person" where the skeleton is
        h = size // 8
        with VideoWriter(root, name) as w:
            w.write(schema.FRAMES, rgb)
            w.write(schema.KEYPOINTS, kp)
            w.write(schema.SKELETON, skel)
            w.write(schema.POSE_FOUND, np.ones(frames, bool))
            w.write(schema.FACE_CROP, np.zeros((frames, 256, 256, 3), np.uint8))
            w.write(schema.FACE_BOX, np.zeros((frames, 4), np.float32))
            w.write(schema.FACE_FOUND, np.zeros(frames, bool))
            w.write(
                schema.LATENTS,
                np.zeros((frames, 4, h, h), np.float16),
                {"vae_id": "x", "scaling_factor": 1.0},
            )
            w.write(schema.MOTION_MASK, np.zeros((frames, h, h), bool), {"delta": 0.2})
            w.write(schema.SOURCE_INDEX, np.arange(frames))
            if name in labelled:
                person = skel.max(-1) > 0
                labels = np.where(person, 2, 0).astype(np.uint8)
                labels[:, : size // 2][person[:, : size // 2]] = 1
                w.write(schema.PART_LABELS, labels, {"names": ["background", "head", "torso"]})
            w.set_attrs(fps=fps, num_frames=frames, height=size, width=size, name=name)
            w.commit()
        Manifest(root).update(
            ManifestEntry(name=name, status=STATUS_OK, source=f"{name}.mp4", frames=frames, fps=fps)
        )
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A tiny 'student' run folder whose meta names its method and its teacher (a folder beside it)."""
    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import tiny_network
    from animlcm.models.vae import build_tiny_vae

    d = tmp_path_factory.mktemp("runs")
    vae = build_tiny_vae()
    save_model_folder(
        tiny_network(seed=0, face_tokens=False, aux_head=False), vae, d / "teacher", kind="teacher"
    )
    meta = {"method": "dancelcm", "ablation": "no-face", "teacher": str(d / "teacher")}
    net = tiny_network(seed=1, face_tokens=False, aux_head=False)
    save_model_folder(net, vae, d / "student", kind="student", meta=meta)
    return d / "student"


def test_cache_pose_source_has_real_frames(cache):
    clip = sources.load_pose_source(f"{cache}:clip_b", 128, 128, max_frames=3)
    assert clip.kind == "cache" and clip.fps == 12.0 and clip.frames.shape == (3, 128, 128, 3)
    assert clip.skeleton.shape == (3, 128, 128, 3) and clip.keypoints.shape == (3, 134, 3)
    from animlcm.cache import CacheReader

    with CacheReader(cache).open("clip_b") as entry:
        np.testing.assert_array_equal(clip.labels, entry.part_labels(slice(0, 3)))
    assert clip.part_names == ("background", "head", "torso")
    assert sources.load_pose_source(f"{cache}:clip_a", 128, 128).labels is None  # not a synthetic clip
    # at another render size the labels follow the frames' geometry, nearest-neighbour (no new labels)
    small = sources.load_pose_source(f"{cache}:clip_b", 64, 64, max_frames=3)
    assert small.labels.shape == (3, 64, 64) and set(np.unique(small.labels)) == {0, 1, 2}
    person = small.labels > 0  # the labelled pixels are the bright "person" ones (blurred by the resize)
    assert small.frames[person].mean() > small.frames[~person].mean() + 60
    with pytest.raises(AnimlcmError, match="no video 'nope'.*choose one of: clip_a, clip_b$"):
        sources.load_pose_source(f"{cache}:nope", 128, 128)


def test_pose_source_names_why_a_cache_video_cannot_drive(tmp_path):
    """A video that failed extraction, or whose file is gone, says so (not "choose one of:" and a blank)."""
    import shutil

    from animlcm.cache import Manifest, ManifestEntry
    from animlcm.stages.render import sources

    cache = write_tiny_cache(tmp_path / "cache")
    Manifest(cache).update(ManifestEntry(name="broken", status="failed", source="b.mp4", error="no frames"))
    failed = "video 'broken' failed during extract: no frames; fix or re-encode"
    with pytest.raises(AnimlcmError, match=failed):
        sources.load_pose_source(f"{cache}:broken", 128, 128)
    (cache / "clip_a.h5").unlink()
    with pytest.raises(AnimlcmError, match="the file of video 'clip_a' is missing"):
        sources.load_pose_source(f"{cache}:clip_a", 128, 128)
    empty = tmp_path / "empty"
    shutil.copytree(cache, empty)
    (empty / "clip_b.h5").unlink()
    with pytest.raises(AnimlcmError, match="holds no complete video"):
        sources.load_pose_source(f"{empty}:nope", 128, 128)


def test_eval_sweep_writes_schema_table_and_plot(cache, student_dir, tmp_path):
    from test_eval_metrics import _stand_in_lpips
    from test_frechet import StandInClips, StandInFrames

    _stand_in_lpips(tmp_path / "lpips.safetensors")
    torch.jit.save(torch.jit.script(StandInFrames()), tmp_path / "fid.pt")
    torch.jit.save(torch.jit.script(StandInClips()), tmp_path / "fvd.pt")
    cfg = resolve_config(
        EvalConfig,
        "tiny",
        None,
        dict(model=student_dir, cache=cache, out=tmp_path / "eval", sweep=True, student_steps=(1, 2),
             teacher_steps=(2, 3), max_frames=3, progress=False, device="cpu",
             lpips_weights=tmp_path / "lpips.safetensors", fid_model=tmp_path / "fid.pt",
             fvd_model=tmp_path / "fvd.pt"),
    )  # fmt: skip
    result = run(cfg)
    data = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = data["rows"]
    assert [(r["method"], r["steps"]) for r in rows] == [
        ("dancelcm", 1),
        ("dancelcm", 2),
        ("teacher", 2),
        ("teacher", 3),
    ]
    for r in rows:
        assert set(report.ROW_KEYS) <= set(r)
        assert 0 <= r["l1"] <= 1 and r["psnr"] > 0 and -1 <= r["ssim"] <= 1 and r["lpips"] >= 0
        assert r["fid"] >= 0 and r["fvd"] >= 0
        assert r["seconds_per_frame"] > 0 and r["peak_memory_mb"] > 0
    assert rows[0]["ablation"] == "no-face" and rows[-1]["ablation"] == ""
    assert data["meta"]["videos"] == 2
    table = result.table.read_text()
    assert (
        table.count("\n") == 2 + 4
        and "| dancelcm | no-face | 1 |" in table
        and "| teacher | - | 3 |" in table
    )
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    # appearance: only clip_b has labels, so every row's value is clip_b's, recomputed here by hand
    for r in rows:
        assert r["psnr_person"] > 0 and r["psnr_background"] > 0
        assert set(r["part_colour_errors"]) == {"head", "torso"}
        assert r["part_colour_error"] == pytest.approx(np.mean(list(r["part_colour_errors"].values())))
    assert "| part colour err | PSNR person | PSNR bg |" in table
    from animlcm.stages.evaluate import metrics
    from animlcm.stages.render.model import load_render_model
    from animlcm.stages.render.pipeline import SamplerSettings, render_clip

    student = load_render_model(student_dir, preset="tiny", device=torch.device("cpu"), dtype=torch.float32)
    clip = sources.load_pose_source(f"{cache}:clip_b", 128, 128, 3)
    out = render_clip(student, clip.frames[0], clip.skeleton, SamplerSettings(steps=1), face=clip.face)
    by_hand = metrics.appearance_metrics(out.frames, clip.frames, clip.labels, clip.part_names)
    assert rows[0]["part_colour_error"] == pytest.approx(by_hand["part_colour_error"], abs=1e-3)
    assert rows[0]["psnr_person"] == pytest.approx(by_hand["psnr_person"], abs=1e-3)
    assert rows[0]["psnr_background"] == pytest.approx(by_hand["psnr_background"], abs=1e-3)


def test_eval_errors(cache, student_dir, tmp_path):
    with pytest.raises(AnimlcmError, match="needs --cache"):
        resolve_config(EvalConfig, "tiny", None, dict(model=student_dir))
    with pytest.raises(AnimlcmError, match="not an animlcm cache"):
        run(resolve_config(EvalConfig, "tiny", None, dict(model=student_dir, cache=tmp_path, progress=False)))
    (tmp_path / "lone").mkdir()
    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import tiny_network

    save_model_folder(
        tiny_network(face_tokens=False, aux_head=False), None, tmp_path / "lone" / "s", kind="student"
    )
    cfg = resolve_config(
        EvalConfig, "tiny", None,
        dict(model=tmp_path / "lone" / "s", cache=cache, sweep=True, max_frames=2, progress=False,
             device="cpu", out=tmp_path / "e"),
    )  # fmt: skip
    with pytest.raises(AnimlcmError, match="records no teacher"):
        run(cfg)


def test_vs_teacher_compares_rows_with_the_teachers_render_from_the_same_noise(cache, student_dir, tmp_path):
    from animlcm.stages.evaluate import metrics
    from animlcm.stages.render.model import load_render_model
    from animlcm.stages.render.pipeline import SamplerSettings, render_clip

    cfg = resolve_config(
        EvalConfig, "tiny", None,
        dict(model=student_dir, cache=cache, out=tmp_path / "eval", sweep=True, student_steps=(1,),
             teacher_steps=(2, 3), vs_teacher=2, max_frames=3, progress=False, device="cpu"),
    )  # fmt: skip
    result = run(cfg)
    rows = {(r.method, r.steps): r for r in result.rows}
    # the reference row is not compared with itself; every other row is
    assert "psnr_vs_teacher" not in rows["teacher", 2].extra
    assert rows["dancelcm", 1].extra["psnr_vs_teacher"] > 0
    # by hand: teacher at 3 steps against teacher at 2 steps, clip by clip, the same seed for both
    teacher = load_render_model(
        student_dir.parent / "teacher", preset="tiny", device=torch.device("cpu"), dtype=torch.float32
    )
    clips = [sources.load_pose_source(f"{cache}:{n}", 128, 128, 3) for n in ("clip_a", "clip_b")]
    psnr = []
    for clip in clips:
        two, three = (
            render_clip(teacher, clip.frames[0], clip.skeleton, SamplerSettings(steps=s, teacher=True)).frames
            for s in (2, 3)
        )
        psnr.append(metrics.frame_metrics(three, two)["psnr"])
    assert rows["teacher", 3].extra["psnr_vs_teacher"] == pytest.approx(float(np.mean(psnr)), abs=1e-4)
    assert "PSNR vs teacher" in result.table.read_text()
    assert json.loads(result.metrics_json.read_text())["meta"]["vs_teacher_steps"] == 2
    with pytest.raises(AnimlcmError, match="--vs-teacher 0: need at least 1"):
        resolve_config(EvalConfig, "tiny", None, dict(model=student_dir, cache=cache, vs_teacher=0))


def test_reference_cache_reuses_the_teachers_render_only_for_the_same_settings(
    cache, student_dir, tmp_path, monkeypatch
):
    import importlib

    run_module = importlib.import_module("animlcm.stages.evaluate.run")
    kept = tmp_path / "refs"
    base = dict(model=student_dir, cache=cache, sweep=True, student_steps=(1,), teacher_steps=(),
                vs_teacher=2, max_frames=3, progress=False, device="cpu", reference_cache=kept)  # fmt: skip
    first = run(resolve_config(EvalConfig, "tiny", None, dict(base, out=tmp_path / "a"))).rows
    assert len(list(kept.glob("*.npz"))) == 1
    calls = []
    real = run_module.render_clip

    def counting(model, *args, **kwargs):
        calls.append(args[2].teacher)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "render_clip", counting)
    again = run(resolve_config(EvalConfig, "tiny", None, dict(base, out=tmp_path / "b"))).rows
    # the second eval renders only the student (and its warm-up), never the teacher, and scores the same
    assert calls and not any(calls)
    assert again[0].extra["psnr_vs_teacher"] == first[0].extra["psnr_vs_teacher"]
    # another seed is another starting noise: a second file, not the first one's frames
    run(resolve_config(EvalConfig, "tiny", None, dict(base, out=tmp_path / "c", seed=7)))
    assert any(calls) and len(list(kept.glob("*.npz"))) == 2


def test_vs_teacher_guidance_defaults_to_what_the_student_imitates(cache):
    from animlcm.stages.evaluate.run import reference_cfg

    cfg = resolve_config(EvalConfig, "tiny", None, dict(cache=cache, vs_teacher=25, cfg=3.5))
    assert reference_cfg(cfg, {"guidance_w": 0.5}) == 1.5  # x0_c + 0.5 (x0_c - x0_u) is CFG 1.5
    assert reference_cfg(cfg, {"guidance_w": None}) == 3.5 and reference_cfg(cfg, {}) == 3.5
    given = resolve_config(EvalConfig, "tiny", None, dict(cache=cache, vs_teacher=25, vs_teacher_cfg=2.0))
    assert reference_cfg(given, {"guidance_w": 0.5}) == 2.0


def test_segmented_student_sweeps_from_its_own_minimum(cache, student_dir, tmp_path):
    """A K=2 student samples in 2 steps at least: the sweep leaves out 1 step (and says so in metrics.json);
    asked for 1 step alone, eval refuses with the minimum."""
    from animlcm.models.io import load_model_folder, save_model_folder

    loaded = load_model_folder(student_dir)
    meta = {**loaded.meta, "segments": 2, "num_ddim_steps": 50}
    folder = save_model_folder(loaded.net, loaded.vae, tmp_path / "k2", kind="student", meta=meta)
    base = dict(model=folder, cache=cache, max_videos=1, max_frames=2, progress=False, device="cpu")
    sweep = dict(base, out=tmp_path / "e", sweep=True, student_steps=(1, 2, 3), teacher_steps=())
    cfg = resolve_config(EvalConfig, "tiny", None, sweep)
    result = run(cfg)
    assert [(r.method, r.steps) for r in result.rows] == [("dancelcm", 2), ("dancelcm", 3)]
    assert result.skipped_steps == [1]
    data = json.loads(result.metrics_json.read_text())
    assert data["meta"]["student_steps_below_segments"] == [1]
    with pytest.raises(AnimlcmError, match=r"--steps 1: .* at least 2 steps"):
        run(resolve_config(EvalConfig, "tiny", None, dict(base, out=tmp_path / "one", steps=1)))
    assert not (tmp_path / "one").exists()

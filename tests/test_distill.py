"""`animlcm distill` end to end on a tiny cache: method presets and flags, the dataset, every method's two
stages, bit-exact resume with the real networks, the NaN guard, the CLI, and `train-teacher`."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from animlcm.cache import Manifest, ManifestEntry, VideoWriter, schema
from animlcm.errors import AnimlcmError
from animlcm.stages.distill.config import DistillConfig
from animlcm.stages.distill.methods import METHODS, method_switches

SIZE, FRAMES = 128, 6  # 16x16 latents


def write_tiny_cache(
    root: Path, videos: int = 2, frames: int = FRAMES, seed: int = 0, nan: bool = False
) -> Path:
    """A cache through the cache writer API: smooth random frames, latents, masks, faces."""
    rng = np.random.default_rng(seed)
    h = SIZE // 8
    for v in range(videos):
        name = f"clip{v}"
        base = rng.integers(0, 255, (1, SIZE, SIZE, 3))
        frames_u8 = np.clip(base + rng.integers(-20, 20, (frames, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        latents = rng.standard_normal((frames, 4, h, h)).astype(np.float16)
        if nan:
            latents[:] = np.nan
        with VideoWriter(root, name) as w:
            w.write(schema.FRAMES, frames_u8)
            w.write(schema.KEYPOINTS, rng.random((frames, 18, 3), dtype=np.float32))
            w.write(schema.SKELETON, rng.integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8))
            w.write(schema.POSE_FOUND, np.ones(frames, bool))
            w.write(schema.FACE_CROP, rng.integers(0, 255, (frames, 256, 256, 3), dtype=np.uint8))
            w.write(schema.FACE_BOX, np.zeros((frames, 4), np.float32))
            w.write(schema.FACE_FOUND, np.arange(frames) % 2 == 0)
            w.write(schema.LATENTS, latents, {"vae_id": "tiny", "scaling_factor": 0.18215})
            w.write(schema.MOTION_MASK, rng.random((frames, h, h)) > 0.7, {"delta": 0.2})
            w.write(schema.SOURCE_INDEX, np.arange(frames))
            w.set_attrs(fps=8.0, num_frames=frames, height=SIZE, width=SIZE, name=name)
            w.commit()
        Manifest(root).update(
            ManifestEntry(name=name, status="ok", source=f"{name}.mp4", frames=frames, fps=8.0)
        )
    return root


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    from animlcm.models.teacher import TeacherInitConfig, init_teacher

    return init_teacher(TeacherInitConfig(out=tmp_path_factory.mktemp("models") / "teacher"))


def _cfg(cache: Path, teacher: Path, out: Path, **kw) -> DistillConfig:
    base = DistillConfig.from_preset("tiny")
    kw.setdefault("max_steps", 2)
    return dataclasses.replace(base, cache=cache, teacher=teacher, out=out, progress=False, **kw)


# ---------------------------------------------------------------------------------------------- config
def test_method_presets_and_explicit_flags_win():
    cfg = DistillConfig(method="dancelcm", stage="spatial").with_method_defaults()
    assert (cfg.segments, cfg.aux_head, cfg.motion_weight, cfg.face_tokens) == (2, 0.1, 0.5, True)
    ablation = DistillConfig(method="dancelcm", segments=1, face_tokens=False).with_method_defaults()
    assert ablation.segments == 1 and ablation.face_tokens is False and ablation.aux_head == 0.1

    spatial = method_switches("cosec", "spatial")
    temporal = method_switches("cosec", "temporal")
    assert (spatial["eta"], spatial["cons"], spatial["w"], spatial["temporal_sdm"]) == (0.1, 0.02, 2.5, 0.0)
    assert (temporal["eta"], temporal["cons"], temporal["w"]) == (0.05, 0.0, 1.5)
    assert temporal["temporal_sdm"] > 0 and spatial["share_reference"] is True

    alcm = DistillConfig(method="animatelcm", stage="spatial", preset="tiny").with_method_defaults()
    assert alcm.train_modules == "lora" and alcm.lora_init_strategy and alcm.timestep_weighting == (0.5, 2.0)
    assert alcm.lora_rank == 4  # rank 64 capped for the 32-wide tiny layers
    assert DistillConfig(method="animatelcm", preset="sd15").with_method_defaults().lora_rank == 64
    assert (
        DistillConfig(method="animatelcm", stage="temporal").with_method_defaults().train_modules == "motion"
    )
    for m in METHODS:
        for s in ("spatial", "temporal"):
            DistillConfig(method=m, stage=s).with_method_defaults()  # every preset validates


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(method="fast"), "unknown method 'fast'"),
        (dict(stage="3d"), "unknown stage '3d'"),
        (dict(num_ddim_steps=33), "num_ddim_steps must divide 1000"),
        (dict(w_range=(3.0, 1.0)), "w_min <= w_max"),
        (dict(temporal_sdm=0.1), "temporal_sdm needs clips"),
        (dict(train_modules="lora", lora_rank=0), "needs --lora-rank"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(AnimlcmError, match=message):
        dataclasses.replace(DistillConfig(), **change).with_method_defaults()


def test_yaml_and_flags_layer_over_method(tmp_path):
    from animlcm.config import resolve_config

    yml = tmp_path / "run.yaml"
    yml.write_text("method: dancelcm\nsegments: 4\nw_range: [2, 6]\n")
    cfg = resolve_config(DistillConfig, "tiny", yml, {"aux_head": 0.0}).with_method_defaults()
    assert (
        cfg.segments == 4 and cfg.aux_head == 0.0 and cfg.motion_weight == 0.5 and cfg.w_range == (2.0, 6.0)
    )


# ---------------------------------------------------------------------------------------------- data
def test_dataset_samples(tiny_cache, tmp_path):
    from animlcm.stages.distill.data import DistillDataset

    ds = DistillDataset(
        tiny_cache, num_frames=3, stride=2, second_reference=True, other_reference=True, seed=3
    )
    item = ds[5]
    assert item["latents"].shape == (4, 3, 16, 16) and item["latents"].dtype == torch.float32
    assert item["pose"]["skeleton"].shape == (3, 3, SIZE, SIZE) and 0 <= item["pose"]["skeleton"].min()
    assert item["pose"]["skeleton"].max() <= 1 and item["motion_mask"].shape == (1, 3, 16, 16)
    assert item["ref_image"].shape == (3, SIZE, SIZE) and item["ref_latent"].shape == (4, 16, 16)
    assert item["ref_face"].shape == (3, 256, 256)
    idx = item["frame_index"].tolist()
    assert idx == [idx[0], idx[0] + 2, idx[0] + 4]  # stride 2: 1 + 2*2 <= 6 frames
    # 4 frames at stride 2 would need 7: the stride shrinks to what fits instead of failing
    wide = DistillDataset(tiny_cache, num_frames=4, stride=2)[0]["frame_index"].tolist()
    assert wide == [wide[0] + i for i in range(4)]
    # the reference latent is the cached latent of the reference frame, the clip's latents are the clip's
    from animlcm.cache import CacheReader

    with CacheReader(tiny_cache).open(f"clip{int(item['video_index'])}") as e:
        assert torch.equal(item["latents"][:, 1], torch.from_numpy(e.latents(idx[1]).astype(np.float32)))
        lat = e.latents(slice(None)).astype(np.float32)
    assert any(torch.equal(item["ref_latent"], torch.from_numpy(x)) for x in lat)
    assert any(torch.equal(item["ref2_latent"], torch.from_numpy(x)) for x in lat)
    assert not torch.equal(item["ref_latent"], item["ref2_latent"])  # two different frames, same video
    assert not any(torch.equal(item["other_latent"], torch.from_numpy(x)) for x in lat)  # another video
    # a pure function of (seed, index): what makes resume exact
    again = ds[5]
    assert all(torch.equal(item[k], again[k]) for k in ("latents", "ref_latent", "other_latent"))

    # preloaded into memory: the very same samples, with no HDF5 handle left open; without faces, no crops
    held = DistillDataset(
        tiny_cache, num_frames=3, stride=2, second_reference=True, other_reference=True, seed=3,
        faces=False, preload=True,
    )  # fmt: skip
    assert held.preloaded_bytes > 0 and all(e._h5 is None for e in held.entries)
    fast = held[5]
    assert "ref_face" not in fast and "ref_face_found" not in fast
    assert all(e._h5 is None for e in held.entries)  # served from memory, the file never reopened
    for k in ("latents", "ref_image", "ref_latent", "ref2_latent", "other_latent", "motion_mask"):
        assert torch.equal(item[k], fast[k]), k
    assert torch.equal(item["pose"]["skeleton"], fast["pose"]["skeleton"])

    # a cache file deleted after extract: refused with its name, never trained around in silence
    import shutil

    holed = tmp_path / "holed"
    shutil.copytree(tiny_cache, holed)
    victim = sorted(holed.glob("*.h5"))[0]
    victim.unlink()
    with pytest.raises(AnimlcmError, match=rf"1 extracted video file\(s\) are missing \({victim.name}\)"):
        DistillDataset(holed)

    one = write_tiny_cache(tmp_path / "one", videos=1)
    with pytest.raises(AnimlcmError, match="CoNS.*one video"):
        DistillDataset(one, other_reference=True)
    with pytest.raises(AnimlcmError, match="shorter than 9 frames"):
        DistillDataset(one, num_frames=9)


# ---------------------------------------------------------------------------------------------- methods
@pytest.mark.parametrize("method", METHODS)
def test_method_spatial_then_temporal(method, tiny_cache, tiny_teacher, tmp_path):
    from animlcm.models.io import load_model_folder, read_folder_meta
    from animlcm.stages.distill.trainer import run

    spatial = run(_cfg(tiny_cache, tiny_teacher, tmp_path / "s", method=method, stage="spatial"))
    temporal = run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "t", method=method, stage="temporal", num_frames=2,
             init=tmp_path / "s", max_steps=1)
    )  # fmt: skip
    for res in (spatial, temporal):
        assert all(math.isfinite(v) for v in res.last_terms.values()), res.last_terms
        log = [json.loads(x) for x in (res.out / "log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == res.steps
    expected_terms = {
        "lcm": {"cd"}, "dancelcm": {"cd", "aux"}, "cosec": {"cd", "eta", "cons"}, "animatelcm": {"cd"},
    }[method]  # fmt: skip
    assert set(spatial.last_terms) == expected_terms | {"loss"}
    if method == "cosec":
        assert set(temporal.last_terms) == {
            "loss",
            "cd",
            "eta",
            "temporal_sdm",
        }  # CoNS is 0 in the temporal stage
    loaded = load_model_folder(temporal.result)
    assert loaded.kind == "student" and loaded.meta["method"] == method and loaded.meta["stage"] == "temporal"
    assert loaded.meta["segments"] == (2 if method == "dancelcm" else 1)
    assert loaded.meta["ablation"] == ""  # the method's full configuration
    assert (loaded.net.face_projector is not None) == (method == "dancelcm")
    if method == "animatelcm":
        # the spatial student is a LoRA on the teacher; the temporal one is full weights (LoRA merged)
        spatial_student = load_model_folder(spatial.result)
        assert (Path(spatial.result) / "lora").is_dir()
        # linked relative to the student folder, with the absolute path as a fallback
        assert not Path(spatial_student.meta["base_teacher"]).is_absolute()
        assert (
            Path(spatial.result) / spatial_student.meta["base_teacher"]
        ).resolve() == tiny_teacher.resolve()
        assert spatial_student.meta["base_teacher_absolute"] == str(tiny_teacher.resolve())
    # a full student stores only what it changed: exactly the parts equal to the teacher's are linked
    teacher = load_model_folder(tiny_teacher)
    shared = read_folder_meta(temporal.result).get("shared", {})
    for part in ("reference_unet", "pose_guider", "image_encoder"):
        mine, theirs = getattr(loaded.net, part).state_dict(), getattr(teacher.net, part).state_dict()
        same = all(torch.equal(mine[k], theirs[k]) for k in mine)
        assert (part in shared) == same, (part, same)
        assert (
            not (Path(temporal.result) / part).exists() if same else (Path(temporal.result) / part).is_dir()
        )
    assert "vae" in shared and "image_encoder" in shared  # never trained


def test_merge_ablations_keeps_the_earlier_stage():
    from animlcm.stages.distill.methods import merge_ablations

    assert merge_ablations("cons=0", "") == "cons=0"
    assert merge_ablations("eta=0", "eta=0,temporal_sdm=0") == "eta=0,temporal_sdm=0"
    assert merge_ablations("", "") == ""


def test_temporal_student_inherits_a_spatial_ablation(tiny_cache, tiny_teacher, tmp_path):
    """CoNS is 0 in CoSeC's temporal preset, so only the spatial run shows the ablation: the final student
    must still say it (else the quality table labels a no-CoNS student as the full method)."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.trainer import run

    spatial = _cfg(tiny_cache, tiny_teacher, tmp_path / "s", method="cosec", stage="spatial", cons=0.0)
    run(dataclasses.replace(spatial, max_steps=1))
    temporal = run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "t", method="cosec", stage="temporal", num_frames=2,
             init=tmp_path / "s", max_steps=1, cons=0.0)
    )  # fmt: skip
    assert load_model_folder(temporal.result).meta["ablation"] == "cons=0"


def test_animatelcm_init_strategy_lora_reaches_target_by_ema(tiny_cache, tiny_teacher, tmp_path, monkeypatch):
    """Temporal stage: the target starts without the spatial LoRA and gains it through the EMA."""
    from animlcm.stages.distill import trainer

    run_s = trainer.run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "s", method="animatelcm", max_steps=1, lr=0.05)
    )
    seen = {}
    real_train = trainer.train

    def spy(job, cfg, **kw):
        lora_b = [n for n in job.target_names if "lora_B" in n][0]
        seen["target0"] = dict(job.target.named_parameters())[lora_b].detach().clone()
        seen["student"] = dict(job.student.named_parameters())[lora_b].detach().clone()
        out = real_train(job, cfg, **kw)
        seen["target1"] = dict(job.target.named_parameters())[lora_b].detach().clone()
        return out

    monkeypatch.setattr(trainer, "train", spy)
    trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "t", method="animatelcm", stage="temporal",
                     num_frames=2, init=run_s.out, max_steps=1, ema=0.5))  # fmt: skip
    assert seen["student"].abs().sum() > 0 and torch.count_nonzero(seen["target0"]) == 0
    torch.testing.assert_close(seen["target1"], 0.5 * seen["student"])  # one EMA step at mu = 0.5


def test_lora_distillation_shares_one_base_network_exactly(tiny_cache, tiny_teacher, tmp_path, monkeypatch):
    """LoRA-only (AnimateLCM spatial): teacher = the student's base with the adapter off, target = an EMA
    adapter on it; no copy of the network is made, and every number is the one separate copies give,
    including a run resumed in the other mode."""
    from safetensors.torch import load_file

    from animlcm.models.teacher import TeacherInitConfig, init_teacher
    from animlcm.stages.distill import trainer
    from animlcm.stages.distill.shared_base import AdapterView

    # a teacher with face tokens is not the student's base (the student drops them): separate copies there
    tiny_teacher = init_teacher(TeacherInitConfig(out=tmp_path / "teacher", face_tokens=False))
    seen = {}
    real_train = trainer.train

    def spy(job, cfg, **kw):
        seen[cfg.share_base] = job.target
        return real_train(job, cfg, **kw)

    monkeypatch.setattr(trainer, "train", spy)
    kw = dict(method="animatelcm", lr=0.05, ema=0.5, checkpoint_every=2)
    lean = trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "lean", max_steps=4, **kw))
    copies = trainer.run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "copies", max_steps=4, share_base=False, **kw)
    )
    assert isinstance(seen[True], AdapterView) and not isinstance(seen[False], AdapterView)
    assert lean.last_terms == copies.last_terms
    lora = "student/lora/pytorch_lora_weights.safetensors"
    a, b = load_file(str(tmp_path / "lean" / lora)), load_file(str(tmp_path / "copies" / lora))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(".ema." in k for k in a)  # the target's adapter is not part of the student
    for name in ("student", "target"):
        x = load_file(str(tmp_path / "lean" / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        y = load_file(str(tmp_path / "copies" / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    # half in one mode, resumed in the other: the same student
    trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "mixed", max_steps=2, **kw))
    trainer.run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "mixed", max_steps=4, resume=True, share_base=False, **kw)
    )
    c = load_file(str(tmp_path / "mixed" / lora))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_target_and_teacher_share_the_students_frozen_weights_exactly(
    tiny_cache, tiny_teacher, tmp_path, monkeypatch
):
    """AnimateLCM's temporal stage trains the motion modules alone. The student is built on the teacher's
    tensors and takes copies of what it trains; the EMA target copies those (and the LoRA its init strategy
    zeroes); the teacher keeps its own motion modules. Every other weight is one tensor for all three, and
    the numbers are those of full copies, bit for bit."""
    from safetensors.torch import load_file

    from animlcm.models.teacher import TeacherInitConfig, init_teacher
    from animlcm.stages.distill import ema, shared_base, trainer

    teacher = init_teacher(TeacherInitConfig(out=tmp_path / "teacher", face_tokens=False))
    kw = dict(method="animatelcm", stage="temporal", num_frames=2, lr=0.05, ema=0.5, max_steps=2)
    seen = {}
    real_share, real_make, real_train = shared_base.share_frozen_weights, ema.make_target, trainer.train
    real_start = trainer.load_student_start

    def start(cfg, net, *a, **k):
        seen["teacher"] = net
        return real_start(cfg, net, *a, **k)

    def spy(job, cfg, **k):
        mine = {id(p) for p in job.student.parameters()}
        trained = {id(p) for p in job.student.parameters() if p.requires_grad}
        teachers = list(seen["teacher"].parameters())
        seen["teacher shares"] = sum(p.numel() for p in teachers if id(p) in mine) / sum(
            p.numel() for p in teachers
        )
        seen["teacher trains"] = any(id(p) in trained for p in teachers)
        seen["target copies"] = sum(p.numel() for p in job.target.parameters() if id(p) not in mine)
        seen["followed"] = sum(dict(job.target.named_parameters())[n].numel() for n in job.target_names)
        return real_train(job, cfg, **k)

    monkeypatch.setattr(trainer, "load_student_start", start)
    monkeypatch.setattr(trainer, "train", spy)
    lean = trainer.run(_cfg(tiny_cache, teacher, tmp_path / "lean", **kw))
    assert seen["teacher shares"] > 0.5 and not seen["teacher trains"]  # all but the motion modules
    assert seen["target copies"] == seen["followed"]  # what the EMA follows, nothing else

    # the same run with full copies: the teacher takes back copies of all it shared, the target of all
    monkeypatch.setattr(shared_base, "share_frozen_weights", lambda t, s, **k: real_share(t, s, at_least=2.0))
    every = lambda s, follows=None: real_make(s, [n for n, _ in s.named_parameters()])  # noqa: E731
    monkeypatch.setattr(ema, "make_target", every)
    copies = trainer.run(_cfg(tiny_cache, teacher, tmp_path / "copies", **kw))
    assert seen["teacher shares"] == 0 and seen["target copies"] > 2 * seen["followed"]
    assert lean.last_terms == copies.last_terms
    for name in ("student", "target"):
        x = load_file(str(tmp_path / "lean" / "checkpoints" / "step-0000002" / f"{name}.safetensors"))
        y = load_file(str(tmp_path / "copies" / "checkpoints" / "step-0000002" / f"{name}.safetensors"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_distill_resume_is_bit_exact(tiny_cache, tiny_teacher, tmp_path):
    """The must-pass test: 6 steps straight == 3 steps + --resume + 3 steps (student and EMA target)."""
    from safetensors.torch import load_file

    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.trainer import run

    kw = dict(method="dancelcm", face_tokens=False, lr=1e-3, checkpoint_every=3, w_range=(1.0, 3.0))
    run(_cfg(tiny_cache, tiny_teacher, tmp_path / "a", max_steps=6, **kw))
    run(_cfg(tiny_cache, tiny_teacher, tmp_path / "b", max_steps=3, **kw))
    torch.manual_seed(999)  # a new process starts from another global RNG state
    run(_cfg(tiny_cache, tiny_teacher, tmp_path / "b", max_steps=6, resume=True, **kw))
    for name in ("student.safetensors", "target.safetensors"):
        a = load_file(str(tmp_path / "a/checkpoints/step-0000006" / name))
        b = load_file(str(tmp_path / "b/checkpoints/step-0000006" / name))
        assert a.keys() == b.keys() and len(a) > 10
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a = load_model_folder(tmp_path / "a/student", vae=False).net.state_dict()
    b = load_model_folder(tmp_path / "b/student", vae=False).net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s3 = load_file(str(tmp_path / "b/checkpoints/step-0000003/student.safetensors"))
    assert any(
        not torch.equal(s3[k], a_k)
        for k, a_k in load_file(str(tmp_path / "a/checkpoints/step-0000006/student.safetensors")).items()
    )  # fmt: skip  (it trained)
    la = (tmp_path / "a/log.jsonl").read_text().splitlines()
    lb = (tmp_path / "b/log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in la] == [json.loads(x)["loss"] for x in lb]
    # resuming with different method settings is refused, naming the setting
    with pytest.raises(AnimlcmError, match="segments: 2 -> 4"):
        run(_cfg(tiny_cache, tiny_teacher, tmp_path / "b", max_steps=7, resume=True, **{**kw, "segments": 4}))


def test_nan_guard_names_step_and_term(tiny_teacher, tmp_path):
    from animlcm.stages.distill.trainer import run

    bad = write_tiny_cache(tmp_path / "nan", nan=True)
    with pytest.raises(AnimlcmError, match=r"step 1: loss term 'cd' is nan"):
        run(_cfg(bad, tiny_teacher, tmp_path / "r", method="lcm"))


def test_existing_run_needs_resume(tiny_cache, tiny_teacher, tmp_path):
    from animlcm.stages.distill.trainer import run

    run(_cfg(tiny_cache, tiny_teacher, tmp_path / "r", method="lcm", max_steps=1, teacher_free=True))
    with pytest.raises(AnimlcmError, match="already holds checkpoints; pass --resume"):
        run(_cfg(tiny_cache, tiny_teacher, tmp_path / "r", method="lcm", max_steps=1))
    with pytest.raises(AnimlcmError, match="nothing to resume"):
        run(_cfg(tiny_cache, tiny_teacher, tmp_path / "new", method="lcm", resume=True))


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_distill_and_train_teacher(tiny_cache, tiny_teacher, tmp_path):
    from typer.testing import CliRunner

    from animlcm.cli import app
    from animlcm.models.io import load_model_folder

    runner = CliRunner()
    res = runner.invoke(app, [
        "train-teacher", "--cache", str(tiny_cache), "--out", str(tmp_path / "tt"), "--max-steps", "2",
        "--batch-size", "1", "--cond-drop", "0.5", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    teacher = tmp_path / "tt" / "teacher"
    assert load_model_folder(teacher).kind == "teacher"
    res = runner.invoke(app, [
        "train-teacher", "--cache", str(tiny_cache), "--out", str(tmp_path / "tt2"), "--init", str(teacher),
        "--stage", "temporal", "--frames", "2", "--max-steps", "1", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    temporal_meta = json.loads((tmp_path / "tt2" / "teacher" / "animlcm.json").read_text())["meta"]
    assert temporal_meta["trained_steps"] == {"spatial": 2, "temporal": 1}
    assert temporal_meta["random_weights"] is False
    log = [json.loads(x) for x in (tmp_path / "tt" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["mse"]) for r in log)

    res = runner.invoke(app, [
        "distill", "--cache", str(tiny_cache), "--teacher", str(teacher), "--out", str(tmp_path / "d"),
        "--method", "dancelcm", "--stage", "spatial", "--max-steps", "1", "--segments", "4",
        "--no-face-tokens",
        "--timestep-weighting", "0.5,2", "--w-range", "1,3", "--loss", "l2", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = (tmp_path / "d" / "config.yaml").read_text()
    assert "segments: 4" in saved and "face_tokens: false" in saved and "loss: l2" in saved
    assert "aux_head: 0.1" in saved  # the method's value where no flag was given
    meta = json.loads((tmp_path / "d" / "student" / "animlcm.json").read_text())["meta"]
    assert meta["ablation"] == "loss=l2,segments=4,face_tokens=off,timestep_weighting=0.5,2"
    assert meta["trained_steps"] == 1
    assert meta["guidance_w"] is None  # trained over --w-range 1,3: no single guidance to compare with
    assert meta["recommended_timesteps"] == [999, 759, 499, 259] and meta["segment_edges"] == [
        0,
        259,
        499,
        759,
        999,
    ]
    res = runner.invoke(app, ["distill", "--cache", str(tiny_cache), "--teacher", str(teacher), "--out",
                              str(tmp_path / "e"), "--timestep-weighting", "half"])  # fmt: skip
    assert res.exit_code != 0 and "--timestep-weighting 'half'" in str(res.exception)


def test_cli_adjacent_and_lora_targets(tiny_cache, tiny_teacher, tmp_path, monkeypatch):
    """--no-adjacent reaches the timestep pairs (DanceLCM eq. 4 literally); --lora-targets attention puts the
    LoRA on attention only; both are recorded in config.yaml and in the student's ablation label."""
    from safetensors import safe_open
    from typer.testing import CliRunner

    from animlcm.cli import app
    from animlcm.models.lora import LORA_FILE
    from animlcm.stages.distill import step

    assert DistillConfig(method="lcm").with_method_defaults().adjacent is True
    assert DistillConfig(method="animatelcm").with_method_defaults().lora_targets == "all"
    seen = []
    real = step.sample_timestep_pairs
    monkeypatch.setattr(
        step, "sample_timestep_pairs", lambda *a, **k: seen.append(k["adjacent"]) or real(*a, **k)
    )
    res = CliRunner().invoke(app, [
        "distill", "--cache", str(tiny_cache), "--teacher", str(tiny_teacher), "--out", str(tmp_path / "r"),
        "--method", "animatelcm", "--max-steps", "1", "--no-adjacent", "--lora-targets", "attention",
        "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen == [False]
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "adjacent: false" in saved and "lora_targets: attention" in saved
    meta = json.loads((tmp_path / "r" / "student" / "animlcm.json").read_text())["meta"]
    assert meta["ablation"] == "adjacent=off,lora_targets=attention"
    with safe_open(str(tmp_path / "r" / "student" / "lora" / LORA_FILE), framework="pt") as f:
        names = list(f.keys())
    assert names and all(any(f".{a}." in n for a in ("to_q", "to_k", "to_v", "to_out")) for n in names)
    res = CliRunner().invoke(app, ["distill", "--cache", str(tiny_cache), "--teacher", str(tiny_teacher),
                                   "--out", str(tmp_path / "x"), "--lora-targets", "convs"])  # fmt: skip
    assert res.exit_code != 0 and "lora_targets 'convs'" in str(res.exception)


def test_teacher_step_drops_condition(tiny_cache, tiny_teacher):
    """The CFG condition drop: dropped steps see the unconditional branch (and still give finite losses)."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.data import DistillDataset
    from animlcm.stages.distill.teacher_training import TeacherTrainConfig, teacher_step

    loaded = load_model_folder(tiny_teacher)
    batch = torch.utils.data.default_collate([DistillDataset(tiny_cache)[0]])
    drops = []
    for p, seeds in ((0.0, range(3)), (0.99, range(3))):
        cfg = TeacherTrainConfig(cond_drop=p, face_tokens=False)
        for s in seeds:
            loss, terms = teacher_step(batch, loaded.net, loaded.net, loaded.schedule, cfg,
                                       torch.Generator().manual_seed(s), loaded.vae)  # fmt: skip
            assert torch.isfinite(loss)
            drops.append(float(terms["dropped"]))
    assert drops == [0.0] * 3 + [1.0] * 3


@pytest.mark.parametrize("method", ["lcm", "cosec"])
def test_teacher_sees_in_distill_what_it_sees_in_render(method, tiny_cache, tiny_teacher):
    """A teacher with face tokens, a student without (lcm; cosec also shares the reference features): the
    teacher's predictions inside a distill step (conditional and unconditional branch) equal its predictions
    in render's teacher sampling path for the same reference, face crop, x_t, t and poses."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.data import DistillDataset
    from animlcm.stages.distill.ema import make_target
    from animlcm.stages.distill.step import DistillModels, distill_step
    from animlcm.stages.distill.trainer import with_heads
    from animlcm.stages.render import pipeline

    loaded = load_model_folder(tiny_teacher)
    teacher, vae = loaded.net.eval(), loaded.vae.eval()
    with torch.no_grad():  # as trained: face tokens that matter (a fresh projector starts at zero)
        teacher.face_projector.norm.weight.fill_(1.0)
    student = with_heads(teacher, face_tokens=False, aux_head=False)
    models = DistillModels(student, make_target(student), teacher, loaded.schedule, vae)
    cfg = DistillConfig(method=method, stage="temporal", num_frames=2, w=1.0, eta=0.0, cons=0.0,
                        temporal_sdm=0.0).with_method_defaults()  # fmt: skip
    ds = DistillDataset(tiny_cache, num_frames=2, faces=True)
    item = next(ds[i] for i in range(len(ds)) if bool(ds[i]["ref_face_found"]))
    batch = torch.utils.data.default_collate([item])
    u8 = lambda x: (x * 255).round().to(torch.uint8).permute(*range(1, x.ndim), 0).numpy()  # noqa: E731
    reference, face, skeleton = u8(item["ref_image"]), u8(item["ref_face"]), u8(item["pose"]["skeleton"])
    batch["ref_latent"] = pipeline.encode_latent(vae, batch["ref_image"])  # render encodes the image itself

    calls = []
    hook = teacher.register_forward_hook(lambda m, a, k, out: calls.append((a, out)), with_kwargs=True)
    try:
        distill_step(batch, student, models, cfg, torch.Generator().manual_seed(0))
        in_distill, calls[:] = list(calls), []
        model = pipeline.RenderModel(teacher, vae, loaded.schedule, "teacher")
        settings = pipeline.SamplerSettings(steps=1, teacher=True, cfg=2.0)
        pipeline.render_clip(model, reference, skeleton, settings, face=face)
        render_conds = [a[3] for a, _ in calls]
    finally:
        hook.remove()
    assert len(in_distill) == 2 and [c.dropped for c in render_conds] == [False, True]
    for (x, t, pose, cond), out in in_distill:
        rendered = render_conds[int(cond.dropped)]
        with torch.no_grad():
            torch.testing.assert_close(teacher(x, t, pose, rendered), out, rtol=0, atol=1e-6)
    # the face crop is part of it: without it (the old behaviour for such students) the prediction differs
    (x, t, pose, cond), out = in_distill[0]
    no_face = pipeline.encode_reference(model, reference, None)
    with torch.no_grad():
        assert (teacher(x, t, pose, no_face) - out).abs().max() > 1e-4


def test_runs_read_face_crops_for_a_face_token_teacher(tiny_cache, tiny_teacher, tmp_path, monkeypatch):
    """A student without face tokens of a teacher with them: the run reads the crops and encodes them for
    the teacher (not when teacher-free: then nothing has face tokens and no crop need be read)."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill import data, step
    from animlcm.stages.distill.trainer import run, with_heads

    teacher = load_model_folder(tiny_teacher, vae=False).net
    faceless = with_heads(teacher, face_tokens=False, aux_head=False)
    assert step.needs_faces(faceless, teacher) and not step.needs_faces(faceless, None)
    assert step.needs_faces(with_heads(faceless, face_tokens=True, aux_head=False), faceless)

    seen, flags = [], []
    real_encode, real_init = step.encode_faces, data.DistillDataset.__init__
    monkeypatch.setattr(step, "encode_faces", lambda vae, x: seen.append(x.shape[0]) or real_encode(vae, x))

    def init(self, *a, **k):
        flags.append(k["faces"])
        real_init(self, *a, **k)

    monkeypatch.setattr(data.DistillDataset, "__init__", init)
    run(_cfg(tiny_cache, tiny_teacher, tmp_path / "r", method="lcm", max_steps=1))
    assert flags == [True] and len(seen) == 1


@pytest.mark.parametrize("share, faces, calls", [(True, False, 1), (False, False, 3), (True, True, 2)])
def test_reference_features_computed_once_and_shared(share, faces, calls, tiny_cache, tiny_teacher):
    """ReferenceLCM: one reference-net pass per step serves teacher, target and the student's 3 references;
    with face tokens the teacher makes its own (the student's trained face tokens are not the teacher's)."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.data import DistillDataset
    from animlcm.stages.distill.ema import make_target
    from animlcm.stages.distill.step import DistillModels, distill_step
    from animlcm.stages.distill.trainer import with_heads

    cfg = DistillConfig(method="cosec", face_tokens=faces, share_reference=share).with_method_defaults()
    loaded = load_model_folder(tiny_teacher)
    teacher = with_heads(loaded.net, faces, False)
    student = with_heads(teacher, faces, False)
    models = DistillModels(student, make_target(student), teacher, loaded.schedule, loaded.vae)
    count = []
    for net in {id(m.reference_unet): m for m in (student, models.target, teacher)}.values():
        net.reference_unet.register_forward_hook(lambda m, a, o: count.append(a[0].shape[0]))
    ds = DistillDataset(tiny_cache, second_reference=True, other_reference=True)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    loss, terms = distill_step(batch, student, models, cfg, torch.Generator().manual_seed(0))
    assert len(count) == calls and count[0] == 2 * 3  # the student's pass holds ref, ref2 and other
    assert set(terms) == {"cd", "eta", "cons"} and torch.isfinite(loss)
    loss.backward()
    assert student.unet.conv_in.weight.grad is not None  # gradients reach the student


def test_reference_net_runs_once_where_target_and_teacher_would_match_it_exactly(tiny_cache, tiny_teacher):
    """lcm (no ReferenceLCM sharing, no face tokens): when target and teacher hold the student's frozen
    reference net and image encoder, one reference pass serves all three and the step's numbers are
    bit-identical to computing each; a face projector or different weights switch it off."""
    import copy

    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.data import DistillDataset
    from animlcm.stages.distill.ema import make_target
    from animlcm.stages.distill.step import DistillModels, distill_step, same_conditioning
    from animlcm.stages.distill.trainer import _trainable, with_heads

    cfg = DistillConfig(method="lcm", w=1.0).with_method_defaults()
    loaded = load_model_folder(tiny_teacher, vae=False)
    teacher = with_heads(loaded.net, False, False).requires_grad_(False)
    student = with_heads(teacher, False, False)
    _trainable(student, cfg)
    target = make_target(student)
    assert same_conditioning(student, target) and same_conditioning(student, teacher)
    ds = DistillDataset(tiny_cache)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    results = []
    for reuse in (False, True):
        models = DistillModels(student, target, teacher, loaded.schedule, None, reuse, reuse)
        count: list[int] = []
        nets = {
            id(m.reference_unet): m.reference_unet for m in (student, target, teacher)
        }  # target may share
        hooks = [
            net.register_forward_hook(lambda m, a, o, count=count: count.append(1)) for net in nets.values()
        ]
        try:
            loss, terms = distill_step(batch, student, models, cfg, torch.Generator().manual_seed(3))
        finally:
            for h in hooks:
                h.remove()
        results.append((len(count), float(loss), {k: float(v) for k, v in terms.items()}))
    assert results[0][0] == 3 and results[1][0] == 1
    assert results[0][1:] == results[1][1:]  # exactly the same step
    # what must switch it off: a face projector (it trains), other weights, another dtype
    assert not same_conditioning(with_heads(student, True, False), target)
    moved = copy.deepcopy(teacher)
    with torch.no_grad():
        next(moved.reference_unet.parameters()).add_(1e-3)
    assert not same_conditioning(student, moved)
    assert not same_conditioning(student, copy.deepcopy(teacher).to(torch.float64))


def test_a_student_folder_is_not_taken_for_a_teacher(tiny_cache, tmp_path):
    from animlcm.stages.distill.trainer import check_inputs
    from animlcm.stages.render.precheck import BUILTIN_STUDENT

    with pytest.raises(AnimlcmError, match="a student folder, not a teacher") as err:
        check_inputs(tmp_path / "run", tiny_cache, BUILTIN_STUDENT)
    assert "its teacher" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_lora_result_names_the_folder_that_holds_its_base(tiny_cache, tiny_teacher, tmp_path, monkeypatch):
    """LoRA-only results are saved against the folder whose weights are their base: the teacher, a full
    --init student, or (a LoRA --init) its own base; a spatial LoRA merged for --lora-layers all leaves no
    such folder, so that result is saved in full. Each loads back to the network that trained."""
    from animlcm.models.io import is_lora_folder, load_model_folder
    from animlcm.stages.distill import trainer

    trained = {}
    real = trainer.save_student

    def keep(student, *args, **kw):
        import copy

        from animlcm.models.lora import has_lora, merge_lora

        plain = copy.deepcopy(student)
        if has_lora(plain):
            merge_lora(plain)
        trained[args[1]] = plain.state_dict()
        return real(student, *args, **kw)

    monkeypatch.setattr(trainer, "save_student", keep)

    def check(run, lora: bool, base: Path | None = None):
        folder = Path(run.result)
        assert is_lora_folder(folder) == lora
        if base is not None:
            meta = load_model_folder(folder).meta
            assert (folder / meta["base_teacher"]).resolve() == (base / "student").resolve()
        net = load_model_folder(folder).net
        if lora:
            from animlcm.models.lora import merge_lora

            merge_lora(net)
        want = next(v for k, v in trained.items() if Path(k).parent == Path(run.out))
        mine = net.state_dict()
        assert mine.keys() == want.keys() and all(torch.allclose(mine[k], want[k], atol=1e-5) for k in mine)

    kw = dict(max_steps=1, lr=0.05)
    full = trainer.run(
        _cfg(tiny_cache, tiny_teacher, tmp_path / "full", method="lcm", face_tokens=False, **kw)
    )
    on_full = trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "on_full", method="lcm",
                               face_tokens=False, init=full.out, lora_rank=4, train_modules="lora",
                               **kw))  # fmt: skip
    check(on_full, lora=True, base=full.out)
    spatial = trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "s", method="animatelcm", **kw))
    motion = trainer.run(_cfg(tiny_cache, tiny_teacher, tmp_path / "m", method="animatelcm", stage="temporal",
                              num_frames=2, init=spatial.out, lora_rank=4, train_modules="lora",
                              lora_layers="all", **kw))  # fmt: skip
    check(motion, lora=False)


def test_batched_cfg_gives_the_two_call_loss(tiny_cache, tiny_teacher, tmp_path):
    """--batched-cfg: the teacher's two CFG branches in one call; the same loss terms as two calls, up to
    float rounding (the run is otherwise identical: same samples, noise and w)."""
    from animlcm.stages.distill.trainer import run

    kw = dict(method="dancelcm", w=2.0, max_steps=2, lr=1e-3)
    two = run(_cfg(tiny_cache, tiny_teacher, tmp_path / "two", **kw))
    one = run(_cfg(tiny_cache, tiny_teacher, tmp_path / "one", batched_cfg=True, **kw))
    assert one.last_terms.keys() == two.last_terms.keys()
    for k, v in two.last_terms.items():
        assert one.last_terms[k] == pytest.approx(v, rel=1e-4, abs=1e-7), k

"""`animlcm teacher import` and `animlcm export` end to end, at reduced width (see test_interop.py).

Base folder (unet/config.json + vae/), CLIP image encoder folder and the teacher's files are written to disk;
the imported teacher folder must hold every value, record the teachers' schedule, and export back to the
very same files; a LoRA student exports with its adapter merged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from animlcm.errors import AnimlcmError
from animlcm.interop.files import read_state_dict, write_state_dict
from test_interop import (
    REDUCED_CLIP,
    REDUCED_UNET2D,
    find_layouts,
    make_sources,
    oracle_target,
    reduced_network,
)


@pytest.fixture(scope="module")
def layout_dir(shared_dir: Path) -> Path:
    return find_layouts(shared_dir)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from animlcm.cli import export, teacher, teacher_import

    root = typer.Typer(pretty_exceptions_enable=False)
    teacher.register(root)
    teacher_import.register(root)
    export.register(root)
    return root


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """An SD1.5-structured base folder at reduced width, and a CLIP image encoder folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from animlcm.models.vae import build_tiny_vae

    root = tmp_path_factory.mktemp("parts")
    (root / "sd15" / "unet").mkdir(parents=True)
    (root / "sd15" / "unet" / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DConditionModel", **REDUCED_UNET2D})
    )
    build_tiny_vae().save_pretrained(root / "sd15" / "vae")
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**REDUCED_CLIP)).save_pretrained(root / "clip")
    return {"base": root / "sd15", "clip": root / "clip"}


def _run(app, args: list[str]):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, AnimlcmError):
        raise result.exception
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module", params=[("moore-aa", "pth"), ("champ", "safetensors")])
def imported(request, app, parts, layout_dir, tmp_path_factory):
    fmt_name, ext = request.param
    root = tmp_path_factory.mktemp(fmt_name)
    sources = make_sources(fmt_name, layout_dir, reduced_network(fmt_name, layout_dir, seed=0).state_dict())
    weights = root / "weights"
    weights.mkdir()
    for stem, tensors in sources.items():
        write_state_dict(tensors, weights / f"{stem}.{ext}")
    # champ: --format left to auto (detected from the guidance_encoder_* files)
    fmt_args = ["--format", fmt_name] if fmt_name == "moore-aa" else []
    args = ["teacher", "import", *fmt_args, "--weights", weights, "--base", parts["base"],
            "--image-encoder", parts["clip"], "--out", root / "teacher", "--preset", "tiny"]  # fmt: skip
    out = _run(app, args)
    return fmt_name, ext, sources, root, out


def test_import_writes_a_teacher_folder_with_every_value(imported):
    from animlcm.models.io import load_model_folder

    fmt_name, _, sources, root, out = imported
    loaded = load_model_folder(root / "teacher")
    state = loaded.net.state_dict()
    for stem, tensors in sources.items():
        for key, value in tensors.items():
            assert torch.equal(state[oracle_target(stem, key)], value), f"{stem}:{key}"
    s = loaded.schedule
    assert (s.prediction_type, s.zero_snr, s.timestep_spacing, s.beta_schedule) == (
        "v_prediction", True, "trailing", "linear"
    )  # fmt: skip
    assert loaded.kind == "teacher" and loaded.meta["source"]["format"] == fmt_name
    assert loaded.vae is not None and loaded.net.face_projector is None
    # the import prints the `teacher info` table
    assert "reference_unet" in out and "motion modules" in out and "v_prediction" in out


def test_export_of_the_imported_teacher_gives_the_files_back(imported, app):
    fmt_name, ext, sources, root, _ = imported
    fmt_args = ["--format", fmt_name] if fmt_name == "moore-aa" else []  # champ: auto, the import's format
    _run(app, ["export", root / "teacher", *fmt_args, "--out", root / "export", "--file-format", ext])
    for stem, tensors in sources.items():
        back = read_state_dict(root / "export" / f"{stem}.{ext}")
        assert back.keys() == tensors.keys()
        assert all(torch.equal(back[k], v) for k, v in tensors.items()), stem
    readme = (root / "export" / "README.md").read_text()
    assert "[999, 759, 499, 259]" in readme and "no classifier-free guidance" in readme

    from diffusers import LCMScheduler

    sched = LCMScheduler.from_pretrained(root / "export")
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]
    assert sched.config.prediction_type == "v_prediction" and sched.config.rescale_betas_zero_snr


def test_lora_student_exports_merged(imported, app):
    from animlcm.interop import layouts
    from animlcm.interop.layouts import FORMATS
    from animlcm.interop.mapping import export_tensors
    from animlcm.models.io import load_model_folder, save_model_folder
    from animlcm.models.lora import add_lora, merge_lora

    fmt_name, ext, sources, root, _ = imported
    if fmt_name != "moore-aa":
        pytest.skip("merging does not depend on the format: checked once, on moore-aa")
    loaded = load_model_folder(root / "teacher")
    net = loaded.net
    add_lora(net, rank=4)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    meta = {"base_teacher": str(root / "teacher")}
    save_model_folder(net, None, root / "run" / "student", "student", loaded.schedule, meta, lora=True)
    merge_lora(net)
    expected = export_tensors(FORMATS[fmt_name], net.state_dict())

    # a distill run folder stands for its student/
    _run(app, ["export", root / "run", "--format", fmt_name, "--out", root / "sx", "--file-format", "pth"])
    changed = 0
    for stem, tensors in expected.items():
        back = read_state_dict(root / "sx" / f"{stem}.pth")
        assert back.keys() == tensors.keys()
        for k, v in tensors.items():
            assert torch.allclose(back[k], v, atol=1e-6), f"{stem}:{k}"
            changed += not torch.equal(back[k], sources[stem][k])
    # the adapter sits on the spatial layers (LCM-LoRA's set): those (and only those) differ from the teacher
    assert changed > 0
    for k, v in read_state_dict(root / "sx" / "motion_module.pth").items():
        assert torch.equal(v, sources["motion_module"][k]) or not layouts.is_motion_key(k)


def test_a_student_linking_its_teachers_parts_exports_whole(imported, app):
    """A full student that links its frozen parts to the imported teacher (distill's default) exports every
    file, the linked parts read from the teacher."""
    from animlcm.interop.layouts import FORMATS
    from animlcm.interop.mapping import export_tensors
    from animlcm.models.io import load_model_folder, read_folder_meta, save_model_folder

    fmt_name, ext, sources, root, _ = imported
    if fmt_name != "moore-aa":
        pytest.skip("linking does not depend on the format: checked once, on moore-aa")
    loaded = load_model_folder(root / "teacher")
    net = loaded.net
    with torch.no_grad():
        for p in net.unet.parameters():
            p.add_(0.01)
    folder = save_model_folder(
        net, None, root / "linked" / "student", "student", loaded.schedule, {"segments": 1},
        links={"teacher": root / "teacher"}, share_from=root / "teacher",
    )  # fmt: skip
    assert {"reference_unet", "pose_guider"} <= set(read_folder_meta(folder)["shared"])
    _run(app, ["export", folder, "--format", fmt_name, "--out", root / "lx", "--file-format", "pth"])
    for stem, tensors in export_tensors(FORMATS[fmt_name], net.state_dict()).items():
        back = read_state_dict(root / "lx" / f"{stem}.pth")
        assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items()), (
            stem
        )


def test_import_refuses_to_overwrite_and_reports_bad_parts(imported, app, parts, monkeypatch):
    import huggingface_hub.constants

    fmt_name, _, _, root, _ = imported
    # no internet here: fail at once instead of after huggingface_hub's retries (as HF_HUB_OFFLINE=1 does)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def args(base, out):
        return ["teacher", "import", "--format", fmt_name, "--weights", root / "weights", "--base", base,
                "--image-encoder", parts["clip"], "--preset", "tiny", "--out", out]  # fmt: skip

    with pytest.raises(AnimlcmError, match="already exists"):
        _run(app, args(parts["base"], root / "teacher"))
    with pytest.raises(AnimlcmError, match="no unet/config.json"):
        _run(app, args(parts["clip"], root / "t2"))
    with pytest.raises(AnimlcmError, match="could not be loaded.*huggingface-cli download"):
        _run(app, args("no-such-org/no-such-model", root / "t3"))


def test_exported_scheduler_samples_a_student_exactly_as_render(app, tmp_path):
    """A K=1 student distilled on a 20-step grid: diffusers' LCMScheduler from the export's
    scheduler_config.json, stepping the student's own outputs with the same starting noise and fresh noise,
    gives render's frames; a K=2 student is refused with the fix."""
    import numpy as np
    from diffusers import LCMScheduler

    from animlcm.models.io import save_model_folder
    from animlcm.models.presets import tiny_network
    from animlcm.models.vae import build_tiny_vae, decode_latents
    from animlcm.stages.render import pipeline
    from animlcm.stages.render.model import load_render_model

    net, vae = tiny_network(seed=2, face_tokens=False, aux_head=False), build_tiny_vae()
    with torch.no_grad():  # a pose guider with an effect (its output layer starts at zero)
        for p in net.pose_guider.parameters():
            p.normal_(0, 0.05)
    meta = {"method": "lcm", "segments": 1, "num_ddim_steps": 20}
    student = save_model_folder(net, vae, tmp_path / "run" / "student", kind="student", meta=meta)
    _run(app, ["export", tmp_path / "run", "--format", "moore-aa", "--out", tmp_path / "ex", "--steps", "3"])
    readme = (tmp_path / "ex" / "README.md").read_text()
    assert "`[999, 699, 349]` (3 of the 20-step skipping grid" in readme

    model = load_render_model(student, preset="tiny", device=torch.device("cpu"), dtype=torch.float32)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    skeleton = rng.integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    settings = pipeline.SamplerSettings(steps=3, seed=11, window=16)
    rendered = pipeline.render_clip(model, reference, skeleton, settings).frames

    sched = LCMScheduler.from_pretrained(tmp_path / "ex")
    sched.set_timesteps(3)
    assert sched.timesteps.tolist() == [999, 699, 349]  # not the 50-step grid's [999, 679, 339]
    gen = torch.Generator().manual_seed(11)  # render's: the starting noise, then the fresh noise per step
    x = torch.randn((1, 4, 3, 16, 16), generator=gen)
    with torch.no_grad():
        cond = pipeline.encode_reference(model, reference)
        pose = {"skeleton": pipeline.clip_tensor(skeleton, "cpu", torch.float32)}
        for t in sched.timesteps:
            out = model.net(x, t.reshape(1), pose, cond)
            x, denoised = sched.step(out, t, x, generator=gen, return_dict=False)
    frames = decode_latents(model.vae, denoised.transpose(1, 2).flatten(0, 1), batch_size=8)
    np.testing.assert_array_equal(frames, rendered)  # the same frames, bit for bit
    other_seed = pipeline.SamplerSettings(steps=3, seed=12, window=16)
    assert (
        frames != pipeline.render_clip(model, reference, skeleton, other_seed).frames
    ).any()  # not trivial

    segmented = save_model_folder(net, vae, tmp_path / "k2", kind="student", meta={**meta, "segments": 2})
    with pytest.raises(AnimlcmError, match=r"2-segment student .* distill it with --segments 1"):
        _run(app, ["export", segmented, "--format", "moore-aa", "--out", tmp_path / "ex2"])
    assert not (tmp_path / "ex2").exists()

"""Portable model folders: links relative to the folder (moved pairs load), students that store only what
they changed, LoRA students as diffusers LoRA files, ``animlcm convert`` and ``teacher info``'s sources."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from animlcm import AnimationPipeline
from animlcm.cli import app
from animlcm.errors import AnimlcmError
from animlcm.models.io import load_model_folder, read_folder_meta, save_model_folder
from animlcm.models.lora import add_lora
from animlcm.models.presets import tiny_network
from animlcm.models.vae import build_tiny_vae
from animlcm.stages.render.precheck import BUILTIN_STUDENT

H, W, FRAMES = 32, 32, 2


@pytest.fixture(scope="module")
def teacher_net():
    return tiny_network(seed=3).eval()


@pytest.fixture(scope="module")
def student_net(teacher_net):
    """The teacher with a changed denoiser: its other parts equal the teacher's."""
    net = copy.deepcopy(teacher_net)
    with torch.no_grad():
        for p in net.unet.parameters():
            p.add_(0.01)
    return net


@pytest.fixture()
def pair(tmp_path, teacher_net, student_net):
    """runs/teacher + runs/student (linked), written as distill writes them."""
    vae = build_tiny_vae()
    teacher = save_model_folder(teacher_net, vae, tmp_path / "runs" / "teacher", "teacher")
    meta = {"segments": 1, "num_ddim_steps": 50}
    student = save_model_folder(
        student_net, vae, tmp_path / "runs" / "student", "student", meta=meta,
        links={"teacher": teacher}, share_from=teacher,
    )  # fmt: skip
    return teacher, student


def frames(folder: Path) -> np.ndarray:
    g = np.random.default_rng(0)
    ref = g.integers(0, 255, (H, W, 3), dtype=np.uint8)
    poses = g.integers(0, 255, (FRAMES, H, W, 3), dtype=np.uint8)
    pipe = AnimationPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(ref, poses, num_inference_steps=2, output_type="np").frames


def lora_student(teacher_net, seed: int):
    """The teacher + a rank-4 LoRA with an effect (peft starts lora_B at zero)."""
    net = copy.deepcopy(teacher_net)
    add_lora(net, rank=4)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2, generator=g)
    return net


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_full_student_links_exactly_the_parts_it_shares(pair, student_net):
    teacher, student = pair
    data = read_folder_meta(student)
    # every part but the changed denoiser (the tiny preset's teacher has a face projector and aux head too)
    from animlcm.models.diffusers_folder import NETWORK_PARTS

    assert set(data["shared"]) == set(NETWORK_PARTS) - {"unet"} | {"vae"}
    for part, entry in data["shared"].items():
        assert entry["from"] == "../teacher" and entry["absolute"] == str(teacher.resolve())
        assert not (student / part).exists()
    assert (student / "unet").is_dir()
    # the index still names every component, so diffusers knows what to pass in
    index = json.loads((student / "model_index.json").read_text())
    assert index["reference_unet"] == ["diffusers", "UNet2DConditionModel"]
    assert same(load_model_folder(student).net, student_net)
    # through diffusers: the linked parts come from the teacher's folder with their own from_pretrained
    pipe = AnimationPipeline.from_pretrained(student)
    assert same(pipe.network, student_net)


def test_a_moved_pair_loads_and_a_moved_student_finds_its_teacher(pair, tmp_path, student_net):
    teacher, student = pair
    want = frames(student)
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "runs"), moved)  # relative links: the pair moves as a whole
    assert same(load_model_folder(moved / "student").net, student_net)
    assert np.array_equal(frames(moved / "student"), want)
    shutil.move(str(moved / "student"), tmp_path / "alone")  # neither relative nor absolute path is right
    with pytest.raises(AnimlcmError) as err:
        load_model_folder(tmp_path / "alone")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "alone")) and "not there" in msg and "\n" not in msg
    # back beside the absolute path it recorded: found there
    shutil.move(str(moved / "teacher"), teacher)
    assert same(load_model_folder(tmp_path / "alone").net, student_net)


def test_a_teacher_changed_in_place_is_refused(pair):
    teacher, student = pair
    path = teacher / "reference_unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(AnimlcmError, match="sha256 differs") as err:
        load_model_folder(student)
    assert str(err.value).startswith(str(path))
    out = CliRunner().invoke(app, ["teacher", "info", str(student)], env={"COLUMNS": "250"})
    assert "CHANGED since written" in out.output.replace("\n", " ")


def test_standalone_and_convert(pair, tmp_path, student_net):
    teacher, student = pair
    alone = tmp_path / "standalone"
    result = CliRunner().invoke(app, ["convert", str(student), str(alone), "--standalone"])
    assert result.exit_code == 0, result.output
    assert "shared" not in read_folder_meta(alone)
    assert all(
        (alone / p).is_dir() for p in ("unet", "reference_unet", "pose_guider", "image_encoder", "vae")
    )
    shutil.rmtree(teacher)
    assert same(load_model_folder(alone).net, student_net)  # needs nothing else
    # convert never writes over or into its input
    for bad in (alone, alone / "inner"):
        out = CliRunner().invoke(app, ["convert", str(alone), str(bad)])
        assert out.exit_code != 0 and "overlaps" in str(out.exception), out.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    out = CliRunner().invoke(app, ["convert", str(alone), str(tmp_path / "full")])
    assert "not empty" in str(out.exception) and (tmp_path / "full" / "x").read_text() == "mine"


def test_convert_flat_folders_keeps_each_dtype_and_links_the_teacher(tmp_path, teacher_net, student_net):
    """Folders of the earlier flat layout (float16 networks, a float32 VAE, absolute teacher paths) become
    diffusers folders with the same tensors, dtypes and frames."""
    vae = build_tiny_vae()
    t16, s16 = copy.deepcopy(teacher_net).half(), copy.deepcopy(student_net).half()
    old_t = save_model_folder(t16, vae, tmp_path / "old" / "teacher", "teacher", layout="flat")
    meta = {"segments": 2, "num_ddim_steps": 20, "teacher": str(old_t.resolve())}
    old_s = save_model_folder(s16, vae, tmp_path / "old" / "student", "student", meta=meta, layout="flat")
    from animlcm.models.convert import convert_folder, stored_dtypes

    new_t = tmp_path / "new" / "teacher"
    convert_folder(old_t, new_t)
    res = convert_folder(old_s, tmp_path / "new" / "student", teacher=new_t, absolute_links=False)
    assert res.shared == [
        "aux_head",
        "face_projector",
        "image_encoder",
        "pose_guider",
        "reference_unet",
        "vae",
    ]
    data = read_folder_meta(res.out)
    assert data["meta"]["teacher"] == "../teacher" and "teacher_absolute" not in data["meta"]
    assert set(stored_dtypes(new_t).values()) == {torch.float16}
    from safetensors import safe_open

    with safe_open(str(new_t / "vae" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    assert same(load_model_folder(res.out).net, load_model_folder(old_s).net)
    assert np.array_equal(frames(res.out), frames(old_s))
    assert (
        type(AnimationPipeline.from_pretrained(res.out).scheduler).__name__ == "SegmentedConsistencyScheduler"
    )


def test_lora_students_link_their_base_and_load_onto_it_with_diffusers(tmp_path, teacher_net):
    """A LoRA student is a diffusers pipeline LoRA file + a relative link to its base: the pair moves, and
    ``pipe.load_lora_weights`` on the teacher's pipeline renders what the student folder renders."""
    vae = build_tiny_vae()
    teacher = save_model_folder(teacher_net, vae, tmp_path / "pair" / "teacher", "teacher")
    net = lora_student(teacher_net, seed=0)
    meta = {"segments": 1, "num_ddim_steps": 50}
    student = save_model_folder(
        net,
        None,
        tmp_path / "pair" / "student",
        "student",
        meta=meta,
        lora=True,
        links={"base_teacher": teacher},
    )
    data = read_folder_meta(student)["meta"]
    assert data["base_teacher"] == "../teacher"
    want = frames(student)
    shutil.move(
        str(tmp_path / "pair"), tmp_path / "moved"
    )  # the absolute fallback is gone: relative finds it
    assert np.array_equal(frames(tmp_path / "moved" / "student"), want)

    pipe = AnimationPipeline.from_pretrained(tmp_path / "moved" / "teacher")
    pipe.load_lora_weights(tmp_path / "moved" / "student" / "lora")
    assert list(pipe.unet.peft_config) == ["default_0"]
    # as a student: sample with the student's scheduler (the teacher's is DDIM + guidance)
    pipe.scheduler = AnimationPipeline.from_pretrained(tmp_path / "moved" / "student").scheduler
    pipe.set_progress_bar_config(disable=True)
    g = np.random.default_rng(0)
    ref = g.integers(0, 255, (H, W, 3), dtype=np.uint8)
    poses = g.integers(0, 255, (FRAMES, H, W, 3), dtype=np.uint8)
    got = pipe(ref, poses, num_inference_steps=2, output_type="np").frames
    assert np.abs(got - want).max() <= 1 / 255


def test_lora_files_written_before_the_unet_prefix_still_load(tmp_path, teacher_net):
    from animlcm.models.lora import load_lora

    net = copy.deepcopy(teacher_net)
    add_lora(net, rank=4)
    net.unet.save_lora_adapter(
        str(tmp_path / "old"), adapter_name="default", weight_name="pytorch_lora_weights.safetensors"
    )
    other = copy.deepcopy(teacher_net)
    load_lora(other, tmp_path / "old")
    assert same(other, net)


def test_the_builtin_models_ship_in_the_diffusers_layout():
    """The shipped student links the frozen parts to the teacher beside it, by relative path only."""
    data = read_folder_meta(BUILTIN_STUDENT)
    assert data["layout"] == "diffusers" and (BUILTIN_STUDENT / "model_index.json").is_file()
    assert set(data["shared"]) >= {"reference_unet", "image_encoder", "vae"}
    assert all(e["from"] == "../teacher" and "absolute" not in e for e in data["shared"].values())
    assert data["meta"]["teacher"] == "../teacher" and "teacher_absolute" not in data["meta"]
    assert (BUILTIN_STUDENT.parent / "teacher" / "model_index.json").is_file()
    out = CliRunner().invoke(app, ["teacher", "info", str(BUILTIN_STUDENT)], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and out.output.count("digest matches") == len(data["shared"]), out.output


def test_convert_a_lora_student_of_the_earlier_format(tmp_path, teacher_net):
    """A LoRA student written before (unprefixed LoRA keys, an absolute base path) converts to a pipeline
    LoRA file linked to its base by relative path, rendering the same frames."""
    from safetensors import safe_open

    from animlcm.models.convert import convert_folder

    vae = build_tiny_vae()
    teacher = save_model_folder(teacher_net, vae, tmp_path / "old" / "teacher", "teacher")
    net = lora_student(teacher_net, seed=1)
    old = tmp_path / "old" / "student"
    save_model_folder(
        net, None, old, "student", meta={"segments": 1}, lora=True, links={"base_teacher": teacher}
    )
    (old / "lora" / "pytorch_lora_weights.safetensors").unlink()  # as the earlier code wrote it:
    net.unet.save_lora_adapter(
        str(old / "lora"), adapter_name="default", weight_name="pytorch_lora_weights.safetensors"
    )
    data = json.loads((old / "animlcm.json").read_text())
    data["meta"] = {"segments": 1, "base_teacher": str(teacher.resolve())}
    (old / "animlcm.json").write_text(json.dumps(data))
    want = frames(old)

    res = convert_folder(old, tmp_path / "new" / "student", teacher=teacher)
    assert res.lora and res.shared == []
    meta = read_folder_meta(res.out)["meta"]
    assert meta["base_teacher"] == "../../old/teacher" and meta["base_teacher_absolute"] == str(
        teacher.resolve()
    )
    with safe_open(str(res.out / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert all(k.startswith("unet.") for k in f.keys())
    assert np.array_equal(frames(res.out), want)


def test_a_link_may_name_a_hub_model_in_the_local_cache(tmp_path, monkeypatch, teacher_net):
    """A link that is no folder is read as a hub id, served from the local hub cache (never downloaded)."""
    from animlcm.models.linked import resolve_link

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-teacher" / "snapshots" / "0123abcd"
    save_model_folder(teacher_net, None, snapshot, "teacher")
    (cache / "models--someone--tiny-teacher" / "refs").mkdir()
    (cache / "models--someone--tiny-teacher" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert resolve_link("someone/tiny-teacher", tmp_path, what="teacher") == snapshot
    with pytest.raises(AnimlcmError, match="its teacher is not there"):
        resolve_link("someone/other", tmp_path, what="teacher")

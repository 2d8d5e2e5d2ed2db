"""`make models`' last step: the trained teacher and student written as they ship (diffusers layout, float16
networks, the student linking its frozen parts to ../teacher by relative path only), loading back to what
was trained up to the float16 cast."""

from __future__ import annotations

import copy
import shutil

import torch

from animlcm.models.io import load_model_folder, read_folder_meta, save_model_folder
from animlcm.models.presets import tiny_network
from animlcm.models.vae import build_tiny_vae
from animlcm.synth.build_models import _ship


def test_the_build_ships_portable_float16_models(tmp_path):
    vae = build_tiny_vae()
    vae_dir = tmp_path / "build" / "vae"
    vae.save_pretrained(str(vae_dir))
    teacher_net = tiny_network(seed=4, face_tokens=False).eval()
    student_net = copy.deepcopy(teacher_net)
    with torch.no_grad():
        for p in student_net.unet.parameters():
            p.add_(0.01)
    teacher = save_model_folder(teacher_net, vae, tmp_path / "build" / "t" / "teacher", "teacher")
    student = save_model_folder(
        student_net, vae, tmp_path / "build" / "s" / "student", "student", meta={"segments": 2},
        links={"teacher": teacher, "spatial_run": tmp_path / "build" / "s"},
    )  # fmt: skip
    out = tmp_path / "assets"
    _ship(vae_dir, teacher, student, out)
    shutil.rmtree(tmp_path / "build")  # nothing shipped may point into the build folder
    assert sorted(p.name for p in out.iterdir()) == ["student", "teacher", "vae"]
    data = read_folder_meta(out / "student")
    assert data["meta"]["teacher"] == "../teacher" and "teacher_absolute" not in data["meta"]
    assert "spatial_run" not in data["meta"] and "spatial_run_absolute" not in data["meta"]
    assert set(data["shared"]) >= {"reference_unet", "image_encoder", "pose_guider", "vae"}
    assert all(set(e) == {"from", "sha256"} for e in data["shared"].values())
    for folder, net in ((out / "teacher", teacher_net), (out / "student", student_net)):
        loaded = load_model_folder(folder, dtype=torch.float16).net
        assert next(loaded.unet.parameters()).dtype == torch.float16
        mine, want = loaded.state_dict(), net.half().state_dict()
        assert mine.keys() == want.keys() and all(torch.equal(mine[k], want[k]) for k in mine)

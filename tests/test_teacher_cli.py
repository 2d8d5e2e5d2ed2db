"""`animlcm teacher init` / `teacher info`, and the sd15 preset's one-line errors (no network needed)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from animlcm.errors import AnimlcmError


@pytest.fixture(scope="module")
def app():
    from animlcm.cli import app

    return app


@pytest.fixture(scope="module")
def teacher(app, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "T"
    result = CliRunner().invoke(app, ["teacher", "init", "--preset", "tiny", "--aux-head", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_init_writes_a_loadable_teacher(teacher):
    from animlcm.models.io import load_model_folder
    from animlcm.models.network import parameter_counts
    from animlcm.models.teacher import folder_info

    out, output = teacher
    assert "wrote" in output and "unet (motion modules)" in output
    loaded = load_model_folder(out)
    assert loaded.kind == "teacher" and loaded.net.aux_head is not None and loaded.vae is not None
    info = folder_info(out)
    assert info.counts == parameter_counts(loaded.net)  # counted on the meta device == the real thing
    assert info.prediction_type == "v_prediction" and info.pose_maps == ["skeleton"] and info.vae


def test_info_prints_parts_counts_and_prediction_type(app, teacher):
    out, _ = teacher
    result = CliRunner().invoke(app, ["teacher", "info", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in (
        "unet (spatial)",
        "unet (motion modules)",
        "reference_unet",
        "pose_guider",
        "image_encoder",
        "face_projector",
        "aux_head",
        "v_prediction",
        "zero-SNR True",
        "trailing",
    ):
        assert text in result.output


def test_info_on_a_non_model_folder_is_one_line(app, tmp_path):
    result = CliRunner().invoke(app, ["teacher", "info", str(tmp_path)])
    assert isinstance(result.exception, AnimlcmError)
    assert "not a teacher or student folder" in str(result.exception) and "\n" not in str(result.exception)


def test_init_options_flow_into_the_folder(app, tmp_path):
    from animlcm.models.teacher import folder_info

    out = tmp_path / "E"
    result = CliRunner().invoke(
        app,
        [
            "teacher",
            "init",
            "--out",
            str(out),
            "--schedule",
            "sd15",
            "--no-face-tokens",
            "--pose-maps",
            "skeleton,depth",
            "--dtype",
            "float16",
        ],
    )
    assert result.exit_code == 0, result.output
    info = folder_info(out)
    assert (
        info.prediction_type == "epsilon" and not info.face_tokens and info.pose_maps == ["skeleton", "depth"]
    )
    assert "face_projector" not in info.counts


def test_widths_make_a_bigger_tiny_teacher_that_loads_and_runs(app, tmp_path, teacher):
    import torch

    from animlcm.models.io import load_model_folder
    from animlcm.models.teacher import folder_info

    out = tmp_path / "W"
    result = CliRunner().invoke(app, ["teacher", "init", "--out", str(out), "--widths", "64,128"])
    assert result.exit_code == 0, result.output
    net = load_model_folder(out).net
    assert list(net.unet.config.block_out_channels) == [64, 128]
    assert list(net.reference_unet.config.block_out_channels) == [64, 128]
    # about four times the default's UNet parameters (a conv's weights grow with in x out channels)
    default = folder_info(teacher[0]).counts["unet (spatial)"]
    assert 3 * default < folder_info(out).counts["unet (spatial)"] < 5 * default
    # one pass through the wider network at the tiny latent size
    x = torch.randn(1, 4, 2, 16, 16)
    with torch.no_grad():
        cond = net.encode_conditioning(torch.rand(1, 3, 128, 128), torch.randn(1, 4, 16, 16), None)
        y = net(x, torch.tensor([500]), {"skeleton": torch.rand(1, 3, 2, 128, 128)}, cond)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("widths", ["30,64", "64", "a,b"])
def test_bad_widths_are_one_line(app, tmp_path, widths):
    result = CliRunner().invoke(app, ["teacher", "init", "--out", str(tmp_path / "B"), "--widths", widths])
    assert isinstance(result.exception, AnimlcmError), result.output
    assert f"--widths {widths}" in str(result.exception) and "\n" not in str(result.exception)


def test_widths_are_for_the_tiny_preset(app, tmp_path):
    args = [
        "teacher",
        "init",
        "--preset",
        "sd15",
        "--random",
        "--out",
        str(tmp_path / "S"),
        "--widths",
        "64,128",
    ]
    result = CliRunner().invoke(app, args)
    assert "--widths/--heads are for the tiny preset" in str(result.exception)


def test_sd15_without_parts_names_each_missing_part(app, tmp_path):
    result = CliRunner().invoke(app, ["teacher", "init", "--preset", "sd15", "--out", str(tmp_path / "S")])
    assert isinstance(result.exception, AnimlcmError)
    lines = str(result.exception).splitlines()
    assert len(lines) == 4
    for flag in ("--vae", "--unet", "--motion-adapter", "--image-encoder"):
        assert sum(flag in line for line in lines) >= 1
    assert not (tmp_path / "S").exists() and not (tmp_path / "S.tmp").exists()


def test_sd15_unreachable_parts_fail_with_one_line_each(monkeypatch, tmp_path):
    """Bogus hub ids and paths: one line per part, without waiting on network retries."""
    import animlcm.models.presets as presets
    from animlcm.models.presets import Sd15Parts, load_sd15_parts

    monkeypatch.setattr(presets, "hub_reachable", lambda timeout=3.0: False)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(AnimlcmError) as err:
        load_sd15_parts(
            Sd15Parts("bogus-user/no-such-sd15-xyz", str(tmp_path / "missing" / "dir"), str(not_a_model))
        )
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("--unet bogus-user/no-such-sd15-xyz") and "unreachable" in lines[0]
    assert lines[1].startswith("--motion-adapter") and "no such folder" in lines[1]
    assert lines[2].startswith("--image-encoder") and "no config.json" in lines[2]


def test_teacher_sub_app_takes_more_commands():
    from animlcm.cli.teacher import teacher_app

    assert isinstance(teacher_app, typer.Typer)
    assert {c.name for c in teacher_app.registered_commands} >= {"init", "info"}


def test_heads_split_the_attention_and_bad_heads_are_one_line(app, tmp_path):
    from animlcm.models.io import load_model_folder

    out = tmp_path / "H"
    result = CliRunner().invoke(app, ["teacher", "init", "--out", str(out), "--heads", "4"])
    assert result.exit_code == 0, result.output
    net = load_model_folder(out).net
    attn = net.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn.heads == 4 and net.reference_unet.config.attention_head_dim == 4
    result = CliRunner().invoke(app, ["teacher", "init", "--out", str(tmp_path / "B"), "--heads", "3"])
    assert isinstance(result.exception, AnimlcmError), result.output
    assert "--heads 3" in str(result.exception) and "\n" not in str(result.exception)


def test_a_fresh_teacher_renders_clips_as_it_renders_frames(app, tmp_path):
    """AnimateDiff's zero-initialised motion modules: a teacher trained only in the spatial stage must not
    mix frames with random temporal attention when it renders a clip."""
    import torch

    from animlcm.models.io import load_model_folder

    out = tmp_path / "Z"
    assert CliRunner().invoke(app, ["teacher", "init", "--out", str(out), "--no-face-tokens"]).exit_code == 0
    net = load_model_folder(out).net
    x, pose = torch.randn(1, 4, 3, 16, 16), {"skeleton": torch.rand(1, 3, 3, 128, 128)}
    with torch.no_grad():
        cond = net.encode_conditioning(torch.rand(1, 3, 128, 128), torch.randn(1, 4, 16, 16), None)
        clip = net(x, torch.tensor([700]), pose, cond, temporal=True)
        frames = net(x, torch.tensor([700]), pose, cond, temporal=False)
    assert torch.allclose(clip, frames, atol=1e-5)
    # and the motion modules are there to be trained: their inner layers are not zero
    inner = [p for n, p in net.unet.named_parameters() if "motion_modules" in n and "proj_in" in n]
    assert inner and all(p.abs().sum() > 0 for p in inner)

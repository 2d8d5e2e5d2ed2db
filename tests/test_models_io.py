"""Model folders: exact save -> load round trips, strictness, clear errors, no pickle; preset sizes."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.errors import AnimlcmError
from animlcm.models.io import (
    META_FILE,
    WEIGHTS_FILE,
    folder_kind,
    load_model_folder,
    load_network,
    save_model_folder,
)
from animlcm.models.presets import tiny_network
from animlcm.models.vae import build_tiny_vae


@pytest.fixture(scope="module")
def net():
    return tiny_network(seed=3, aux_head=True)


@pytest.fixture(scope="module")
def vae():
    return build_tiny_vae()


@pytest.fixture(scope="module")
def teacher_dir(net, vae, tmp_path_factory):
    """A folder in the flat layout (what earlier versions wrote, and the built-in models are): it must keep
    loading; the diffusers layout new folders get is tested in test_diffusers_folder.py."""
    folder = tmp_path_factory.mktemp("io") / "teacher"
    return save_model_folder(net, vae, folder, meta={"note": "x"}, layout="flat")


def outputs(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref, lat, face = torch.rand(1, 3, 128, 128, generator=g), torch.randn(1, 4, 16, 16, generator=g), None
    x, pose = (
        torch.randn(1, 4, 2, 16, 16, generator=g),
        {"skeleton": torch.rand(1, 3, 2, 128, 128, generator=g)},
    )
    with torch.no_grad():
        cond = net.encode_conditioning(ref, lat, face)
        return net(x, torch.tensor([999]), pose, cond, return_aux=True)


def test_round_trip_is_exact(net, vae, teacher_dir):
    assert sorted(p.name for p in teacher_dir.iterdir()) == [META_FILE, "model.safetensors", "vae"]
    assert not teacher_dir.with_name("teacher.tmp").exists()
    loaded = load_model_folder(teacher_dir)
    assert loaded.kind == "teacher" and loaded.meta == {"note": "x"}
    assert loaded.schedule == NoiseSchedule.zero_snr_v() and loaded.net.prediction_type == "v_prediction"
    a, b = net.state_dict(), loaded.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(outputs(net), outputs(loaded.net), strict=True):
        assert torch.allclose(x, y, atol=1e-6)  # identical weights; GEMMs may round differently per buffer
    va, vb = vae.state_dict(), loaded.vae.state_dict()
    assert all(torch.equal(va[k], vb[k]) for k in va)
    net2, vae2 = load_network(teacher_dir, "cpu", torch.float32)  # ARCHITECTURE.md's name
    assert torch.equal(net2.unet.conv_in.weight, net.unet.conv_in.weight) and vae2 is not None


def test_metadata_is_plain_json(teacher_dir):
    data = json.loads((teacher_dir / META_FILE).read_text())
    assert data["kind"] == "teacher" and data["format"] == 1
    assert data["schedule"]["prediction_type"] == "v_prediction" and data["schedule"]["zero_snr"] is True
    assert data["network"]["pose_guider"]["maps"] == ["skeleton"] and data["network"]["aux_head"] is True
    assert folder_kind(teacher_dir) == "teacher"


def test_load_in_half_precision(teacher_dir):
    loaded = load_model_folder(teacher_dir, dtype=torch.bfloat16, vae=False)
    assert loaded.net.dtype == torch.bfloat16 and loaded.vae is None
    assert all(p.dtype == torch.bfloat16 for p in loaded.net.parameters())


def test_weights_are_never_unpickled(teacher_dir, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("pickle used to load weights")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_model_folder(teacher_dir)
    assert loaded.vae is not None
    files = [p.name for p in teacher_dir.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


def test_overwrite_is_atomic_and_complete(net, tmp_path):
    d = tmp_path / "t"
    save_model_folder(net, None, d)
    save_model_folder(net, None, d, kind="student", meta={"method": "lcm"})
    assert folder_kind(d) == "student" and sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    assert load_model_folder(d).vae is None


@pytest.mark.parametrize("make", ["missing", "empty", "bad_kind"])
def test_not_a_model_folder(tmp_path, make):
    d = tmp_path / "x"
    if make != "missing":
        d.mkdir()
    if make == "bad_kind":
        (d / META_FILE).write_text(json.dumps({"kind": "banana", "network": {}}))
    with pytest.raises(AnimlcmError, match="teacher|student") as err:
        load_model_folder(d)
    assert "\n" not in str(err.value) and str(d) in str(err.value)


def test_loading_is_strict(net, tmp_path):
    from safetensors.torch import load_file, save_file

    d = save_model_folder(net, None, tmp_path / "t", layout="flat")
    state = load_file(str(d / WEIGHTS_FILE))
    dropped = dict(state)
    dropped.pop("pose_guider.encoders.skeleton.conv_out.bias")
    save_file(dropped, str(d / WEIGHTS_FILE))
    with pytest.raises(AnimlcmError, match="1 missing"):
        load_model_folder(d)
    save_file({**state, "unet.extra": torch.zeros(1)}, str(d / WEIGHTS_FILE))
    with pytest.raises(AnimlcmError, match="1 unexpected"):
        load_model_folder(d)
    state["unet.conv_in.bias"] = torch.zeros(7)
    save_file(state, str(d / WEIGHTS_FILE))
    with pytest.raises(AnimlcmError, match="wrong-shape"):
        load_model_folder(d)


def test_sd15_random_sizes_match_sd15_and_animatediff():
    """Counted on the meta device: the real-size architecture without allocating 1.3 B parameters."""
    from animlcm.models.network import parameter_counts
    from animlcm.models.presets import empty_network, network_config

    counts = parameter_counts(empty_network(network_config("sd15")))
    assert counts["unet (spatial)"] == 859_520_964  # SD1.5 UNet (859.5 M)
    assert 0.45e9 < counts["unet (motion modules)"] < 0.46e9  # AnimateDiff v1.5-2 motion modules (453 M)
    assert (
        counts["reference_unet"] == 859_520_964 - (320 * 9 * 4 + 4) - 2 * 320
    )  # minus conv_out, conv_norm_out
    assert 0.30e9 < counts["image_encoder"] < 0.31e9  # CLIP ViT-L/14 vision + projection


@pytest.mark.parametrize("file", ["model.safetensors", "vae/diffusion_pytorch_model.safetensors"])
def test_a_truncated_weights_file_is_named(teacher_dir, tmp_path, file):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(teacher_dir, folder)
    path = folder / file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(AnimlcmError) as err:
        load_model_folder(folder)
    msg = str(err.value)
    assert "\n" not in msg and "copy" in msg
    assert msg.startswith(str(path if file == "model.safetensors" else path.parent)), msg

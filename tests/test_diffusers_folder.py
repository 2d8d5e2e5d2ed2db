"""Model folders in the diffusers layout: each component loads with its library's own from_pretrained and
holds exactly the network's weights; the project's loader reads the layout strictly; flat folders load."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.models.diffusers_folder import MODEL_INDEX, weights_file
from animlcm.models.io import META_FILE, load_model_folder, save_model_folder
from animlcm.models.presets import tiny_network
from animlcm.models.vae import build_tiny_vae


@pytest.fixture(scope="module")
def net():
    return tiny_network(seed=5, aux_head=True, face_tokens=True).eval()


@pytest.fixture(scope="module")
def folder(net, tmp_path_factory):
    meta = {"segments": 2, "num_ddim_steps": 20, "note": "x"}
    return save_model_folder(net, build_tiny_vae(), tmp_path_factory.mktemp("df") / "s", "student", meta=meta)


def same_state(a: torch.nn.Module | dict, b: torch.nn.Module | dict, drop: tuple[str, ...] = ()) -> bool:
    a = a if isinstance(a, dict) else a.state_dict()
    b = b if isinstance(b, dict) else b.state_dict()
    a = {k: v for k, v in a.items() if k not in drop}
    b = {k: v for k, v in b.items() if k not in drop}
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_layout_is_diffusers(folder):
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            META_FILE,
            MODEL_INDEX,
            "unet",
            "reference_unet",
            "pose_guider",
            "image_encoder",
            "face_projector",
            "aux_head",
            "vae",
            "scheduler",
        ]
    )
    index = json.loads((folder / MODEL_INDEX).read_text())
    assert index["_class_name"] == "AnimationPipeline"
    assert index["unet"] == ["diffusers", "UNetMotionModel"]
    assert index["reference_unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert index["pose_guider"] == ["animlcm.models.components", "PoseGuiderModel"]
    assert index["scheduler"] == ["animlcm.diffusion.scheduler", "SegmentedConsistencyScheduler"]
    meta = json.loads((folder / META_FILE).read_text())
    assert (meta["format"], meta["layout"], meta["kind"]) == (2, "diffusers", "student")
    assert not folder.with_name("s.tmp").exists()


def test_every_component_loads_with_its_library(net, folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPVisionModelWithProjection

    from animlcm.diffusion.scheduler import SegmentedConsistencyScheduler
    from animlcm.models.components import AuxHeadModel, FaceProjectorModel, PoseGuiderModel

    assert same_state(UNetMotionModel.from_pretrained(folder / "unet"), net.unet)
    ref = UNet2DConditionModel.from_pretrained(folder / "reference_unet")
    assert same_state(
        ref,
        net.reference_unet,
        drop=("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"),
    )
    assert not ref.conv_out.weight.any()  # the unused head is saved neutral, not random
    enc = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder")
    assert same_state(enc, net.image_encoder)
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    assert same_state(vae, build_tiny_vae())
    sched = SegmentedConsistencyScheduler.from_pretrained(folder / "scheduler")
    assert (sched.config.num_segments, sched.config.original_inference_steps) == (2, 20)
    assert sched.config.prediction_type == net.prediction_type

    # the project's parts: same weights, and the same outputs as the network's own modules
    guider = PoseGuiderModel.from_pretrained(folder / "pose_guider")
    assert same_state(guider, net.pose_guider) and guider.maps == net.pose_guider.maps
    pose = {"skeleton": torch.rand(1, 3, 2, 64, 64, generator=torch.Generator().manual_seed(0))}
    mine = copy.deepcopy(net.pose_guider)  # a copy: the module's fixtures are shared
    for g in (mine, guider):  # a zero-initialised conv_out would hide any mismatch
        torch.nn.init.normal_(
            g.encoders["skeleton"].conv_out.weight, generator=torch.Generator().manual_seed(1)
        )
    with torch.no_grad():
        assert torch.equal(guider(pose), mine(pose)) and guider(pose).abs().sum() > 0
    face = FaceProjectorModel.from_pretrained(folder / "face_projector")
    assert same_state(face, net.face_projector) and face.num_tokens == net.face_projector.num_tokens
    latent = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(face(latent), net.face_projector(latent))
    aux = AuxHeadModel.from_pretrained(folder / "aux_head")
    assert same_state(aux, net.aux_head)


def test_round_trip_is_exact(net, folder):
    loaded = load_model_folder(folder)
    assert loaded.kind == "student" and loaded.meta["note"] == "x"
    assert same_state(loaded.net, net)
    assert same_state(loaded.vae, build_tiny_vae())


@pytest.mark.parametrize(
    ("meta", "name"), [({"segments": 1, "num_ddim_steps": 20}, "LCMScheduler"), ({}, "DDIMScheduler")]
)
def test_students_and_teachers_ship_their_sampler(net, tmp_path, meta, name):
    kind = "student" if meta else "teacher"
    d = save_model_folder(net, None, tmp_path / kind, kind, meta=meta)
    config = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == name
    assert config["prediction_type"] == "v_prediction" and config["rescale_betas_zero_snr"] is True
    if name == "LCMScheduler":
        assert (config["original_inference_steps"], config["timestep_scaling"]) == (20, 10.0)
    assert not (d / "vae").exists() and "vae" not in json.loads((d / MODEL_INDEX).read_text())


def test_loading_is_strict_and_names_the_folder(net, folder, tmp_path):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "copy"
    shutil.copytree(folder, d)
    path = weights_file(d, "pose_guider")
    state = load_file(str(path))
    save_file({k: v for k, v in state.items() if not k.endswith("conv_out.bias")}, str(path))
    with pytest.raises(AnimlcmError, match="1 missing") as err:
        load_model_folder(d)
    assert str(d) in str(err.value) and "\n" not in str(err.value)
    save_file({**state, "extra": torch.zeros(1)}, str(path))
    with pytest.raises(AnimlcmError, match="1 unexpected"):
        load_model_folder(d)
    unet = weights_file(d, "unet")
    unet.write_bytes(unet.read_bytes()[:1000])
    with pytest.raises(AnimlcmError) as err:
        load_model_folder(d)
    msg = str(err.value)
    assert msg.startswith(str(unet)) and "copy it again" in msg and "\n" not in msg


def test_flat_folders_still_load(net, tmp_path):
    d = save_model_folder(net, None, tmp_path / "flat", layout="flat")
    assert sorted(p.name for p in d.iterdir()) == [META_FILE, "model.safetensors"]
    assert same_state(load_model_folder(d).net, net)
    with pytest.raises(AnimlcmError, match="layout 'zip'"):
        save_model_folder(net, None, tmp_path / "z", layout="zip")

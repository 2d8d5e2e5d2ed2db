"""The animation network: shapes, reference injection, pose guider, spatial-only mode, conditioning."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from animlcm.models.layout import batch_to_frames, frames_to_batch
from animlcm.models.network import AnimationNetwork, Conditioning
from animlcm.models.presets import network_config, tiny_network

H = W = 128  # tiny preset pixels; latents 16x16


def inputs(b: int, f: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        ref=torch.rand(b, 3, H, W, generator=g),
        ref_latent=torch.randn(b, 4, H // 8, W // 8, generator=g),
        face=torch.randn(b, 4, 32, 32, generator=g),
        x=torch.randn(b, 4, f, H // 8, W // 8, generator=g),
        t=torch.full((b,), 500, dtype=torch.long),
        pose={"skeleton": torch.rand(b, 3, f, H, W, generator=g)},
    )


def trained_faces(net: AnimationNetwork) -> AnimationNetwork:
    """A fresh face projector starts at zero (a no-op); give it the LayerNorm gain training would."""
    with torch.no_grad():
        net.face_projector.norm.weight.fill_(1.0)
    return net


@pytest.fixture(scope="module")
def net() -> AnimationNetwork:
    return trained_faces(tiny_network(seed=0))


@pytest.fixture(scope="module")
def cond(net):
    d = inputs(1, 8)
    with torch.no_grad():
        return net.encode_conditioning(d["ref"], d["ref_latent"], d["face"])


def perturbed_guider(net: AnimationNetwork) -> AnimationNetwork:
    out = copy.deepcopy(net)
    with torch.no_grad():
        for enc in out.pose_guider.encoders.values():
            enc.conv_out.weight.normal_(0, 0.05)
    return out


def test_layout_round_trip_and_order():
    x = torch.arange(2 * 3 * 4 * 5 * 5, dtype=torch.float32).reshape(2, 3, 4, 5, 5)
    flat = frames_to_batch(x)
    assert flat.shape == (8, 3, 5, 5)
    assert torch.equal(flat[1 * 4 + 2], x[1, :, 2])  # frame f of clip b is row b*F + f
    assert torch.equal(batch_to_frames(flat, 4), x)
    with pytest.raises(ValueError):
        batch_to_frames(flat, 3)


@pytest.mark.parametrize("frames", [1, 8])
@pytest.mark.parametrize("temporal", [True, False])
def test_forward_shapes(net, cond, frames, temporal):
    d = inputs(1, frames)
    with torch.no_grad():
        out, aux = net(d["x"], d["t"], d["pose"], cond, temporal=temporal, return_aux=True)
    assert out.shape == (1, 4, frames, 16, 16)
    assert aux.shape == (1, 4, frames, 16, 16)
    assert torch.isfinite(out).all() and torch.isfinite(aux).all()


def test_conditioning_shapes_and_face_mask(net):
    d = inputs(2, 1)
    with torch.no_grad():
        cond = net.encode_conditioning(
            d["ref"], d["ref_latent"], d["face"], face_found=torch.tensor([True, False])
        )
    n_face = net.face_projector.num_tokens
    assert n_face == 64  # 32x32 face latent, patch 4
    assert cond.tokens.shape == (2, 1 + n_face, 32)
    assert len(cond.reference) == net.num_reference_layers == 4
    assert cond.tokens[1, 1:].abs().max() == 0 and cond.tokens[0, 1:].abs().max() > 0
    assert all(r.shape[0] == 2 for r in cond.reference)
    # reference features are the self-attention inputs: widths of the UNet levels, 16x16 and 8x8 tokens
    assert sorted({tuple(r.shape[1:]) for r in cond.reference}) == [(64, 64), (256, 32)]


def test_conditioning_uncond_repeat_select(cond):
    u = cond.uncond()
    assert (
        u.dropped and u.reference == [] and u.tokens.shape == cond.tokens.shape and u.tokens.abs().max() == 0
    )
    r = cond.repeat(3)
    assert r.tokens.shape[0] == 3 and all(x.shape[0] == 3 for x in r.reference)
    assert torch.equal(r.select([2]).tokens, cond.tokens)
    assert torch.equal(r.reference[0][1], cond.reference[0][0])


def test_reference_features_change_the_output(net, cond):
    d = inputs(1, 2)
    with torch.no_grad():
        base = net(d["x"], d["t"], d["pose"], cond)
        other = Conditioning(cond.tokens, [r * 0.5 + 1.0 for r in cond.reference])
        changed = net(d["x"], d["t"], d["pose"], other)
        dropped = net(d["x"], d["t"], d["pose"], Conditioning(cond.tokens, cond.reference, dropped=True))
    assert (changed - base).abs().max() > 1e-3
    assert (dropped - base).abs().max() > 1e-3


@pytest.mark.parametrize("temporal", [True, False])
def test_batched_cfg_is_the_two_branches_in_one_call(net, temporal):
    """cond.with_uncond(): [cond; uncond] in one call of twice the batch, the uncond rows' reference keys
    masked out, equals the two calls (up to float rounding), face tokens (decoupled attention) included."""
    d = inputs(2, 3, seed=4)
    with torch.no_grad():
        cond = net.encode_conditioning(d["ref"], d["ref_latent"], d["face"])
        c = net(d["x"], d["t"], d["pose"], cond, temporal=temporal)
        u = net(d["x"], d["t"], d["pose"], cond.uncond(), temporal=temporal)
        both = {k: torch.cat([v, v]) for k, v in d["pose"].items()}
        x2, t2 = torch.cat([d["x"], d["x"]]), torch.cat([d["t"], d["t"]])
        bc, bu = net(x2, t2, both, cond.with_uncond(), temporal=temporal).chunk(2)
    assert (c - u).abs().max() > 1e-2  # the branches differ: the mask has something to do
    torch.testing.assert_close(bc, c, rtol=0, atol=2e-5)
    torch.testing.assert_close(bu, u, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="plain conditional"):
        cond.uncond().with_uncond()
    assert cond.with_uncond().select([1, 2]).reference_rows.tolist() == [True, False]


def test_reference_read_processor_is_attention_over_concatenated_keys():
    """attn1 with the processor == softmax(q [k_x; k_ref]^T / sqrt(d)) [v_x; v_ref], by hand."""
    from diffusers.models.attention_processor import Attention

    from animlcm.models.reference import ReferenceContext, ReferenceReadProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=1, dim_head=8)
    attn.set_processor(ReferenceReadProcessor(0))
    x, ref = torch.randn(4, 5, 8), torch.randn(2, 3, 8)  # 2 clips x 2 frames; one reference per clip
    with torch.no_grad():
        out = attn(x, reference=ReferenceContext(features=[ref]))
        kv = torch.cat([x, ref.repeat_interleave(2, dim=0)], dim=1)
        q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
        expected = attn.to_out[0](torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1) @ v)
        plain = attn(x, reference=ReferenceContext(features=None))
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)


def test_batch_items_are_independent(net):
    """A batch of two clips gives what each clip gives alone (reference/tokens follow the b*F layout)."""
    d = inputs(2, 3, seed=1)
    with torch.no_grad():
        cond = net.encode_conditioning(d["ref"], d["ref_latent"], d["face"])
        both = net(d["x"], d["t"], d["pose"], cond)
        for i in range(2):
            one = net(
                d["x"][i : i + 1],
                d["t"][i : i + 1],
                {"skeleton": d["pose"]["skeleton"][i : i + 1]},
                cond.select(slice(i, i + 1)),
            )
            assert torch.allclose(both[i : i + 1], one, atol=1e-5)


def test_zero_initialised_pose_guider_has_no_effect_until_trained(net, cond):
    d = inputs(1, 2)
    other_pose = {"skeleton": torch.rand(1, 3, 2, H, W)}
    trained = perturbed_guider(net)
    with torch.no_grad():
        a = net(d["x"], d["t"], d["pose"], cond)
        b = net(d["x"], d["t"], other_pose, cond)
        c = trained(d["x"], d["t"], d["pose"], cond)
        e = trained(d["x"], d["t"], other_pose, cond)
    assert torch.equal(a, b)
    assert (c - e).abs().max() > 1e-4


def test_pose_maps_must_match_the_guider(net, cond):
    d = inputs(1, 1)
    with pytest.raises(ValueError, match="pose maps"):
        net(d["x"], d["t"], {"skeleton": d["pose"]["skeleton"], "depth": d["pose"]["skeleton"]}, cond)
    with pytest.raises(ValueError, match="8x the latent"):
        net(d["x"], d["t"], {"skeleton": torch.rand(1, 3, 1, 64, 64)}, cond)


def test_unet_state_dict_keys_are_plain_diffusers(net):
    from diffusers import UNet2DConditionModel, UNetMotionModel

    plain = UNetMotionModel.from_config(net.config.unet)
    assert list(net.unet.state_dict()) == list(plain.state_dict())
    ref_plain = UNet2DConditionModel.from_config(net.config.reference_unet).state_dict()
    # the reference net's output head is dropped (never run; absent from Moore's reference_unet.pth)
    expected = [k for k in ref_plain if not k.startswith(("conv_norm_out.", "conv_out."))]
    assert list(net.reference_unet.state_dict()) == expected


def test_spatial_view_shares_parameters_and_adds_no_keys(net):
    before = list(net.state_dict())
    view = net.spatial_unet
    assert list(net.state_dict()) == before
    shared = dict(view.named_parameters())
    for name, p in net.unet.named_parameters():
        if "motion_modules" not in name:
            assert shared[name] is p
    assert not any("motion_modules" in n for n in shared)


def test_spatial_mode_equals_motion_mode_without_motion_modules(net, cond):
    d = inputs(1, 4)
    no_motion = copy.deepcopy(net)
    with torch.no_grad():
        # AnimateDiff blocks are x + proj_out(...): a zero proj_out makes each motion module the identity
        zeroed = 0
        for name, m in no_motion.unet.named_modules():
            if re.search(r"\.motion_modules\.\d+\.proj_out$", name):
                m.weight.zero_()
                m.bias.zero_()
                zeroed += 1
        assert zeroed == 7  # tiny: 1 per down block (2), mid (1), 2 per up block (4)
        spatial = net(d["x"], d["t"], d["pose"], cond, temporal=False)
        motion_off = no_motion(d["x"], d["t"], d["pose"], cond, temporal=True)
        motion_on = net(d["x"], d["t"], d["pose"], cond, temporal=True)
        one_frame = net(d["x"][:, :, :1], d["t"], {"skeleton": d["pose"]["skeleton"][:, :, :1]}, cond)
        one_frame_spatial = net(
            d["x"][:, :, :1], d["t"], {"skeleton": d["pose"]["skeleton"][:, :, :1]}, cond, temporal=False
        )
    assert torch.allclose(spatial, motion_off, atol=1e-5)
    assert (spatial - motion_on).abs().max() > 1e-3
    # a single frame through trained motion modules is not the identity: the bypass must be real
    assert (one_frame - one_frame_spatial).abs().max() > 1e-4


def test_face_tokens_and_aux_head_options():
    plain = tiny_network(seed=1, face_tokens=False, aux_head=False)
    assert plain.face_projector is None and plain.aux_head is None
    d = inputs(1, 1)
    with torch.no_grad():
        cond = plain.encode_conditioning(d["ref"], d["ref_latent"])
        assert cond.tokens.shape == (1, 1, 32)
        with pytest.raises(ValueError, match="aux head"):
            plain(d["x"], d["t"], d["pose"], cond, return_aux=True)


def test_face_latent_changes_the_output(net):
    d = inputs(1, 1)
    with torch.no_grad():
        c1 = net.encode_conditioning(d["ref"], d["ref_latent"], d["face"])
        c2 = net.encode_conditioning(d["ref"], d["ref_latent"], d["face"] + 1.0)
        o1 = net(d["x"], d["t"], d["pose"], c1)
        o2 = net(d["x"], d["t"], d["pose"], c2)
    assert (o1 - o2).abs().max() > 1e-5


def _predict(net: AnimationNetwork, d: dict, face=None, found=None, temporal: bool = True) -> torch.Tensor:
    with torch.no_grad():
        cond = net.encode_conditioning(d["ref"], d["ref_latent"], face, found)
        return net(d["x"], d["t"], d["pose"], cond, temporal=temporal)


def test_fresh_face_projector_on_a_teacher_without_one_is_a_no_op():
    """DanceLCM student of a teacher without face tokens: a zero-initialised projector read by decoupled
    attention predicts exactly the teacher's output; trained, it matters, and rows without a face still give
    exactly the teacher's output. Appended to the CLIP token instead, zero tokens would take softmax mass."""
    from animlcm.stages.distill.trainer import with_heads

    teacher = tiny_network(seed=4, face_tokens=False, aux_head=False)
    student = with_heads(teacher, face_tokens=True, aux_head=True)
    assert student.config.face_attention == "decoupled" and teacher.config.face_attention == "decoupled"
    d = inputs(2, 2, seed=1)
    found = torch.tensor([True, False])
    for temporal in (True, False):
        expected = _predict(teacher, d, temporal=temporal)
        assert torch.equal(_predict(student, d, d["face"], found, temporal=temporal), expected)
    expected = _predict(teacher, d)
    concat = copy.deepcopy(student)
    concat.config.face_attention = "concat"
    assert (_predict(concat, d, d["face"], found) - expected).abs().max() > 1e-3  # the mass the zeros take
    trained = trained_faces(copy.deepcopy(student))
    out = _predict(trained, d, d["face"], found)
    assert (out[0] - expected[0]).abs().max() > 1e-4  # a found face changes the prediction
    assert torch.equal(out[1], expected[1])  # no face: exactly the network without face tokens


def test_face_attention_of_folders_written_before_it_is_concat(tmp_path):
    """Folders whose config has no ``face_attention`` (all written before it) load as ``concat``, read as
    they were trained: the face tokens appended to the CLIP token."""
    from animlcm.models.io import META_FILE, load_model_folder, save_model_folder

    net = trained_faces(tiny_network(seed=2))
    folder = save_model_folder(net, None, tmp_path / "old", kind="teacher", layout="flat")
    data = json.loads((folder / META_FILE).read_text())
    assert data["network"].pop("face_attention") == "decoupled"
    (folder / META_FILE).write_text(json.dumps(data))
    old = load_model_folder(folder).net
    assert old.config.face_attention == "concat" and old.decoupled_face_tokens == 0
    d = inputs(1, 2, seed=3)
    concat = copy.deepcopy(net)
    concat.config.face_attention = "concat"
    assert torch.equal(_predict(old, d, d["face"]), _predict(concat, d, d["face"]))
    assert not torch.equal(_predict(old, d, d["face"]), _predict(net, d, d["face"]))


def test_network_config_is_json_and_rebuilds_the_same_architecture(net):
    from animlcm.models.network import NetworkConfig

    d = json.loads(json.dumps(net.config.to_dict()))
    rebuilt = AnimationNetwork(NetworkConfig.from_dict(d))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_dict({**d, "bogus": 1})


def test_moore_and_champ_layouts_match(shared_dir):
    """Pose guider (Moore) and guidance encoders (Champ), denoiser and reference net: names and shapes."""
    from animlcm.models.presets import empty_network

    layouts = shared_dir / "data" / "teacher_layouts"
    if not layouts.exists():
        pytest.skip("teacher layouts not found")
    sd15 = empty_network(network_config("sd15", pose_maps=("skeleton", "depth"), champ_attention=True))
    sd = {k: list(v.shape) for k, v in sd15.state_dict().items()}

    def layout(name):
        return {k: v[0] for k, v in json.loads((layouts / f"{name}.json").read_text())["params"].items()}

    def under(prefix, drop=()):
        return {
            k[len(prefix) :]: v
            for k, v in sd.items()
            if k.startswith(prefix) and not any(x in k for x in drop)
        }

    champ = layout("champ_guidance_encoder_depth")
    assert under("pose_guider.encoders.depth.") == champ
    moore_pg = layout("moore_pose_guider")
    assert {k: v for k, v in champ.items() if k in moore_pg} == moore_pg  # Moore's 16 keys are Champ's base
    assert under("reference_unet.") == layout("moore_reference_unet")
    assert under("unet.", drop=("motion_modules",)) == layout("moore_denoising_unet")


def test_gradients_reach_every_trainable_path(net):
    """Reference net (via the injected K/V), CLIP, face projector, aux head and the pose guider's output."""
    train = copy.deepcopy(net).train()
    d = inputs(1, 2)
    cond = train.encode_conditioning(d["ref"], d["ref_latent"], d["face"])
    out, aux = train(d["x"], d["t"], d["pose"], cond, return_aux=True)
    (out.square().mean() + aux.square().mean()).backward()

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    for part in (
        train.unet,
        train.reference_unet.down_blocks,
        train.image_encoder,
        train.face_projector,
        train.aux_head,
        train.pose_guider.encoders["skeleton"].conv_out,
    ):
        assert has_grad(part)

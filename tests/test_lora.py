"""LoRA through peft: target layers, enable/disable, merge, save -> load round trips (file, folder)."""

from __future__ import annotations

import copy

import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.models.io import load_model_folder, save_model_folder
from animlcm.models.lora import add_lora, has_lora, load_lora, merge_lora, save_lora, set_lora_enabled
from animlcm.models.presets import tiny_network


@pytest.fixture(scope="module")
def base():
    return tiny_network(seed=5, aux_head=True)


@pytest.fixture(scope="module")
def data(base):
    g = torch.Generator().manual_seed(0)
    ref, lat = torch.rand(1, 3, 128, 128, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    with torch.no_grad():
        cond = base.encode_conditioning(ref, lat, torch.randn(1, 4, 32, 32, generator=g))
    x, pose = (
        torch.randn(1, 4, 2, 16, 16, generator=g),
        {"skeleton": torch.rand(1, 3, 2, 128, 128, generator=g)},
    )
    return x, torch.tensor([700]), pose, cond


def run(net, data, temporal=True):
    with torch.no_grad():
        return net(*data, temporal=temporal)


@pytest.fixture(scope="module")
def student(base):
    net = copy.deepcopy(base)
    add_lora(net, rank=4, layers="spatial")
    with torch.no_grad():  # peft starts lora_B at zero; give the adapter an effect
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return net


def test_targets_spatial_or_all(base):
    spatial = copy.deepcopy(base)
    names = add_lora(spatial, rank=4, layers="spatial")
    assert names and all("lora_" in n and n.startswith("unet.") for n in names)
    assert not any("motion_modules" in n for n in names)
    assert any(".attn1." in n for n in names) and any(".attn2." in n for n in names)
    everything = copy.deepcopy(base)
    all_names = add_lora(everything, rank=4, layers="all")
    assert any("motion_modules" in n for n in all_names) and len(all_names) > len(names)
    with pytest.raises(AnimlcmError, match="already"):
        add_lora(everything)


def _layers(names: list[str]) -> set[str]:
    """The LoRA-wrapped layer types: the module name before ``.lora_A`` / ``.lora_B``, without indices."""
    kinds = set()
    for n in names:
        module = n.split(".lora_")[0]
        kinds.add(".".join([p for p in module.split(".") if not p.isdigit()][-3:]))
    return kinds


def test_lcm_lora_target_set_or_attention_only(base):
    """LCM-LoRA's layers (diffusers' LCM-LoRA script, AnimateLCM): attention, feed-forward, proj_in/out and
    convolutions; ``attention`` keeps q/k/v/out only. Neither touches the motion modules."""
    full = copy.deepcopy(base)
    full_names = add_lora(full, rank=4, targets="all")
    attn = copy.deepcopy(base)
    attn_names = add_lora(attn, rank=4, targets="attention")
    assert not any("motion_modules" in n for n in full_names + attn_names)
    kinds = _layers(full_names)
    for wanted in ("attn1.to_q", "attn2.to_v", "attn1.to_out", "ff.net.proj", "ff.net", "attentions.proj_in",
                   "attentions.proj_out", "resnets.conv1", "resnets.conv2", "resnets.time_emb_proj",
                   "downsamplers.conv", "upsamplers.conv"):  # fmt: skip
        assert any(k.endswith(wanted) for k in kinds), (wanted, sorted(kinds))
    assert {k.split(".")[-1] for k in _layers(attn_names)} <= {"to_q", "to_k", "to_v", "to_out"}
    assert set(attn_names) < set(full_names)
    with pytest.raises(AnimlcmError, match="--lora-targets convs"):
        add_lora(copy.deepcopy(base), rank=4, targets="convs")


def test_fresh_lora_is_identity_and_disabled_lora_is_the_base(base, student, data):
    fresh = copy.deepcopy(base)
    add_lora(fresh, rank=4)
    assert torch.allclose(run(fresh, data), run(base, data), atol=1e-5)  # B = 0 (float noise only)
    with_lora = run(student, data)
    assert (with_lora - run(base, data)).abs().max() > 1e-4
    set_lora_enabled(student, False)
    try:
        # same weights, same ops; only float-summation noise (GEMM results depend on buffer alignment)
        assert torch.allclose(run(student, data), run(base, data), atol=1e-5)
        assert torch.allclose(run(student, data, temporal=False), run(base, data, temporal=False), atol=1e-5)
    finally:
        set_lora_enabled(student, True)
    assert torch.allclose(run(student, data), with_lora, atol=1e-5)


def test_spatial_mode_sees_the_adapter(base, student, data):
    assert (run(student, data, temporal=False) - run(base, data, temporal=False)).abs().max() > 1e-4


def test_lora_file_round_trip_is_exact(base, student, data, tmp_path):
    path = save_lora(student, tmp_path / "lora")
    assert path.name.endswith(".safetensors")
    other = copy.deepcopy(base)
    load_lora(other, tmp_path / "lora")
    a = {k: v for k, v in student.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in other.state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.allclose(run(other, data), run(student, data), atol=1e-5)


def test_lora_student_folder_round_trip(base, student, data, tmp_path):
    teacher = save_model_folder(base, None, tmp_path / "teacher")
    with pytest.raises(AnimlcmError, match="base_teacher"):
        save_model_folder(student, None, tmp_path / "bad", kind="student", lora=True)
    with pytest.raises(AnimlcmError, match="unmerged LoRA"):
        save_model_folder(student, None, tmp_path / "bad", kind="student")
    meta = {"base_teacher": str(teacher), "method": "animatelcm", "timesteps": [999, 759, 499, 259]}
    d = save_model_folder(student, None, tmp_path / "student", kind="student", lora=True, meta=meta)
    assert (d / "lora" / "pytorch_lora_weights.safetensors").exists() and not (
        d / "model.safetensors"
    ).exists()
    loaded = load_model_folder(d)
    assert loaded.kind == "student" and loaded.meta["method"] == "animatelcm" and has_lora(loaded.net)
    lora_a = {k: v for k, v in student.state_dict().items()}
    lora_b = loaded.net.state_dict()
    assert lora_a.keys() == lora_b.keys() and all(torch.equal(lora_a[k], lora_b[k]) for k in lora_a)
    assert torch.allclose(run(loaded.net, data), run(student, data), atol=1e-5)
    from animlcm.models.teacher import folder_info

    info = folder_info(d)
    assert info.lora and info.kind == "student"
    assert info.counts["lora"] == sum(p.numel() for n, p in student.named_parameters() if "lora_" in n)


def test_merge_gives_the_lora_output_without_lora_layers(base, student, data):
    merged = copy.deepcopy(student)
    merge_lora(merged)
    assert not has_lora(merged) and not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(run(merged, data), run(student, data), atol=1e-4)
    # a merged student is a plain network again: same state-dict keys as the base
    assert list(merged.state_dict()) == list(base.state_dict())

"""Moore-AnimateAnyone / Champ import and export without real weights.

Source state dicts carry exactly the tensor names of ``shared/data/teacher_layouts`` (the teachers' own code,
SD1.5 size) at a reduced width with SD1.5's block structure (4 down blocks, 2 layers each, 8 heads, width
32-64-128-128), each tensor a distinct seeded pattern. An independent oracle (the README's rules, written
out here) says where each tensor must land; export must give the files back bit for bit.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.interop import layouts
from animlcm.interop.importer import build_teacher_network, import_into, teacher_network_config
from animlcm.interop.layouts import FORMATS
from animlcm.interop.mapping import SourceFile, export_tensors, match_sources

REDUCED_UNET2D = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 128, 128],  # in != out exactly where SD1.5 has conv_shortcut
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=16,
    attention_head_dim=8,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
REDUCED_CLIP = dict(
    hidden_size=32, intermediate_size=37, projection_dim=16, num_hidden_layers=1, num_attention_heads=4,
    image_size=32, patch_size=8,
)  # fmt: skip
REDUCED_GUIDER = (8, 16, 24, 32)  # Moore/Champ: (16, 32, 96, 256)

# The layout files of each checkpoint file, per format.
LAYOUT_FILES = {
    "moore-aa": {
        "denoising_unet": "moore_denoising_unet.json",
        "reference_unet": "moore_reference_unet.json",
        "motion_module": "moore_motion_module.json",
        "pose_guider": "moore_pose_guider.json",
    },
    "champ": {
        "denoising_unet": "champ_denoising_unet.json",
        "reference_unet": "champ_reference_unet.json",
        "motion_module": "champ_motion_module.json",
        **{
            f"guidance_encoder_{t}": f"champ_guidance_encoder_{t}.json"
            for t in ("dwpose", "depth", "normal", "semantic_map")
        },
    },
}
ORACLE_MAPS = {
    "pose_guider": "skeleton", "guidance_encoder_dwpose": "skeleton", "guidance_encoder_depth": "depth",
    "guidance_encoder_normal": "normal", "guidance_encoder_semantic_map": "semantic",
}  # fmt: skip


def oracle_target(stem: str, key: str) -> str:
    """Where a source tensor must land, from the teacher_layouts README (independent of animlcm.interop)."""
    if stem == "reference_unet":
        return "reference_unet." + key
    if stem in ORACLE_MAPS:
        return f"pose_guider.encoders.{ORACLE_MAPS[stem]}.{key}"
    if "motion_modules" not in key:
        return "unet." + key
    if key.endswith(".pos_encoder.pe"):  # one diffusers table per transformer block
        key = key.rsplit(".attention_blocks.", 1)[0].replace(".temporal_transformer", "") + ".pos_embed.pe"
        return "unet." + key
    for old, new in ((".norms.0", ".norm1"), (".norms.1", ".norm2"), (".ff_norm", ".norm3"),
                     (".attention_blocks.0", ".attn1"), (".attention_blocks.1", ".attn2"),
                     (".temporal_transformer", "")):  # fmt: skip
        key = key.replace(old, new)
    return "unet." + key


def pattern(name: str, shape: torch.Size) -> torch.Tensor:
    """A distinct seeded pattern per tensor name."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(shape, generator=g)


def find_layouts(shared_dir: Path) -> Path:
    d = shared_dir / "data" / "teacher_layouts"
    if not (d / "moore_denoising_unet.json").exists():
        pytest.skip(f"teacher layouts not found at {d}")
    return d


@pytest.fixture(scope="module")
def layout_dir(shared_dir: Path) -> Path:
    return find_layouts(shared_dir)


def layout_params(layout_dir: Path, name: str) -> dict[str, list]:
    return json.loads((layout_dir / name).read_text())["params"]


def stub_files(fmt_name: str, layout_dir: Path, widths=REDUCED_GUIDER) -> list[SourceFile]:
    """Just enough of the guider files (names, conv widths) to size a network."""
    fmt = FORMATS[fmt_name]
    out = []
    for stem, layout in LAYOUT_FILES[fmt_name].items():
        spec = fmt.spec(stem)
        tensors = {}
        if spec.part == "guider":
            tensors = {k: torch.zeros(0) for k in layout_params(layout_dir, layout)}
            tensors["conv_in.weight"] = torch.zeros(widths[0], 3, 3, 3)
            for i, w in enumerate(widths[1:]):
                tensors[f"blocks.{2 * i + 1}.weight"] = torch.zeros(w, widths[i], 3, 3)
        out.append(SourceFile(spec, Path(f"{stem}.pth"), tensors))
    return out


def reduced_network(fmt_name: str, layout_dir: Path, seed: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**REDUCED_CLIP))
        return build_teacher_network(stub_files(fmt_name, layout_dir), REDUCED_UNET2D, clip, "tiny").eval()


def make_sources(fmt_name: str, layout_dir: Path, shapes_from: dict[str, torch.Tensor]) -> dict[str, dict]:
    """``{stem: {layout key: tensor}}``: the layout's names, the reduced network's shapes, distinct patterns;
    the position tables hold the real sinusoid (as released files do)."""
    out = {}
    for stem, layout in LAYOUT_FILES[fmt_name].items():
        tensors = {}
        for key in layout_params(layout_dir, layout):
            target = shapes_from[oracle_target(stem, key)]
            tensors[key] = target.clone() if key.endswith(".pe") else pattern(f"{stem}:{key}", target.shape)
        out[stem] = tensors
    return out


def as_files(fmt_name: str, sources: dict[str, dict]) -> list[SourceFile]:
    fmt = FORMATS[fmt_name]
    return [SourceFile(fmt.spec(stem), Path(f"{stem}.pth"), dict(t)) for stem, t in sources.items()]


@pytest.fixture(scope="module", params=["moore-aa", "champ"])
def case(request, layout_dir):
    """(format, expected-shape network state, source dicts, freshly imported network)."""
    fmt_name = request.param
    shape_net = reduced_network(fmt_name, layout_dir, seed=0)
    sources = make_sources(fmt_name, layout_dir, shape_net.state_dict())
    net = reduced_network(fmt_name, layout_dir, seed=1)
    match = import_into(FORMATS[fmt_name], as_files(fmt_name, sources), net)
    return fmt_name, sources, net, match


# --------------------------------------------------------------------------------------------- key sets
@pytest.mark.parametrize("fmt_name", ["moore-aa", "champ"])
def test_full_size_layout_names_map_onto_the_network_exactly(fmt_name, layout_dir):
    """Names do not depend on width: the full-size layout names cover the SD1.5-structured network exactly."""
    net = reduced_network(fmt_name, layout_dir, seed=0)
    target = {k for k in net.state_dict() if layouts.is_covered(k)}
    fmt = FORMATS[fmt_name]
    mapped = set()
    for stem, layout in LAYOUT_FILES[fmt_name].items():
        for key in layout_params(layout_dir, layout):
            spec = fmt.spec(stem)
            pe = layouts.source_pe_target(key)
            t = spec.target_prefix + pe if pe else layouts.source_to_target(spec, key)
            assert t == oracle_target(stem, key), key
            mapped.add(t)
    assert mapped == target  # every network tensor filled, nothing left over
    # and the way back gives each file's exact key set
    files = export_tensors(fmt, net.state_dict())
    assert set(files) == set(LAYOUT_FILES[fmt_name])
    for stem, layout in LAYOUT_FILES[fmt_name].items():
        assert set(files[stem]) == set(layout_params(layout_dir, layout)), stem


def test_motion_renames_are_diffusers_own_and_invertible(layout_dir):
    keys = layout_params(layout_dir, "moore_motion_module.json")
    renamed = {layouts.motion_key_to_diffusers(k) for k in keys if not k.endswith(".pe")}
    assert len(renamed) == 546  # one to one
    for k in keys:
        if not k.endswith(".pe"):
            assert layouts.motion_key_from_diffusers(layouts.motion_key_to_diffusers(k)) == k
    k = "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.ff_norm.weight"
    assert (
        layouts.motion_key_to_diffusers(k) == "up_blocks.3.motion_modules.2.transformer_blocks.0.norm3.weight"
    )


@pytest.mark.parametrize("fmt_name", ["moore-aa", "champ"])
def test_full_size_parameter_counts(fmt_name, layout_dir):
    """What `teacher info` shows for an imported SD1.5-size teacher: 1.31 B denoiser with motion modules,
    0.86 B reference net; the meta-device network of the import config has exactly the layout's counts."""
    from transformers import CLIPVisionConfig

    from animlcm.models.network import parameter_counts
    from animlcm.models.presets import SD15_CLIP, SD15_UNET2D, empty_network

    def count(name):
        return sum(
            math.prod(s) for k, (s, _) in layout_params(layout_dir, name).items() if not k.endswith(".pe")
        )

    names = LAYOUT_FILES[fmt_name]
    denoiser = count(names["denoising_unet"]) + count(names["motion_module"])
    reference = count(names["reference_unet"])
    assert round(denoiser / 1e9, 2) == 1.31 and round(reference / 1e9, 2) == 0.86

    files = stub_files(fmt_name, layout_dir, widths=(16, 32, 96, 256))
    clip = CLIPVisionConfig(**SD15_CLIP).to_dict()
    counts = parameter_counts(empty_network(teacher_network_config(files, SD15_UNET2D, clip, "sd15")))
    assert counts["unet (spatial)"] + counts["unet (motion modules)"] == denoiser
    assert counts["reference_unet"] == reference
    guiders = sum(count(names[f.spec.stem]) for f in files if f.spec.part == "guider")
    assert counts["pose_guider"] == guiders


# --------------------------------------------------------------------------------------------- import
def test_every_value_lands_where_the_mapping_says(case):
    fmt_name, sources, net, match = case
    state = net.state_dict()
    n = 0
    for stem, tensors in sources.items():
        for key, value in tensors.items():
            assert torch.equal(state[oracle_target(stem, key)], value), f"{stem}:{key}"
            n += 1
    assert n == sum(len(t) for t in sources.values())
    assert match.position_tables == 42 and not match.extras


def test_source_patterns_are_distinct(case):
    _, sources, _, _ = case
    seen = set()
    for stem, tensors in sources.items():
        for key, value in tensors.items():
            if not key.endswith(".pe"):
                digest = (tuple(value.shape), value.numpy().tobytes()[:64])
                assert digest not in seen, f"{stem}:{key}"
                seen.add(digest)


def test_export_round_trip_is_exact(case):
    fmt_name, sources, net, _ = case
    files = export_tensors(FORMATS[fmt_name], net.state_dict())
    assert files.keys() == sources.keys()
    for stem, tensors in sources.items():
        assert files[stem].keys() == tensors.keys(), stem
        for key, value in tensors.items():
            assert files[stem][key].dtype == value.dtype and torch.equal(files[stem][key], value), (
                f"{stem}:{key}"
            )


# --------------------------------------------------------------------------------------------- strictness
def _expect_error(fmt_name, sources, net, *needles):
    with pytest.raises(AnimlcmError) as err:
        match_sources(FORMATS[fmt_name], as_files(fmt_name, sources), net.state_dict(), "W")
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _copy(sources):
    return {stem: dict(t) for stem, t in sources.items()}


def test_renamed_key_fails_naming_both_sides(case):
    fmt_name, sources, net, _ = case
    bad = _copy(sources)
    bad["denoising_unet"]["conv_in.weights"] = bad["denoising_unet"].pop("conv_in.weight")
    _expect_error(
        fmt_name,
        bad,
        net,
        "denoising_unet.pth:conv_in.weights",
        "unet.conv_in.weight",
        "1 source",
        "1 network",
    )


def test_missing_key_fails_naming_it(case):
    fmt_name, sources, net, _ = case
    bad = _copy(sources)
    del bad["motion_module"]["mid_block.motion_modules.0.temporal_transformer.proj_out.bias"]
    _expect_error(fmt_name, bad, net, "unet.mid_block.motion_modules.0.proj_out.bias", "no source tensor")


def test_extra_key_fails_naming_it(case):
    fmt_name, sources, net, _ = case
    bad = _copy(sources)
    guider = "pose_guider" if fmt_name == "moore-aa" else "guidance_encoder_dwpose"
    bad[guider]["blocks.6.weight"] = torch.zeros(3)
    _expect_error(fmt_name, bad, net, f"{guider}.pth:blocks.6.weight", "match no network parameter")


def test_wrong_shape_and_bad_position_table_fail(case):
    fmt_name, sources, net, _ = case
    bad = _copy(sources)
    bad["reference_unet"]["conv_in.bias"] = torch.zeros(5)
    pe = next(k for k in bad["motion_module"] if k.endswith(".pe"))
    bad["motion_module"][pe] = bad["motion_module"][pe] + 1.0
    _expect_error(
        fmt_name, bad, net, "reference_unet.pth:conv_in.bias 5", "shapes differ", pe, "position tables"
    )


def test_same_tensor_in_two_files_must_agree(case):
    """A denoising_unet saved with its motion modules may sit beside motion_module.pth: same values only."""
    fmt_name, sources, net, _ = case
    both = _copy(sources)
    both["denoising_unet"].update(both["motion_module"])  # Moore's *_with_mm layout
    match_sources(FORMATS[fmt_name], as_files(fmt_name, both), net.state_dict())
    key = next(k for k in both["motion_module"] if k.endswith("proj_in.weight"))
    both["denoising_unet"][key] = both["denoising_unet"][key] + 1
    _expect_error(fmt_name, both, net, "given twice", "motion_module.pth")


def test_known_extras_are_kept_and_written_back(layout_dir):
    """Champ's reference UNet may carry conv_norm_out/conv_out (Champ loads strict=False): set aside, not an
    error, and written back on export."""
    fmt = FORMATS["champ"]
    shape_net = reduced_network("champ", layout_dir, seed=0)
    sources = make_sources("champ", layout_dir, shape_net.state_dict())
    c0 = REDUCED_UNET2D["block_out_channels"][0]
    extra = {"conv_norm_out.weight": torch.rand(c0), "conv_norm_out.bias": torch.rand(c0),
             "conv_out.weight": torch.rand(4, c0, 3, 3), "conv_out.bias": torch.rand(4)}  # fmt: skip
    sources["reference_unet"].update(extra)
    match = import_into(fmt, as_files("champ", sources), shape_net)
    assert set(match.extras["reference_unet"]) == set(extra)
    files = export_tensors(fmt, shape_net.state_dict(), match.extras)
    for key, value in sources["reference_unet"].items():
        assert torch.equal(files["reference_unet"][key], value)


def test_export_refuses_a_pose_guider_the_format_cannot_run(case, layout_dir):
    fmt_name, _, net, _ = case
    other = "champ" if fmt_name == "moore-aa" else "moore-aa"
    with pytest.raises(AnimlcmError, match=f"--format {fmt_name}"):
        export_tensors(FORMATS[other], net.state_dict())


# --------------------------------------------------------------------------------------------- files
class _NotATensor:
    pass


def test_pth_read_is_weights_only(tmp_path):
    from animlcm.interop.files import read_state_dict

    torch.save({"a": torch.zeros(2), "b": _NotATensor()}, tmp_path / "x.pth")
    with pytest.raises(AnimlcmError, match="weights_only=True"):
        read_state_dict(tmp_path / "x.pth")
    torch.save([torch.zeros(1)], tmp_path / "y.pth")
    with pytest.raises(AnimlcmError, match="expected a state dict"):
        read_state_dict(tmp_path / "y.pth")


def test_missing_files_are_named(tmp_path):
    from animlcm.interop.importer import read_sources

    torch.save({"conv_in.weight": torch.zeros(1)}, tmp_path / "denoising_unet.pth")
    with pytest.raises(AnimlcmError, match=r"missing reference_unet\.pth, pose_guider\.pth") as err:
        read_sources(FORMATS["moore-aa"], tmp_path)
    assert "denoising_unet.pth" in str(err.value)  # what was found
    with pytest.raises(AnimlcmError, match=r"guidance_encoder_<type>"):
        read_sources(FORMATS["champ"], tmp_path)

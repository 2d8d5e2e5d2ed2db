from dataclasses import dataclass
from pathlib import Path

import pytest

from animlcm.config import SIZES, apply_overrides, config_hash, load_saved_config, resolve_config, save_config
from animlcm.errors import AnimlcmError


@dataclass(frozen=True)
class DemoConfig:
    preset: str = "tiny"
    steps: int = 4
    lr: float = 1e-4
    out: Path | None = None
    sizes: tuple[int, ...] = (1, 2)

    @classmethod
    def from_preset(cls, name):
        return cls(preset=name, steps=4 if name == "tiny" else 8)


def test_preset_then_yaml_then_flags(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("steps: 6\nlr: 1\nsizes: [3, 4]\n")
    cfg = resolve_config(DemoConfig, "sd15", yml, {"lr": None, "out": "x"})
    assert cfg.steps == 6 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.sizes == (3, 4) and cfg.out == Path("x")


def test_unknown_key_names_file_and_key(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("stepz: 6\n")
    with pytest.raises(AnimlcmError, match=r"c.yaml: unknown setting 'stepz'"):
        resolve_config(DemoConfig, "tiny", yml, {})


def test_wrong_type_and_bad_preset():
    with pytest.raises(AnimlcmError, match="expected int"):
        apply_overrides(DemoConfig(), {"steps": "four"}, "cli")
    with pytest.raises(AnimlcmError, match="unknown preset 'huge'"):
        resolve_config(DemoConfig, "huge", None, {})


def test_save_load_roundtrip_and_hash(tmp_path):
    cfg = DemoConfig(steps=7, out=Path("a/b"), sizes=(5,))
    save_config(cfg, tmp_path / "cfg.yaml")
    back = load_saved_config(DemoConfig, tmp_path / "cfg.yaml")
    assert back == cfg
    assert config_hash(cfg) == config_hash(back) != config_hash(DemoConfig())
    assert config_hash(cfg, ["lr"]) == config_hash(DemoConfig(), ["lr"])


def test_sizes():
    assert SIZES["tiny"].latent_hw == (16, 16)
    assert SIZES["sd15"].latent_hw == (96, 64)

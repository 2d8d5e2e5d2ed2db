"""Config plumbing shared by every stage: presets, YAML in/out, CLI overrides, validation.

Each stage defines its own frozen dataclass (e.g. ``ExtractConfig``) with a ``from_preset(name)`` classmethod;
this module only knows how to layer preset -> YAML file -> CLI flags onto such a dataclass and write it back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from animlcm.errors import AnimlcmError

PRESETS = ("tiny", "sd15")


@dataclass(frozen=True)
class PresetSize:
    """Frame and latent geometry of a preset (latents are 4 channels at 1/8 resolution)."""

    height: int
    width: int
    num_frames: int  # frames per training/render clip
    latent_channels: int = 4
    vae_scale: int = 8

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.vae_scale, self.width // self.vae_scale


SIZES = {
    "tiny": PresetSize(height=128, width=128, num_frames=8),
    "sd15": PresetSize(height=768, width=512, num_frames=16),
}

T = TypeVar("T")


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise AnimlcmError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return name


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn a YAML scalar/list into the field's type (tuples stay tuples, paths become Path)."""
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if annotation is Path:
        return Path(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise AnimlcmError(f"{where}: expected a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, where) for v in value)
    if annotation is float and isinstance(value, int):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise AnimlcmError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def apply_overrides(cfg: T, values: dict[str, Any], source: str) -> T:
    """Return ``cfg`` with ``values`` applied; unknown keys fail naming the source and the valid keys.

    ``None`` values are skipped: that is how an unset CLI flag says "keep the config's value".
    """
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in values.items():
        if value is None:
            continue
        key = key.replace("-", "_")
        if key not in names:
            valid = ", ".join(sorted(names))
            raise AnimlcmError(f"{source}: unknown setting '{key}' for {type(cfg).__name__}; valid: {valid}")
        changes[key] = _coerce(value, hints[key], f"{source}: '{key}'")
    return dataclasses.replace(cfg, **changes)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise AnimlcmError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise AnimlcmError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AnimlcmError(f"{path}: a config file must be a mapping of setting: value")
    return data


def resolve_config(cls: type[T], preset: str, config_file: Path | None, overrides: dict[str, Any]) -> T:
    """preset defaults <- YAML file <- CLI flags (later wins)."""
    cfg = cls.from_preset(check_preset(preset))  # type: ignore[attr-defined]
    if config_file is not None:
        cfg = apply_overrides(cfg, load_yaml(config_file), str(config_file))
    cfg = apply_overrides(cfg, overrides, "command line")
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def to_plain(cfg: Any) -> dict[str, Any]:
    """A dataclass as plain YAML/JSON types (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # a name of its own: writers never share one
    tmp.write_text(yaml.safe_dump(to_plain(cfg), sort_keys=False))
    tmp.replace(path)


def load_saved_config(cls: type[T], path: Path) -> T:
    """Rebuild a dataclass from a YAML file written by ``save_config`` (strict: unknown keys fail)."""
    data = load_yaml(path)
    base = cls.from_preset(check_preset(data.get("preset", "tiny")))  # type: ignore[attr-defined]
    return apply_overrides(base, data, str(path))


def config_hash(cfg: Any, fields: typing.Iterable[str] | None = None) -> str:
    """Stable short hash of (some of) a config's fields: decides whether cached work is still valid."""
    plain = to_plain(cfg)
    if fields is not None:
        plain = {k: plain[k] for k in fields}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]

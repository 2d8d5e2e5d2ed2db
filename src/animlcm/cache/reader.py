"""Reading the cache: the one typed reader that distill, render, eval and the tests use.

``CacheReader(root)`` validates the manifest and schema version; ``open(name)`` gives a ``VideoEntry`` whose
HDF5 handle opens lazily on first data access and re-opens after a fork, so a ``VideoEntry`` (or the
reader) can be built in the main process and used inside DataLoader workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from animlcm.cache import schema
from animlcm.cache.writer import STATUS_OK, Manifest, ManifestEntry
from animlcm.errors import AnimlcmError


class VideoEntry:
    """One cached video. ``idx`` is anything h5py accepts: an int, a slice, or a sorted int array."""

    def __init__(self, path: Path, name: str) -> None:
        import h5py

        self.path = Path(path)
        self.name = name
        self._h5: Any = None
        self._pid = -1
        self._memory: dict[str, np.ndarray] = {}
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
                self.latent_attrs = {k: _plain(v) for k, v in f[schema.LATENTS].attrs.items()}
                self.motion_attrs = {k: _plain(v) for k, v in f[schema.MOTION_MASK].attrs.items()}
                missing = [p for p in schema.REQUIRED if p not in f]
                frames_shape = f[schema.FRAMES].shape
                self.latent_shape: tuple[int, int, int] = tuple(f[schema.LATENTS].shape[1:])  # type: ignore[assignment]
                self.maps: list[str] = ["skeleton"] + [
                    m for m in schema.SMPL_MAPS if schema.smpl_map_path(m) in f
                ]
                self.num_keypoints = int(f[schema.KEYPOINTS].shape[1])
                self.has_parts = schema.PART_LABELS in f
                # label value i is part_names[i] (() when the video had no part labels)
                self.part_names: tuple[str, ...] = (
                    tuple(str(n) for n in _plain(f[schema.PART_LABELS].attrs["names"]))
                    if self.has_parts
                    else ()
                )
        except (OSError, KeyError) as exc:
            raise AnimlcmError(
                f"{self.path}: not a readable animlcm cache entry ({exc}); re-run `animlcm extract`"
            ) from None
        if missing or not self.attrs.get("complete", False):
            raise AnimlcmError(
                f"{self.path}: incomplete cache entry (missing {missing}); re-run `animlcm extract`"
            )
        if self.attrs.get("schema_version") != schema.SCHEMA_VERSION:
            raise AnimlcmError(
                f"{self.path}: schema version {self.attrs.get('schema_version')}, expected "
                f"{schema.SCHEMA_VERSION}; re-run `animlcm extract`"
            )
        self.num_frames, self.height, self.width = (
            int(frames_shape[0]),
            int(frames_shape[1]),
            int(frames_shape[2]),
        )
        self.fps = float(self.attrs.get("fps", 0.0))
        self.attrs.update(
            {
                "vae_id": self.latent_attrs.get("vae_id"),
                "scaling_factor": self.latent_attrs.get("scaling_factor"),
                "motion_delta": self.motion_attrs.get("delta"),
            }
        )

    # -- handle management -------------------------------------------------------------------------
    @property
    def h5(self) -> Any:
        """The open h5py file (opened on first use, and again in a forked child)."""
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> VideoEntry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for spawn-based DataLoader workers
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    # -- data ---------------------------------------------------------------------------------------
    def preload(self, paths: list[str]) -> int:
        """Read these datasets whole into memory (later reads slice the arrays); returns the bytes held.

        Training reads a few frames of every video thousands of times: from memory that costs a numpy
        slice instead of an HDF5 read, and forked DataLoader workers share the pages.
        """
        for path in paths:
            if path not in self._memory and path in self.h5:
                self._memory[path] = np.asarray(self.h5[path][()])
        self.close()
        return sum(a.nbytes for a in self._memory.values())

    def _read(self, path: str, idx: Any) -> np.ndarray:
        held = self._memory.get(path)
        if held is not None:
            return held[idx]
        return np.asarray(self.h5[path][idx])

    def frames(self, idx: Any) -> np.ndarray:
        """uint8 (n, H, W, 3)."""
        return self._read(schema.FRAMES, idx)

    def skeleton(self, idx: Any) -> np.ndarray:
        """uint8 (n, H, W, 3), OpenPose colours."""
        return self._read(schema.SKELETON, idx)

    def guidance(self, map_name: str, idx: Any) -> np.ndarray:
        """uint8 (n, H, W, 3) for one of ``self.maps``."""
        if map_name == "skeleton":
            return self.skeleton(idx)
        if map_name not in self.maps:
            raise AnimlcmError(
                f"{self.path}: no '{map_name}' guidance map (has {', '.join(self.maps)}); "
                "run `animlcm extract --smpl-model DIR` for depth/normal/semantic"
            )
        return self._read(schema.smpl_map_path(map_name), idx)

    def keypoints(self, idx: Any) -> np.ndarray:
        """float32 (n, K, 3): x, y in output pixels, confidence (layout in ``attrs['keypoint_layout']``)."""
        return self._read(schema.KEYPOINTS, idx)

    def pose_found(self, idx: Any) -> np.ndarray:
        return self._read(schema.POSE_FOUND, idx)

    def latents(self, idx: Any) -> np.ndarray:
        """float16 (n, 4, h, w): posterior mean x scaling factor."""
        return self._read(schema.LATENTS, idx)

    def motion_mask(self, idx: Any) -> np.ndarray:
        """bool (n, h, w)."""
        return self._read(schema.MOTION_MASK, idx)

    def face_crop(self, idx: Any) -> np.ndarray:
        """uint8 (n, 256, 256, 3)."""
        return self._read(schema.FACE_CROP, idx)

    def face_box(self, idx: Any) -> np.ndarray:
        """float32 (n, 4): x0, y0, x1, y1 in output pixels."""
        return self._read(schema.FACE_BOX, idx)

    def face_found(self, idx: Any) -> np.ndarray:
        return self._read(schema.FACE_FOUND, idx)

    def part_labels(self, idx: Any) -> np.ndarray:
        """uint8 (n, H, W): body-part label per pixel (names in ``part_names``; synthetic clips only)."""
        if not self.has_parts:
            raise AnimlcmError(
                f"{self.path}: no body-part labels; they come from `animlcm synth` clips (VIDEO.parts.npz) "
                "extracted with this version of `animlcm extract`"
            )
        return self._read(schema.PART_LABELS, idx)

    def smpl_params(self) -> dict[str, np.ndarray]:
        """SMPL parameters per frame ({} when SMPL did not run)."""
        if schema.SMPL_PARAMS not in self.h5:
            return {}
        return {k: np.asarray(v[()]) for k, v in self.h5[schema.SMPL_PARAMS].items()}

    def smpl_valid(self) -> np.ndarray | None:
        return self._read(schema.SMPL_VALID, slice(None)) if schema.SMPL_VALID in self.h5 else None

    def summary(self) -> dict[str, Any]:
        """Rates used by ``animlcm inspect``: pose and face detection rate, motion-mask coverage."""
        n = max(self.num_frames, 1)
        return {
            "pose_rate": float(self.pose_found(slice(None)).sum()) / n,
            "face_rate": float(self.face_found(slice(None)).sum()) / n,
            "motion_coverage": float(self.motion_mask(slice(None)).mean()) if self.num_frames else 0.0,
        }


def _plain(value: Any) -> Any:
    """HDF5 attrs as plain Python (numpy scalars/arrays, bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class CacheReader:
    """A cache folder written by ``animlcm extract``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnimlcmError(
                f"{self.root}: no such cache folder; make one with `animlcm extract VIDEOS --out DIR`"
            )
        if not (self.root / schema.MANIFEST).exists():
            raise AnimlcmError(
                f"{self.root}: not an animlcm cache (no {schema.MANIFEST}); make one with `animlcm extract`"
            )
        self._entries = Manifest(self.root).read()

    @property
    def entries(self) -> list[ManifestEntry]:
        """Every manifest entry (ok and failed), sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def _extracted(self, present: bool) -> list[str]:
        """Names of the status-ok entries whose file is present (``present``) or gone."""
        return [
            e.name
            for e in self.entries
            if e.status == STATUS_OK and (self.root / schema.h5_name(e.name)).exists() == present
        ]

    @property
    def videos(self) -> list[str]:
        """Names of the complete (status ok) videos whose file is present."""
        return self._extracted(present=True)

    @property
    def missing(self) -> list[str]:
        """Names the manifest lists as extracted whose file is gone (deleted or moved since)."""
        return self._extracted(present=False)

    def entry(self, name: str) -> ManifestEntry:
        if name not in self._entries:
            raise AnimlcmError(f"{self.root}: no video named '{name}' in the cache")
        return self._entries[name]

    def open(self, name: str) -> VideoEntry:
        """A ``VideoEntry`` (use as a context manager to close the handle)."""
        entry = self.entry(name)
        if entry.status != STATUS_OK:
            raise AnimlcmError(
                f"{self.root}: video '{name}' failed during extract: {entry.error}; fix or re-encode the "
                "video and re-run `animlcm extract`, or pick another"
            )
        path = self.root / schema.h5_name(name)
        if not path.exists():
            raise AnimlcmError(f"{path}: the file of video '{name}' is missing; re-run `animlcm extract`")
        return VideoEntry(path, name)

    def __len__(self) -> int:
        return len(self.videos)

"""Writing the cache: one HDF5 file per video (atomic rename) and a shared, locked ``manifest.json``.

Concurrency: several shard processes (or machines on a shared filesystem with working ``flock``) may
write into one cache folder. Each video belongs to exactly one shard, so video files never collide; the
manifest is the only shared file. Every update takes an exclusive ``fcntl.flock`` on
``manifest.json.lock``, re-reads ``manifest.json``, changes one entry and rewrites it atomically (write a
per-process temporary file, then ``os.replace``). Readers need no lock: a rename is atomic, so they see
the old or the new manifest, never a torn one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from animlcm.cache import schema
from animlcm.errors import AnimlcmError

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass
class ManifestEntry:
    """One video's line in ``manifest.json``."""

    name: str
    status: str  # "ok" | "failed"
    source: str
    frames: int = 0
    fps: float = 0.0
    config_hash: str = ""
    tool_version: str = ""
    error: str | None = None  # one line, only for failed entries
    source_size: int = 0  # with source_mtime: tells whether a failed input changed since
    source_mtime: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Manifest:
    """``manifest.json`` of a cache folder: read freely, update under a file lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / schema.MANIFEST

    def read(self) -> dict[str, ManifestEntry]:
        """All entries by name ({} when there is no manifest yet)."""
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise AnimlcmError(
                f"{self.path}: not valid JSON ({exc.msg}); delete it to rebuild the cache"
            ) from None
        version = data.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            raise AnimlcmError(
                f"{self.path}: cache schema version {version}, this animlcm reads {schema.SCHEMA_VERSION}; "
                "re-run `animlcm extract` into a new folder"
            )
        return {name: ManifestEntry.from_dict(e) for name, e in data.get("videos", {}).items()}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / schema.MANIFEST_LOCK, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, entries: dict[str, ManifestEntry]) -> None:
        data = {
            "schema_version": schema.SCHEMA_VERSION,
            "videos": {name: entries[name].to_dict() for name in sorted(entries)},
        }
        _atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")

    def update(self, entry: ManifestEntry) -> None:
        """Insert or replace one entry (read-modify-write under the lock, so other shards' entries stay)."""
        entry.updated = time.time()
        with self._locked():
            entries = self.read()
            entries[entry.name] = entry
            self._write(entries)

    def cleanup(self) -> None:
        """Delete temporary manifests left by killed processes (under the lock, so none is in use)."""
        with self._locked():
            for tmp in self.root.glob(f"{schema.MANIFEST}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        with self._locked():
            entries = self.read()
            if entries.pop(name, None) is not None:
                self._write(entries)


class VideoWriter:
    """Writes ``NAME.h5.tmp``; ``commit()`` marks it complete and renames it to ``NAME.h5``.

    Leaving the ``with`` block without ``commit()`` (an exception) deletes the temporary file; a killed
    process leaves it behind, and the next run deletes it before redoing the video.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.tmp_path = self.root / schema.tmp_name(name)
        self.path = self.root / schema.h5_name(name)
        self._file = None

    def __enter__(self) -> VideoWriter:
        import h5py

        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_path.unlink(missing_ok=True)
        self._file = h5py.File(self.tmp_path, "w")
        self._file.attrs["schema_version"] = schema.SCHEMA_VERSION
        self._file.attrs["complete"] = False
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.tmp_path.unlink(missing_ok=True)

    def write(self, path: str, array: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        """One dataset; image-like ones are chunked per frame and LZF-compressed."""
        assert self._file is not None, "use VideoWriter as a context manager"
        array = np.asarray(array)
        kwargs: dict[str, Any] = {}
        if array.ndim >= 3 and len(array) > 0 and array.dtype == np.uint8:
            kwargs = dict(chunks=(1, *array.shape[1:]), compression="lzf")
        ds = self._file.create_dataset(path, data=array, **kwargs)
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value

    def set_attrs(self, **attrs: Any) -> None:
        assert self._file is not None
        for key, value in attrs.items():
            self._file.attrs[key] = value

    def commit(self) -> Path:
        """Mark complete, close, fsync and rename into place."""
        assert self._file is not None
        self._file.attrs["complete"] = True
        self._file.flush()
        self._file.close()
        self._file = None
        with open(self.tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp_path, self.path)
        return self.path

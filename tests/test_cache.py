"""The cache: atomic writer, locked manifest shared by processes, and the typed reader."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import numpy as np
import pytest

from animlcm.cache import CacheReader, Manifest, ManifestEntry, VideoWriter, schema
from animlcm.errors import AnimlcmError

F, H, W = 5, 16, 24


def _write_entry(root, name, maps=(), status="ok"):
    with VideoWriter(root, name) as w:
        w.write(schema.FRAMES, np.full((F, H, W, 3), 7, np.uint8))
        w.write(schema.KEYPOINTS, np.ones((F, 134, 3), np.float32))
        w.write(schema.SKELETON, np.zeros((F, H, W, 3), np.uint8))
        w.write(schema.POSE_FOUND, np.array([1, 1, 0, 1, 1], bool))
        w.write(schema.FACE_CROP, np.zeros((F, 256, 256, 3), np.uint8))
        w.write(schema.FACE_BOX, np.zeros((F, 4), np.float32))
        w.write(schema.FACE_FOUND, np.array([1, 0, 0, 0, 0], bool))
        w.write(
            schema.LATENTS, np.arange(F * 4 * 2 * 3, dtype=np.float16).reshape(F, 4, 2, 3), {"vae_id": "abc"}
        )
        mask = np.zeros((F, 2, 3), bool)
        mask[:, 0, 0] = True
        w.write(schema.MOTION_MASK, mask, {"delta": 0.2})
        w.write(schema.SOURCE_INDEX, np.arange(F))
        for m in maps:
            w.write(schema.smpl_map_path(m), np.zeros((F, H, W, 3), np.uint8))
        w.set_attrs(fps=12.0, config_hash="h")
        w.commit()
    Manifest(root).update(
        ManifestEntry(name=name, status=status, source=f"/videos/{name}.mp4", frames=F, fps=12.0)
    )


def test_round_trip(tmp_path):
    _write_entry(tmp_path, "a", maps=("depth",))
    assert not list(tmp_path.glob("*.tmp"))
    reader = CacheReader(tmp_path)
    assert reader.videos == ["a"]
    with reader.open("a") as v:
        assert (v.num_frames, v.height, v.width, v.fps) == (F, H, W, 12.0)
        assert v.latent_shape == (4, 2, 3)
        assert v.maps == ["skeleton", "depth"]
        assert v.frames(slice(1, 3)).shape == (2, H, W, 3) and v.frames(0)[0, 0, 0] == 7
        assert v.latents(np.array([0, 2])).dtype == np.float16
        assert v.motion_mask(slice(None)).dtype == bool
        assert v.guidance("depth", 0).shape == (H, W, 3)
        assert v.attrs["vae_id"] == "abc"
        assert v.summary() == {"pose_rate": 0.8, "face_rate": 0.2, "motion_coverage": pytest.approx(1 / 6)}
        with pytest.raises(AnimlcmError, match="no 'normal' guidance map"):
            v.guidance("normal", 0)


def test_exception_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path, "b") as w:
            w.write(schema.FRAMES, np.zeros((2, 4, 4, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_reader_errors(tmp_path):
    with pytest.raises(AnimlcmError, match="no such cache folder"):
        CacheReader(tmp_path / "missing")
    with pytest.raises(AnimlcmError, match="not an animlcm cache"):
        CacheReader(tmp_path)
    (tmp_path / schema.MANIFEST).write_text(json.dumps({"schema_version": 999, "videos": {}}))
    with pytest.raises(AnimlcmError, match="schema version 999"):
        CacheReader(tmp_path)


def test_failed_entries_listed_but_not_openable(tmp_path):
    _write_entry(tmp_path, "good")
    Manifest(tmp_path).update(ManifestEntry(name="bad", status="failed", source="/x.mp4", error="x: broken"))
    reader = CacheReader(tmp_path)
    assert reader.videos == ["good"]
    assert [e.name for e in reader.entries] == ["bad", "good"]
    with pytest.raises(AnimlcmError, match="failed during extract: x: broken"):
        reader.open("bad")


def _update_many(args):
    root, worker = args
    m = Manifest(root)
    for i in range(15):
        m.update(ManifestEntry(name=f"w{worker}_{i}", status="ok", source="s"))


def test_manifest_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_update_many, [(tmp_path, w) for w in range(4)])
    assert len(Manifest(tmp_path).read()) == 60
    assert not list(tmp_path.glob("manifest.json.*.tmp"))
    (tmp_path / "manifest.json.12345.tmp").write_text("{")  # left by a killed process
    Manifest(tmp_path).cleanup()
    assert not list(tmp_path.glob("manifest.json.*.tmp")) and len(Manifest(tmp_path).read()) == 60


def _read_in_child(entry):
    return int(entry.frames(0)[0, 0, 0])


def test_entry_survives_pickle_and_fork(tmp_path):
    _write_entry(tmp_path, "a")
    entry = CacheReader(tmp_path).open("a")
    entry.frames(0)  # opens the handle in the parent
    clone = pickle.loads(pickle.dumps(entry))
    assert clone.frames(0)[0, 0, 0] == 7
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_read_in_child, [entry, entry]) == [7, 7]
    entry.close()

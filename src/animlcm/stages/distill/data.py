"""Training samples from the cache: clips, references, pose maps, face crops, motion masks, GT latents.

Every sample is a pure function of ``(seed, index)`` (its own ``numpy`` generator), so the data stream is
the same with any number of DataLoader workers, and resuming only needs the position in the stream: that
is what makes ``--resume`` bit-exact. Under multi-process training each process reads its own stride of
the stream (``PositionSampler``), so no two processes see the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from animlcm.cache import CacheReader, VideoEntry, schema
from animlcm.errors import AnimlcmError


def _image(a: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float [0, 1] channels first: (3, H, W) or (3, F, H, W) for a stack."""
    t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    if t.ndim == 3:
        return t.permute(2, 0, 1).contiguous()
    return t.permute(3, 0, 1, 2).contiguous()  # (F, H, W, 3) -> (3, F, H, W)


def check_cache(cache: Path) -> CacheReader:
    """A cache to train on: a readable manifest, every finished video's file there, at least one video.

    Cheap (the manifest and a directory listing), so training commands run it before any model loads."""
    reader = CacheReader(cache)
    gone = reader.missing
    if gone:  # training on what is left would silently change the data set
        shown = ", ".join(schema.h5_name(n) for n in gone[:3]) + (" ..." if len(gone) > 3 else "")
        raise AnimlcmError(
            f"{cache}: {len(gone)} extracted video file(s) are missing ({shown}); re-run `animlcm "
            "extract` on the same videos with this --out (it redoes only those)"
        )
    if not reader.videos:
        raise AnimlcmError(
            f"{cache}: the cache holds no complete video; run `animlcm extract` on some videos"
        )
    return reader


class DistillDataset(Dataset):
    """Samples of ``num_frames`` frames (1 for the spatial stage) with a stride, and their references.

    An item (tensors; the DataLoader adds the batch dimension):
      ``latents`` (4, F, h, w) GT latents; ``pose`` {map: (3, F, H, W)}; ``motion_mask`` (1, F, h, w);
      ``ref_image`` (3, H, W) in [0, 1] (the CLIP input), ``ref_latent`` (4, h, w) (the reference net input,
      taken from the cached latents of the reference frame), ``ref_face`` (3, 256, 256), ``ref_face_found``
      (only with ``faces``); with ``second_reference`` the same for ``ref2_*`` (another frame of the same
      video: CoSeC's intra-source pair); with ``other_reference`` for ``other_*`` (a frame of another
      video: inter-source).
    """

    def __init__(
        self,
        cache: Path,
        *,
        num_frames: int = 1,
        stride: int = 1,
        maps: tuple[str, ...] = ("skeleton",),
        second_reference: bool = False,
        other_reference: bool = False,
        motion_delta: float | None = None,
        faces: bool = True,
        preload: bool = False,
        seed: int = 0,
        length: int = 2**62,
    ) -> None:
        self.reader = check_cache(cache)
        names = self.reader.videos
        self.entries: list[VideoEntry] = []
        short = []
        for name in names:
            entry = self.reader.open(name)
            (short if entry.num_frames < num_frames else self.entries).append(entry)
        if not self.entries:
            raise AnimlcmError(
                f"{cache}: every video is shorter than {num_frames} frames "
                f"({', '.join(f'{e.name}: {e.num_frames}' for e in short)}); lower --frames"
            )
        missing = [(e.name, m) for e in self.entries for m in maps if m not in e.maps]
        if missing:
            name, m = missing[0]
            raise AnimlcmError(
                f"{cache}: video '{name}' has no '{m}' guidance map but the network's pose guider needs it; "
                "re-run `animlcm extract --smpl-model DIR`, or use a teacher without that guidance encoder"
            )
        if other_reference and len(self.entries) < 2:
            raise AnimlcmError(
                f"{cache}: CoNS (--cons) needs references from another video but the cache holds one video; "
                "extract more videos or pass --cons 0"
            )
        self.num_frames = num_frames
        self.stride = stride
        self.maps = tuple(maps)
        self.second_reference = second_reference
        self.other_reference = other_reference
        self.motion_delta = motion_delta
        self.faces = faces
        self.seed = seed
        self.length = length
        self.skipped = [e.name for e in short]
        self.preloaded_bytes = 0
        if preload:  # every array a sample can read, once: the hot loop then never touches HDF5
            paths = [schema.FRAMES, schema.LATENTS, schema.MOTION_MASK]
            paths += [schema.SKELETON if m == "skeleton" else schema.smpl_map_path(m) for m in self.maps]
            paths += [schema.FACE_CROP, schema.FACE_FOUND] if faces else []
            self.preloaded_bytes = sum(e.preload(paths) for e in self.entries)

    def __len__(self) -> int:
        return self.length

    # ------------------------------------------------------------------ pieces
    def _clip_indices(self, entry: VideoEntry, rng: np.random.Generator) -> np.ndarray:
        # the widest stride that fits, up to the requested one, so short videos still give full clips
        stride = (
            self.stride
            if self.num_frames == 1
            else min(self.stride, (entry.num_frames - 1) // (self.num_frames - 1))
        )
        span = (self.num_frames - 1) * stride + 1
        start = int(rng.integers(0, entry.num_frames - span + 1))
        return start + stride * np.arange(self.num_frames)

    def _reference(self, entry: VideoEntry, frame: int, prefix: str) -> dict[str, torch.Tensor]:
        item = {
            f"{prefix}_image": _image(entry.frames(frame)),
            f"{prefix}_latent": torch.from_numpy(entry.latents(frame).astype(np.float32)),
        }
        if self.faces:  # 256 px crops: most of a sample's bytes, read only for networks with face tokens
            item[f"{prefix}_face"] = _image(entry.face_crop(frame))
            item[f"{prefix}_face_found"] = torch.tensor(bool(entry.face_found(frame)))
        return item

    def _motion(self, entry: VideoEntry, idx: np.ndarray) -> np.ndarray:
        cached = entry.motion_attrs.get("delta")
        if self.motion_delta is None or (
            cached is not None and abs(float(cached) - self.motion_delta) < 1e-9
        ):
            return entry.motion_mask(idx)
        # a different threshold than the cache's: recompute from each frame and its video neighbours
        from animlcm.stages.extract.motion import motion_mask

        out = []
        for i in idx:
            lo, hi = max(int(i) - 1, 0), min(int(i) + 2, entry.num_frames)
            frames = entry.frames(slice(lo, hi)).astype(np.float32) / 255.0
            out.append(motion_mask(frames, self.motion_delta, entry.latent_shape[1:])[int(i) - lo])
        return np.stack(out)

    # ------------------------------------------------------------------ item
    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        v = int(rng.integers(len(self.entries)))
        entry = self.entries[v]
        idx = self._clip_indices(entry, rng)
        sl = idx if len(idx) > 1 else int(idx[0])
        latents = entry.latents(sl).astype(np.float32).reshape(len(idx), *entry.latent_shape)
        item: dict[str, Any] = {
            "latents": torch.from_numpy(latents).permute(1, 0, 2, 3).contiguous(),  # (4, F, h, w)
            "pose": {
                m: _image(entry.guidance(m, sl).reshape(len(idx), entry.height, entry.width, 3))
                for m in self.maps
            },
            "motion_mask": torch.from_numpy(
                self._motion(entry, idx).reshape(len(idx), *entry.latent_shape[1:])
            )
            .float()
            .unsqueeze(0),
            "video_index": torch.tensor(v),
            "frame_index": torch.from_numpy(idx.astype(np.int64)),
        }
        ref = int(rng.integers(entry.num_frames))
        item.update(self._reference(entry, ref, "ref"))
        if self.second_reference:
            # a different frame when the video has one: the two references must not be identical
            ref2 = int(rng.integers(entry.num_frames - 1)) if entry.num_frames > 1 else 0
            ref2 = ref2 + 1 if entry.num_frames > 1 and ref2 >= ref else ref2
            item.update(self._reference(entry, ref2, "ref2"))
        if self.other_reference:
            o = int(rng.integers(len(self.entries) - 1))
            other = self.entries[o + 1 if o >= v else o]
            item.update(self._reference(other, int(rng.integers(other.num_frames)), "other"))
        return item


class PositionSampler(Sampler[int]):
    """The endless index stream from ``start``; process ``rank`` of ``world`` takes every world-th index
    from ``offset`` on (the global index where this process count took over the stream)."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1, offset: int = 0) -> None:
        self.start, self.rank, self.world, self.offset = int(start), int(rank), int(world), int(offset)

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield self.offset + i * self.world + self.rank
            i += 1

    def __len__(self) -> int:  # endless: DataLoader never asks when iterated manually
        return 2**62


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    start: int,
    rank: int,
    world: int,
    num_workers: int,
    pin_memory: bool,
    offset: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader that continues the stream at sample ``start`` (this process's own count, from the global
    index ``offset``).

    It gets a generator of its own: by default a DataLoader draws its base seed from the global RNG when
    iterated, which would shift the global stream (dropout) between a straight and a resumed run.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=PositionSampler(start, rank, world, offset),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )


def to_device(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Move a (nested) batch to ``device``; floating tensors optionally cast to ``dtype``."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.to(dtype) if dtype is not None and batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: to_device(v, device, dtype) for k, v in batch.items()}
    return batch

"""The cache's on-disk layout: one HDF5 file per video plus ``manifest.json`` (DESIGN section 2).

Inside ``NAME.h5`` (F frames, H x W pixels, latent h = H/8, w = W/8)::

    frames           uint8   (F, H, W, 3)      resized + cropped/padded RGB
    pose/keypoints   float32 (F, K, 3)         x, y in output-frame pixels, confidence (0 = missing);
                                               K and layout in attrs (``openpose134``)
    pose/skeleton    uint8   (F, H, W, 3)      OpenPose/DWPose colour convention
    pose/found       bool    (F,)              a body was detected in the frame
    face/crop        uint8   (F, 256, 256, 3)  square crop with margin (from the source resolution)
    face/box         float32 (F, 4)            x0, y0, x1, y1 in output-frame pixels (zeros when not found)
    face/found       bool    (F,)
    latents          float16 (F, 4, h, w)      VAE mean x scaling factor; attrs vae_id, scaling_factor
    motion/mask      bool    (F, h, w)         DanceLCM eq. 6; attrs delta, source_resolution (H, W)
    source_index     int64   (F,)              frame index in the source video (after fps resampling)
    smpl/{depth,normal,semantic}  uint8 (F, H, W, 3)   optional (only when SMPL ran)
    smpl/params/<name>            float32 (F, ...)     betas, body_pose, global_orient, transl, camera
    smpl/valid                    bool (F,)
    parts/labels     uint8   (F, H, W)         optional, synthetic clips (``VIDEO.parts.npz`` beside the
                                               video): body-part label per pixel, nearest-neighbour into the
                                               output frame (0 = background, also in padding); attrs ``names``

Root attrs: ``schema_version``, ``complete`` (set last, just before the rename), ``name``, ``source``,
``fps``, ``num_frames``, ``height``, ``width``, ``config_hash``, ``tool_version``, ``pose_backend``,
``keypoint_layout``, ``num_keypoints``, ``crop`` (scale, offset_x, offset_y), ``source_resolution``.
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_LOCK = "manifest.json.lock"
SUFFIX = ".h5"
TMP_SUFFIX = ".h5.tmp"

FRAMES = "frames"
KEYPOINTS = "pose/keypoints"
SKELETON = "pose/skeleton"
POSE_FOUND = "pose/found"
FACE_CROP = "face/crop"
FACE_BOX = "face/box"
FACE_FOUND = "face/found"
LATENTS = "latents"
MOTION_MASK = "motion/mask"
SOURCE_INDEX = "source_index"
SMPL_GROUP = "smpl"
SMPL_PARAMS = "smpl/params"
SMPL_VALID = "smpl/valid"
SMPL_MAPS = ("depth", "normal", "semantic")
PART_LABELS = "parts/labels"

FACE_SIZE = 256

DTYPES: dict[str, np.dtype] = {
    FRAMES: np.dtype(np.uint8),
    KEYPOINTS: np.dtype(np.float32),
    SKELETON: np.dtype(np.uint8),
    POSE_FOUND: np.dtype(bool),
    FACE_CROP: np.dtype(np.uint8),
    FACE_BOX: np.dtype(np.float32),
    FACE_FOUND: np.dtype(bool),
    LATENTS: np.dtype(np.float16),
    MOTION_MASK: np.dtype(bool),
    SOURCE_INDEX: np.dtype(np.int64),
}

# Datasets every complete entry has (SMPL ones are optional).
REQUIRED = tuple(DTYPES)

# Image-like datasets are chunked one frame at a time (training reads random frame windows) and
# compressed with LZF: fast to decode, and skeleton maps shrink ~20x.
IMAGE_DATASETS = (FRAMES, SKELETON, FACE_CROP)


def h5_name(name: str) -> str:
    return name + SUFFIX


def tmp_name(name: str) -> str:
    return name + TMP_SUFFIX


def smpl_map_path(map_name: str) -> str:
    return f"{SMPL_GROUP}/{map_name}"

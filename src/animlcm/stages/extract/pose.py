"""Pose backends. Each gives keypoints in the ``openpose134`` layout (see ``skeleton``) in the pixels of
the frames it is handed; missing points have confidence 0.

- ``mediapipe``: Holistic(model_complexity=1), embedded in the wheel (body 33 -> COCO-18 + feet, hands 21,
  face mesh 468 -> 68 iBUG points). Runs in video mode (tracking), so one instance per video.
- ``dwpose``: DWPose's two ONNX models (``yolox_l.onnx`` + ``dw-ll_ucoco_384.onnx``) through rtmlib
  (Apache-2.0). The ``dwpose`` PyPI package is never imported (network and TLS side effects on import).
- ``groundtruth``: ``VIDEO_STEM.pose.npz`` beside the video (``keypoints`` float32 (F, 18, 3), source
  pixels, COCO-18 order), written by the synthetic-world generator.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from animlcm.errors import AnimlcmError
from animlcm.stages.extract import skeleton

DWPOSE_REPO = "yzd-v/DWPose"
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")

# MediaPipe Pose (33) index for each OpenPose COCO-18 point; the neck (1) is the shoulders' midpoint.
_MP_BODY = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25, 13: 27,
            14: 5, 15: 2, 16: 8, 17: 7}  # fmt: skip
# feet (18-23: l_big_toe, l_small_toe, l_heel, r_big_toe, r_small_toe, r_heel); MediaPipe has no small toe
_MP_FEET = {18: 31, 20: 29, 21: 32, 23: 30}
# MediaPipe face mesh (468) index for each of the 68 iBUG points (jaw, brows, nose, eyes, lips).
MP_FACE_68 = [
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
]  # fmt: skip


class PoseBackend(Protocol):
    name: str

    def __call__(self, frames: np.ndarray, source_index: np.ndarray) -> np.ndarray:
        """uint8 RGB (b, h, w, 3) -> float32 (b, 134, 3) in the pixels of ``frames``."""
        ...

    def close(self) -> None: ...


# C++ log lines MediaPipe prints on every graph start; nothing a user can act on.
_NOISE = (
    "inference_feedback_manager",
    "XNNPACK delegate",
    "absl::InitializeLog",
    "GetPrototype",
    "warnings.warn(",
)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop MediaPipe's C++ log chatter (its absl "W0000 ..." lines ignore every Python-side switch).

    File descriptor 2 goes to a temporary file for the duration; afterwards every line that is not known
    noise is replayed to the real stderr, so genuine errors still show.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not any(n in line for n in _NOISE):
                    sys.stderr.write(line)


def import_mediapipe():
    """``mediapipe``, with its protobuf warnings and glog chatter turned down (for readable progress)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
    try:
        import mediapipe as mp
    except ImportError:
        raise AnimlcmError(
            "mediapipe is not installed: pip install --no-deps mediapipe==0.10.14 (or use --pose dwpose)"
        ) from None
    return mp


def _landmarks(lms, width: int, height: int, use_visibility: bool) -> np.ndarray:
    arr = np.array(
        [(p.x * width, p.y * height, p.visibility if use_visibility else 1.0) for p in lms.landmark]
    )
    return arr.astype(np.float32)


class MediaPipePose:
    """MediaPipe Holistic (legacy ``mediapipe.solutions`` API: works offline with model_complexity=1)."""

    name = "mediapipe"

    def __init__(self) -> None:
        mp = import_mediapipe()
        self.world_landmarks: list[np.ndarray] = []  # (33, 3) per processed frame, zeros where none
        with quiet_native_stderr():
            self._holistic = mp.solutions.holistic.Holistic(
                static_image_mode=False,
                model_complexity=1,
                smooth_landmarks=True,
                refine_face_landmarks=False,
            )

    def __call__(self, frames: np.ndarray, source_index: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), skeleton.NUM_KEYPOINTS, 3), np.float32)
        with quiet_native_stderr():
            results = [self._holistic.process(np.ascontiguousarray(frame)) for frame in frames]
        for i, (frame, res) in enumerate(zip(frames, results, strict=True)):
            h, w = frame.shape[:2]
            world = np.zeros((33, 3), np.float32)
            if res.pose_world_landmarks is not None:  # metres, hip-centred: helps the SMPL fit with depth
                world = np.array([(p.x, p.y, p.z) for p in res.pose_world_landmarks.landmark], np.float32)
            self.world_landmarks.append(world)
            if res.pose_landmarks is not None:
                body = _landmarks(res.pose_landmarks, w, h, use_visibility=True)
                for op, mp_i in {**_MP_BODY, **_MP_FEET}.items():
                    out[i, op] = body[mp_i]
                out[i, 1, :2] = (body[11, :2] + body[12, :2]) / 2
                out[i, 1, 2] = min(body[11, 2], body[12, 2])
            if res.face_landmarks is not None:
                out[i, skeleton.FACE] = _landmarks(res.face_landmarks, w, h, False)[MP_FACE_68]
            # Holistic names hands from the person's point of view, as OpenPose does.
            if res.left_hand_landmarks is not None:
                out[i, skeleton.LEFT_HAND] = _landmarks(res.left_hand_landmarks, w, h, False)
            if res.right_hand_landmarks is not None:
                out[i, skeleton.RIGHT_HAND] = _landmarks(res.right_hand_landmarks, w, h, False)
        return out

    def close(self) -> None:
        self._holistic.close()


def resolve_dwpose_weights(folder: Path | None) -> tuple[Path, Path]:
    """The two DWPose ONNX files: from ``folder``, else from the hub (one clear line when offline)."""
    if folder is not None:
        folder = Path(folder)
        paths = [folder / f for f in DWPOSE_FILES]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise AnimlcmError(
                f"{folder}: missing {', '.join(missing)}; get them with "
                f"`huggingface-cli download {DWPOSE_REPO} {' '.join(DWPOSE_FILES)} --local-dir {folder}`"
            )
        return paths[0], paths[1]
    try:
        from huggingface_hub import hf_hub_download

        return tuple(Path(hf_hub_download(DWPOSE_REPO, f)) for f in DWPOSE_FILES)  # type: ignore[return-value]
    except Exception:  # offline, no hub access, or no huggingface_hub: one line for the user
        raise AnimlcmError(
            f"DWPose weights not found and the hub ({DWPOSE_REPO}) is unreachable: download "
            f"{' and '.join(DWPOSE_FILES)} (`huggingface-cli download {DWPOSE_REPO} --local-dir DIR`), pass "
            "--dwpose-weights DIR, or use --pose mediapipe, which needs no download"
        ) from None


class DWPose:
    """DWPose through rtmlib's ``Wholebody`` with local ONNX files; keeps the most confident person."""

    name = "dwpose"

    def __init__(self, weights: Path | None, device: str) -> None:
        det, pose = resolve_dwpose_weights(weights)
        try:
            import onnxruntime
            from rtmlib import Wholebody
        except ImportError:
            raise AnimlcmError(
                "dwpose needs rtmlib and onnxruntime: pip install --no-deps rtmlib==0.0.16 onnxruntime"
            ) from None
        providers = onnxruntime.get_available_providers()
        ort_device = "cuda" if device.startswith("cuda") and "CUDAExecutionProvider" in providers else "cpu"
        if ort_device == "cpu" and _cuda_available():
            warnings.warn(
                "DWPose runs on the CPU although a GPU is present (~100x slower): "
                "pip install onnxruntime-gpu to use it",
                stacklevel=2,
            )
        self._model = Wholebody(
            det=str(det), det_input_size=(640, 640), pose=str(pose), pose_input_size=(288, 384),
            to_openpose=True, backend="onnxruntime", device=ort_device,
        )  # fmt: skip

    def __call__(self, frames: np.ndarray, source_index: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), skeleton.NUM_KEYPOINTS, 3), np.float32)
        for i, frame in enumerate(frames):
            keypoints, scores = self._model(np.ascontiguousarray(frame[..., ::-1]))  # rtmlib wants BGR
            if len(keypoints) == 0:
                continue
            best = int(np.argmax(scores[:, skeleton.BODY].mean(axis=1)))
            out[i, :, :2] = keypoints[best]
            out[i, :, 2] = np.clip(scores[best], 0.0, 1.0)
        return out

    def close(self) -> None:
        pass


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def groundtruth_path(video: Path) -> Path:
    return Path(video).with_name(Path(video).stem + ".pose.npz")


class GroundTruthPose:
    """Keypoints stored beside a synthetic video; ignores the pixels."""

    name = "groundtruth"

    def __init__(self, video: Path, num_src_frames: int, scale: float = 1.0) -> None:
        path = groundtruth_path(video)
        if not path.exists():
            raise AnimlcmError(
                f"{video}: --pose groundtruth needs {path.name} beside the video (from `animlcm synth`); "
                "use --pose mediapipe for real videos"
            )
        try:
            body = np.load(path)["keypoints"].astype(np.float32)
        except Exception as exc:
            raise AnimlcmError(
                f"{path}: cannot read 'keypoints' ({type(exc).__name__}); regenerate it"
            ) from None
        if body.ndim != 3 or body.shape[1:] != (18, 3) or len(body) < num_src_frames:
            raise AnimlcmError(
                f"{path}: keypoints shape {body.shape}, expected ({num_src_frames}, 18, 3); regenerate it"
            )
        body[..., :2] *= scale  # into the pixels of the (detection-sized) frames, like the other backends
        self._keypoints = skeleton.pad_layout(body)

    def __call__(self, frames: np.ndarray, source_index: np.ndarray) -> np.ndarray:
        return self._keypoints[source_index]

    def close(self) -> None:
        pass


def make_pose_backend(
    kind: str, video: Path, num_src_frames: int, scale: float, dwpose_weights: Path | None, device: str
) -> PoseBackend:
    """A fresh backend for one video (trackers keep state between frames); ``scale`` = detection / source."""
    if kind == "mediapipe":
        return MediaPipePose()
    if kind == "dwpose":
        return DWPose(dwpose_weights, device)
    if kind == "groundtruth":
        return GroundTruthPose(video, num_src_frames, scale)
    raise AnimlcmError(f"--pose {kind}: unknown backend")

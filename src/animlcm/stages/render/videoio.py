"""Video and image files in and out: ``animlcm.videoread`` in, PyAV out (H.264 mp4), Pillow for images."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from animlcm.errors import AnimlcmError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _rgb(im, alpha_background: int) -> np.ndarray:
    """A PIL image as uint8 RGB: 16-bit grey scaled (PIL's convert would clip it to white), transparent
    pixels composited over ``alpha_background`` (PIL's convert would drop alpha and show what lies under)."""
    if im.mode in _SIXTEEN_BIT_GREY:
        grey = np.asarray(im, dtype=np.float64)
        if grey.max(initial=0) > 255:
            grey = grey / 257.0  # 0..65535 -> 0..255
        grey = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + float(alpha_background) * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def has_alpha(im) -> bool:
    """Does a PIL image carry transparency (an alpha channel or a transparent palette entry)?"""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )


def read_image(path: Path, *, alpha_background: int = 0) -> np.ndarray:
    """An RGB image file as uint8 (H, W, 3); one clear line when it is missing or not an image.

    Transparent pixels take ``alpha_background`` (0 black: skeleton images; 255 white: a reference cut-out).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise AnimlcmError(f"{path}: is a folder, not an image; pass a PNG or JPEG file")
    if not path.is_file():
        raise AnimlcmError(f"{path}: reference image not found; pass an existing PNG/JPEG file")
    try:
        with Image.open(path) as im:
            return _rgb(im, alpha_background)
    except Image.DecompressionBombError:
        raise AnimlcmError(
            f"{path}: the image is too large to read safely (over {Image.MAX_IMAGE_PIXELS * 2} pixels); "
            "resize it to under 4096 pixels a side"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise AnimlcmError(
            f"{path}: cannot read the image ({exc.__class__.__name__}); pass a PNG or JPEG"
        ) from None


def image_has_alpha(path: Path) -> bool:
    """Whether an image has transparent pixels (False for anything unreadable: read_image reports it).

    An alpha channel that is opaque everywhere (many exported photos) changes nothing, so it is no news."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return has_alpha(im) and bool((np.asarray(im.convert("RGBA"))[..., 3] < 255).any())
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def write_image(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write (``X.tmp`` then rename), so a reader never sees half a file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    tmp.replace(path)


def read_video(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A video as (uint8 (F, H, W, 3), fps), through extract's reader (decord, PyAV where decord fails)."""
    from animlcm.videoread import read_video as read

    return read(Path(path), max_frames)


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """uint8 (F, H, W, 3) -> H.264 mp4 (yuv420p, plays everywhere) at ``fps``; temp file, then renamed."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    f, h, w, _ = frames.shape
    # a Fraction keeps 29.97-style rates exact enough; limit_denominator avoids huge time bases
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w, h  # yuv420p needs even sizes; render sizes are multiples of 8
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for i in range(f):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.replace(path)


def write_frames_dir(folder: Path, frames: np.ndarray) -> list[Path]:
    """One PNG per frame, ``00000.png`` ..., for editing tools that want image sequences."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        p = folder / f"{i:05d}.png"
        write_image(p, frame)
        paths.append(p)
    return paths


def read_image_folder(folder: Path, max_frames: int | None = None) -> np.ndarray:
    """Sorted image files of a folder as uint8 (F, H, W, 3); all must share one size."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if max_frames is not None:
        files = files[:max_frames]
    if not files:
        raise AnimlcmError(f"{folder}: no skeleton images (png/jpg) in this folder")
    images = [read_image(p) for p in files]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise AnimlcmError(
            f"{folder}: the images have different sizes {sorted(shapes)}; resize them to one size"
        )
    return np.stack(images)

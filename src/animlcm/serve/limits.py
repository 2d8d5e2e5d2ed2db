"""Upload limits of the web app, checked from file headers before anything is decoded in full.

A page open to several people must not let one upload (a 20-minute video, a 20000-pixel image, a zip that
inflates to gigabytes) take the machine. Each check raises ``AnimlcmError`` with one line naming the file,
the limit and the fix, like the CLI's messages; a file that cannot be read at all is left to the render
stage, which says so in the CLI's own words.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.stages.render.videoio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class UploadLimits:
    max_file_mb: float = 200.0
    """Largest upload, in MB (also given to Gradio, which refuses bigger files before they are stored)."""
    max_video_seconds: float = 120.0
    max_side: int = 4096
    """Largest width or height, in pixels, of an image or a video."""
    max_frames: int = 240
    """Most frames a render may have (the frame-count control stops here)."""
    max_zip_images: int = 2000

    def describe(self) -> str:
        """The limits as one line for the page."""
        return (
            f"Uploads: at most {self.max_file_mb:g} MB per file, videos up to "
            f"{_clock(self.max_video_seconds)} long, images and videos up to {self.max_side}x{self.max_side} "
            "pixels, zips of up to "
            f"{self.max_zip_images} images; renders of up to {self.max_frames} frames."
        )


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def check_file_size(path: Path, limits: UploadLimits, name: str) -> None:
    size_mb = Path(path).stat().st_size / 1e6
    if size_mb > limits.max_file_mb:
        raise AnimlcmError(
            f"{name}: the file is {size_mb:.0f} MB; the limit here is {limits.max_file_mb:g} MB "
            "(send a shorter or smaller file)"
        )


def _check_side(width: int, height: int, limits: UploadLimits, name: str, what: str) -> None:
    if max(width, height) > limits.max_side:
        raise AnimlcmError(
            f"{name}: the {what} is {width}x{height} pixels; the limit here is {limits.max_side} pixels "
            "a side (resize it first)"
        )


def check_image(path: Path, limits: UploadLimits, name: str) -> None:
    """Size and resolution of an image upload, from its header (a decompression bomb is never decoded)."""
    from PIL import Image

    check_file_size(path, limits, name)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:  # noqa: BLE001 - not an image: the render stage says so in the CLI's words
        return
    _check_side(width, height, limits, name, "image")


def check_video(path: Path, limits: UploadLimits, name: str) -> None:
    """Size, length and resolution of a video upload, from its container (no frame is decoded)."""
    import av

    check_file_size(path, limits, name)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return  # the render stage names it: no video stream
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1e6  # av.time_base: microseconds
    except av.error.FFmpegError:
        return  # corrupt or not a video: the video reader's "not a readable video" line
    _check_side(width, height, limits, name, "video")
    if seconds is not None and seconds > limits.max_video_seconds:
        raise AnimlcmError(
            f"{name}: the video is {_clock(seconds)} long; the limit here is "
            f"{_clock(limits.max_video_seconds)} (cut the part you want first)"
        )


def unpack_zip(path: Path, folder: Path, limits: UploadLimits, name: str) -> Path:
    """The images of a zip (any folder depth, sorted by their path in the zip) copied flat into ``folder``
    as ``00000.png``...: member names never become paths, so a ``../`` entry cannot write outside."""
    check_file_size(path, limits, name)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise AnimlcmError(
            f"{name}: not a readable zip file; pass a zip of skeleton images (PNG/JPEG), a video, or images"
        ) from None
    with archive:
        members = sorted(
            (
                m
                for m in archive.infolist()
                if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES
            ),
            key=lambda m: m.filename,
        )
        if not members:
            raise AnimlcmError(f"{name}: no skeleton images (png/jpg) in this zip")
        if len(members) > limits.max_zip_images:
            raise AnimlcmError(
                f"{name}: the zip holds {len(members)} images; the limit here is {limits.max_zip_images}"
            )
        total_mb = sum(m.file_size for m in members) / 1e6
        if total_mb > 5 * limits.max_file_mb:  # what it inflates to, not what was uploaded
            raise AnimlcmError(
                f"{name}: the images in the zip add up to {total_mb:.0f} MB; the limit here is "
                f"{5 * limits.max_file_mb:g} MB"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(members):
            target = folder / f"{i:05d}{Path(member.filename).suffix.lower()}"
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            check_image(target, limits, f"{name}:{member.filename}")
    return folder


def gather_images(paths: list[Path], folder: Path, limits: UploadLimits, names: list[str]) -> Path:
    """Several uploaded skeleton images -> one folder, in the order of their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (path, name) in enumerate(sorted(zip(paths, names, strict=True), key=lambda pn: pn[1])):
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise AnimlcmError(
                f"{name}: several files were given, so each must be a skeleton image (png/jpg); "
                "send a video or a zip on its own"
            )
        check_image(path, limits, name)
        shutil.copyfile(path, folder / f"{i:05d}{Path(name).suffix.lower()}")
    return folder

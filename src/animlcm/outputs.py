"""Output paths: checked before any work starts, and write failures (full or read-only disk, no permission)
turned into one line that names the path and says that finished work is kept.

Every writer in the program replaces a file only once the new one is complete (``X.tmp``, then rename), so
a failure leaves the previous output, or nothing, never half a file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from animlcm.errors import AnimlcmError

# write failures that are the machine's state, not a bug: the user frees space or picks another place
DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EFBIG: "the file grew too large for this file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
# h5py and some libraries raise OSError without errno but with the C library's text
_TEXTS = {
    "no space left": errno.ENOSPC,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "disk quota": errno.EDQUOT,
}


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a write failure the user can fix (full, read-only, no permission), else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in DISK_ERRNOS:
        return exc.errno
    text = str(exc).lower()
    return next((code for needle, code in _TEXTS.items() if needle in text), None)


def disk_error_line(exc: OSError, where: Path | str | None = None, kept: str = "") -> str:
    """One line: the path, what is wrong with it, what to do, and (``kept``) what finished work remains."""
    code = disk_errno(exc)
    what = DISK_ERRNOS.get(code, exc.strerror or "write failed") if code else (exc.strerror or str(exc))
    path = exc.filename or where or "output"
    fix = (
        "free some space"
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        else "choose a writable place (e.g. --out in your home folder)"
    )
    tail = f"; {kept}" if kept else ""
    return f"{path}: cannot write ({what}); {fix} and run the same command again{tail}"


@contextmanager
def disk_errors(where: Path, kept: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Turn a full/read-only disk inside the block into one ``AnimlcmError`` line about ``where``."""
    try:
        yield
    except OSError as exc:
        if disk_errno(exc) is None:
            raise
        raise AnimlcmError(disk_error_line(exc, where, kept())) from None


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: Path, flag: str, *, folder: bool, suffix: str | None = None) -> None:
    """Before any work: ``path`` can be created or replaced as a file (or ``folder``) with ``suffix``.

    Fails when it has the wrong kind or extension, when a part of it is an existing file, or when its
    nearest existing folder is not writable (for root only a read-only mount shows here; the write itself
    is covered by ``disk_errors``).
    """
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise AnimlcmError(f"{flag} {path}: must end in {suffix}; give a path like out{suffix}")
    if path.exists():
        if folder and not path.is_dir():
            raise AnimlcmError(f"{flag} {path}: is a file, not a folder; choose a folder path for {flag}")
        if not folder and path.is_dir():
            raise AnimlcmError(f"{flag} {path}: is a folder; give a file path ending in {suffix or '.mp4'}")
    # where the write happens: an existing output folder itself, else the nearest folder above the path (an
    # existing output file is replaced from its folder)
    base = _nearest_existing(path if folder and path.is_dir() else path.parent)
    if not base.is_dir():
        raise AnimlcmError(
            f"{flag} {path}: cannot be created because {base} is a file, not a folder; choose another {flag}"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise AnimlcmError(f"{flag} {path}: no permission to write in {base}; choose a writable place")
    try:
        # a read-only mount also reports itself here for root, who passes every permission check
        if os.statvfs(base).f_flag & os.ST_RDONLY:
            raise AnimlcmError(
                f"{flag} {path}: {base} is on a read-only file system; choose a writable place"
            )
    except (OSError, AttributeError):
        pass

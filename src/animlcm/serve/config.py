"""``ServeConfig``: everything `animlcm serve` is started with (flags only: a server has no YAML yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.serve.limits import UploadLimits

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, Path | None]
    """Page label -> model folder (None: the built-in student); the first is preselected."""
    preset: str = "tiny"
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    """A public gradio.live link: only when asked, it exposes the machine to anyone with the link."""
    concurrency: int = 1
    """Renders running at once; the rest wait in the queue (one GPU: 1)."""
    queue_size: int = 32
    """Requests waiting at most; more are turned away at once instead of waiting for hours."""
    limits: UploadLimits = field(default_factory=UploadLimits)
    workdir: Path | None = None
    """Where uploads and renders live; None: a fresh temporary folder, removed when the server stops."""

    def validate(self) -> None:
        if not self.models:
            raise AnimlcmError("no model to serve; pass --model DIR or leave it out for the built-in student")
        if self.concurrency < 1:
            raise AnimlcmError(f"--concurrency {self.concurrency}: need at least 1 render at a time")
        if not 0 < self.port < 65536:
            raise AnimlcmError(f"--port {self.port}: choose a port from 1 to 65535")

    @property
    def public(self) -> bool:
        """Reachable by others: listening beyond loopback, or a share link."""
        return self.share or self.host not in LOOPBACK

"""Start the server with safe defaults: loopback only, no share link, no analytics, uploads capped, every
file under one temporary folder that is removed when the server stops."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from animlcm.errors import AnimlcmError
from animlcm.serve.config import ServeConfig


def quiet_gradio_env(workdir: Path) -> None:
    """Before Gradio is imported (it reads these at import): no analytics or version calls, and its upload
    cache inside our folder, so "only the app's files" and "cleaned at exit" cover Gradio's copies too."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def import_gradio():
    try:
        import gradio
    except ImportError:
        raise AnimlcmError(
            "gradio is not installed: pip install 'animlcm[serve]' (or make install)"
        ) from None
    return gradio


def warnings_for(cfg: ServeConfig) -> list[str]:
    """What to tell the person starting a server others can reach."""
    out = []
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        out.append(
            f"warning: --host {cfg.host} listens beyond this machine: anyone who can reach port {cfg.port} "
            "can upload files and use its CPU/GPU (there is no login); use 127.0.0.1 unless you mean it"
        )
    if cfg.share:
        out.append(
            "warning: --share makes a public gradio.live link: anyone with the link can use this machine"
        )
    return out


def _exit(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(cfg: ServeConfig, *, preload: bool = True) -> None:
    """Run the page until interrupted (blocks). ``preload`` loads the first model before the address is
    printed, so the first visitor does not wait for it and a broken folder stops the server at once."""
    cfg.validate()
    workdir = Path(tempfile.mkdtemp(prefix="animlcm-serve-")) if cfg.workdir is None else Path(cfg.workdir)
    owned = cfg.workdir is None
    workdir.mkdir(parents=True, exist_ok=True)
    quiet_gradio_env(workdir)
    gr = import_gradio()
    from dataclasses import replace

    from animlcm.serve.app import build_app
    from animlcm.serve.jobs import RenderRequest, build_config
    from animlcm.serve.models import ModelPool

    pool = ModelPool()
    cfg = replace(cfg, workdir=workdir)
    try:
        if preload:
            first = next(iter(cfg.models.values()))
            probe = RenderRequest(reference=Path("preload.png"), model=first)
            pool.get(build_config(probe, None, workdir / "preload.mp4", cfg.preset))
        demo = build_app(cfg, pool)
        demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
        theme = gr.themes.Default(
            font=["ui-sans-serif", "system-ui", "sans-serif"],  # system fonts: no calls to a font CDN
            font_mono=["ui-monospace", "monospace"],
        )
        try:
            _, local_url, share_url = demo.launch(
                server_name=cfg.host,
                server_port=cfg.port,
                share=cfg.share,
                max_file_size=f"{cfg.limits.max_file_mb:g}mb",
                allowed_paths=[],  # nothing beyond the app's own files (Gradio's cache) is served
                ssr_mode=False,
                mcp_server=False,
                pwa=False,
                footer_links=["api"],
                theme=theme,
                show_error=False,  # unexpected exceptions stay in the log; bad input is shown by gr.Error
                quiet=True,  # Gradio's banner suggests share=True; ours says where to go
                prevent_thread_lock=True,
            )
        except OSError as exc:
            why = (
                "the port is in use" if "empty port" in str(exc) else str(exc)
            )  # Gradio's hint names env vars
            raise AnimlcmError(
                f"--host {cfg.host} --port {cfg.port}: cannot listen there ({why}); pass another --port"
            ) from None
        print(f"animlcm serve: open {local_url} in a browser (Ctrl+C stops)", flush=True)
        print(f"uploads and renders are kept in {workdir} until the server stops", flush=True)
        if share_url:
            print(f"public link: {share_url}", flush=True)
        # SIGTERM (a service manager, a test) ends like Ctrl+C, so the finally below removes the files
        signal.signal(signal.SIGTERM, _exit)
        demo.block_thread()
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)

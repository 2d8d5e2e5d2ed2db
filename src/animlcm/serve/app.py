"""The Gradio page: inputs on the left, the render on the right, one queued event ("/render") that is also
the API. Importing this module imports Gradio (`animlcm[serve]`); ``launch`` sets its environment first."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from pathlib import Path

import gradio as gr

from animlcm.errors import AnimlcmError
from animlcm.serve.config import ServeConfig
from animlcm.serve.jobs import Cancelled, CancelToken, JobResult, RenderRequest, render_request
from animlcm.serve.models import ModelPool

log = logging.getLogger("animlcm.serve")

INTRO = """# animlcm: animate a photo with a dance
1. Upload a photo of a person. 2. Upload a driving motion: a video of someone dancing, a skeleton video
(OpenPose colours on black), a zip of skeleton images, or several skeleton images; or leave it empty for the
built-in dance. 3. Press **Render**, and download the video and its preview grid.
"""


class Sessions:
    """Per visitor (Gradio session): the folder their renders go to and the token Cancel sets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()

    def folder(self, session: str) -> Path:
        return self.root / "sessions" / _safe(session)

    def token(self, session: str) -> CancelToken:
        with self._lock:
            return self._tokens.setdefault(session, CancelToken())

    def start(self, session: str) -> CancelToken:
        """A new render in this session: an earlier Cancel (of a job still waiting) must not stop it."""
        token = CancelToken()
        with self._lock:
            self._tokens[session] = token
        return token

    def end(self, session: str) -> None:
        """The visitor left: their files go (the app's own uploads cache is pruned by Gradio)."""
        with self._lock:
            self._tokens.pop(session, None)
        shutil.rmtree(self.folder(session), ignore_errors=True)


def _safe(session: str | None) -> str:
    return "".join(c for c in str(session or "anonymous") if c.isalnum() or c in "-_")[:64] or "anonymous"


def _paths(files) -> list[str]:
    if files is None:
        return []
    return [str(f) for f in (files if isinstance(files, list) else [files])]


def build_app(cfg: ServeConfig, pool: ModelPool | None = None) -> gr.Blocks:
    """The page for ``cfg``; ``pool`` keeps loaded models (a fresh one if None)."""
    from animlcm.config import SIZES

    pool = pool or ModelPool()
    root = Path(cfg.workdir) if cfg.workdir is not None else Path(".")
    sessions = Sessions(root)
    labels = list(cfg.models)
    size = SIZES[cfg.preset]
    lim = cfg.limits

    def render(
        reference,
        motion,
        pose_kind: str,
        model_label: str,
        steps: float,
        frames: float,
        seed: float,
        window: float,
        compare_teacher: bool,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom: injected per event
    ):
        session = getattr(request, "session_hash", None) or "api"
        token = sessions.start(session)
        if reference is None:
            raise gr.Error("no reference image given: upload a photo of the person to animate", duration=None)
        if model_label not in cfg.models:
            raise gr.Error(f"model '{model_label}': choose one of {', '.join(labels)}", duration=None)
        ref = _paths(reference)[0]
        moves = _paths(motion)
        names = {p: Path(p).name for p in [ref, *moves]}  # Gradio keeps the visitor's file name
        req = RenderRequest(
            reference=Path(ref),
            motion=tuple(Path(p) for p in moves),
            model=cfg.models[model_label],
            steps=int(steps),
            seed=int(seed),
            frames=int(frames),
            window=int(window),
            pose_kind=pose_kind,
            compare_teacher=bool(compare_teacher),
            names=names,
        )

        def on_step(phase: str, i: int, n: int) -> None:
            if token.event.is_set():  # Cancel pressed: stop here and free the worker
                print(f"render cancelled after {phase} step {i}/{n}", flush=True)
                token.check()
            progress((i, n), desc=f"{phase}: step")

        job_dir = sessions.folder(session) / uuid.uuid4().hex[:12]
        progress(0, desc="loading the model and reading the uploads")
        try:
            result: JobResult = render_request(
                req, pool=pool, workdir=root, job_dir=job_dir, limits=lim, preset=cfg.preset, on_step=on_step
            )
        except AnimlcmError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise gr.Error(str(exc), duration=None, title="Render failed") from None
        except Cancelled:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise gr.Error("render cancelled", duration=5, title="Cancelled") from None
        except Exception as exc:  # a bug, not bad input: the log gets the traceback, the page one line
            log.exception("render failed")
            shutil.rmtree(job_dir, ignore_errors=True)
            raise gr.Error(
                f"render failed ({exc.__class__.__name__}); the server log has the details", duration=None
            ) from None
        downloads = [str(result.video), str(result.preview)]
        if result.teacher_video is not None:
            downloads.append(str(result.teacher_video))
        teacher = gr.update(value=str(result.teacher_video) if result.teacher_video else None,
                            visible=result.teacher_video is not None)  # fmt: skip
        return str(result.video), teacher, str(result.preview), downloads, result.summary

    def cancel(request: gr.Request) -> None:
        sessions.token(getattr(request, "session_hash", None) or "api").cancel()

    def leave(request: gr.Request) -> None:
        sessions.end(getattr(request, "session_hash", None) or "api")

    with gr.Blocks(title="animlcm", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(lim.describe(), elem_id="limits")
        with gr.Row():
            with gr.Column(scale=1):
                reference = gr.File(
                    # no file_types: a wrong file gets render's own message, not Gradio's
                    label="Reference image (the person to animate)",
                    elem_id="reference",
                )
                motion = gr.File(
                    label="Driving motion (leave empty for the built-in dance)",
                    file_count="multiple",
                    elem_id="motion",
                )
                pose_kind = gr.Radio(
                    ["auto", "skeleton", "rgb"], value="auto", label="The motion video is",
                    info="auto: a mostly black video is a skeleton render, anything else is filmed and "
                    "its poses are detected",
                )  # fmt: skip
                model = gr.Dropdown(labels, value=labels[0], label="Model", interactive=len(labels) > 1)
                steps = gr.Slider(1, 8, value=4, step=1, label="Steps", elem_id="steps")
                frames = gr.Slider(1, lim.max_frames, value=16, step=1, label="Frames", elem_id="frames")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0, elem_id="seed")
                    window = gr.Slider(1, 32, value=size.num_frames, step=1, label="Window (frames)")
                compare = gr.Checkbox(False, label="Also render with the teacher, for comparison (slower)")
                with gr.Row():
                    go = gr.Button("Render", variant="primary", elem_id="render")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                video = gr.Video(label="Animation", elem_id="video", interactive=False, height=360)
                teacher_video = gr.Video(label="Teacher (comparison)", visible=False, interactive=False)
                preview = gr.Image(
                    label="Preview grid", type="filepath", interactive=False, elem_id="preview"
                )
                download = gr.File(
                    label="Download", file_count="multiple", interactive=False, elem_id="download"
                )
                summary = gr.Markdown(label="Summary", elem_id="summary")
        event = go.click(
            render,
            [reference, motion, pose_kind, model, steps, frames, seed, window, compare],
            [video, teacher_video, preview, download, summary],
            api_name="render",
            concurrency_id="render",
            concurrency_limit=cfg.concurrency,
        )
        stop.click(cancel, None, None, cancels=[event], queue=False, api_name="cancel")
        demo.unload(leave)
    return demo

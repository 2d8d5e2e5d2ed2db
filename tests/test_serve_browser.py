"""`animlcm serve` in a real browser: headless Chromium (Debian's, driven by Playwright) against the server
started as a subprocess on a free loopback port with the built-in model.

One test, in the order a visitor goes: render a real reference with a real skeleton video at 4 steps and
8 frames (the downloaded file decodes to 8 frames, equal to `animlcm render`'s), a bad upload shows the CLI's
error line, two pages queued at once both finish, a waiting render shows its place in the queue and Cancel
frees the worker, files outside the app cannot be fetched, a closed page's
files go, and stopping the server removes its folder. The finished page is saved as a screenshot (to
``$ANIMLCM_ARTIFACTS`` when set, else the test's tmp folder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER_START_S = 120  # torch + gradio import and the model load, on 2 busy cores
RENDER_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``animlcm serve`` as a child process; its output is collected by a thread (the pipe never fills)."""

    def __init__(self, port: int, cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "animlcm.cli", "serve", "--port", str(port)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"server never printed /{pattern}/; its output:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def _fill_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _open(browser, url, reference: Path, motion: Path | None, steps=4, frames=8, watch: list | None = None):
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    if watch is not None:  # every request the page makes (analytics, fonts or CDNs would show here)
        page.on("request", lambda r: watch.append(r.url))
    page.goto(url)
    page.locator("#reference input[type=file]").set_input_files(str(reference))
    if motion is not None:
        page.locator("#motion input[type=file]").set_input_files(str(motion))
    _fill_slider(page, "steps", steps)
    _fill_slider(page, "frames", frames)
    # uploads finished: each file component lists its file by name
    page.locator(f'#reference td.filename[aria-label="{reference.name}"]').wait_for(timeout=30_000)
    if motion is not None:
        page.locator(f'#motion td.filename[aria-label="{motion.name}"]').wait_for(timeout=30_000)
    return page


def _wait_video(page, timeout_s: float = RENDER_S) -> None:
    page.locator("#video video[src]").wait_for(timeout=timeout_s * 1000)


def _download(page, url: str, dest: Path) -> Path:
    href = page.locator("#download a[download$='.mp4']").first.get_attribute("href")
    full = href if href.startswith("http") else url.rstrip("/") + "/" + href.lstrip("/")
    dest.write_bytes(page.request.get(full).body())
    return dest


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_serve_in_a_real_browser(real_data, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (make install puts it in .venv)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (make install does it as root)")
    artifacts = Path(os.environ.get("ANIMLCM_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    reference, skeleton = real_data / "ref_person_1.png", real_data / "pose_skeleton_1.mp4"
    bad = tmp_path / "not_a_photo.png"
    bad.write_text("this is text, not an image")

    start = time.monotonic()
    server = Server(_free_port(), cwd=tmp_path)
    try:
        url = server.wait_for(r"open (http://127\.0\.0\.1:\d+/?)", SERVER_START_S).group(1)
        workdir = Path(server.wait_for(r"kept in (\S+) until", 5).group(1))
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            # 1. one render: 4 steps, 8 frames of a real skeleton video on a real photo
            requests: list[str] = []  # every request the page makes must stay on this server
            page = _open(browser, url, reference, skeleton, watch=requests)
            assert "videos up to 2:00 long" in page.locator("#limits").inner_text()  # limits are on the page
            t0 = time.monotonic()
            page.locator("#render").click()
            _wait_video(page)
            render_s = time.monotonic() - t0
            got = _download(page, url, tmp_path / "page.mp4")
            frames = _decode(got)
            assert frames.shape == (8, 128, 128, 3)
            assert "8 frames" in page.locator("#summary").inner_text()
            page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)
            outside = [u for u in requests if not u.startswith(url)]
            assert len(requests) > 10 and outside == [], f"the page called outside the server: {outside[:5]}"

            # the README's gradio_client example, against the same server
            from gradio_client import Client, handle_file

            client = Client(url, download_files=str(tmp_path / "client"), verbose=False)
            video, _, _, files, summary = client.predict(
                reference=handle_file(str(reference)), motion=[handle_file(str(skeleton))],
                steps=4, frames=8, seed=0, api_name="/render",
            )  # fmt: skip
            np.testing.assert_array_equal(_decode(Path(video)), frames)
            assert len(files) == 2 and "8 frames" in summary

            # ... identical to `animlcm render` with the same files and settings
            cli_out = tmp_path / "cli.mp4"
            cli = subprocess.run(
                [sys.executable, "-m", "animlcm.cli", "render", str(reference), "--pose", str(skeleton),
                 "--steps", "4", "--max-frames", "8", "--seed", "0", "--out", str(cli_out)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            np.testing.assert_array_equal(frames, _decode(cli_out))

            # 2. a bad upload: the CLI's one-line message, and the server keeps serving
            bad_page = _open(browser, url, bad, None, frames=2)
            bad_page.locator("#render").click()
            bad_page.get_by_text("not_a_photo.png: cannot read the image").first.wait_for(timeout=30_000)

            # 3. two pages render at once: one waits in the queue (concurrency 1), both finish
            a = _open(browser, url, reference, skeleton, frames=8)
            b = _open(browser, url, reference, None, frames=8)  # the built-in dance
            a.locator("#render").click()
            b.locator("#render").click()
            _wait_video(a, 2 * RENDER_S)
            _wait_video(b, 2 * RENDER_S)
            assert _decode(_download(b, url, tmp_path / "b.mp4")).shape[0] == 8

            # 4. queue and cancel: a long render holds the one worker, a second waits and shows its place in
            # the queue; Cancel stops the long one at its next step and the waiting one then finishes
            long = _open(browser, url, reference, None, frames=240)
            long.locator("#render").click()
            long.get_by_text(re.compile(r"student: step|loading the model")).first.wait_for(timeout=30_000)
            before_src = a.locator("#video video").get_attribute("src")
            a.locator("#seed input").fill("1")  # a new render, so a new file
            a.locator("#render").click()
            a.get_by_text(re.compile(r"queue: \d+/\d+")).first.wait_for(timeout=20_000)
            long.locator("#cancel").click()
            server.wait_for(r"render cancelled after student step \d/4", 60)
            a.locator(f"#video video[src]:not([src='{before_src}'])").wait_for(timeout=RENDER_S * 1000)
            assert long.locator("#video video[src]").count() == 0  # the cancelled render left no video

            # 5. only the app's own files: no path a request can steer to other files
            for path in ("/etc/passwd", str(reference), str(Path(__file__).resolve())):
                for route in ("gradio_api/file=", "file="):
                    assert _status(url + route + path) in (403, 404), route + path
            # 6. a closed page's renders go with its session
            sessions = workdir / "sessions"
            before = len(list(sessions.iterdir()))
            b.context.close()
            end = time.monotonic() + 20
            while len(list(sessions.iterdir())) >= before and time.monotonic() < end:
                time.sleep(0.5)
            assert len(list(sessions.iterdir())) == before - 1
            browser.close()
        total = time.monotonic() - start
        print(f"browser test: render through the page {render_s:.1f} s, whole test {total:.0f} s")
    finally:
        server.stop()
    assert not workdir.exists(), "the server's temporary folder outlived it"

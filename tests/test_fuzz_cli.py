"""Every subcommand over a list of bad inputs (issue 16): each must stop with a non-zero exit code, no
traceback, one line that names the offending file or flag, and no file created or changed.

In-process (typer's CliRunner) for speed: ``animlcm.cli.error_line`` is exactly what ``main()`` prints, so
a case passes when the command raised something that function turns into one line (a bug would return
None and keep its traceback). Two cases also run the real entry point in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from animlcm.cli import app, error_line
from animlcm.stages.render.precheck import BUILTIN_STUDENT


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height (a decompression bomb to Pillow) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _mp4(path: Path, n: int, faststart: bool = False) -> Path:
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=8)
        s.height, s.width, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(n):
            frame = np.full((64, 64, 3), 10 * i % 255, np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("fuzz")
    Image.fromarray(np.full((64, 48, 3), 120, np.uint8)).save(w / "ref.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(w / "tiny.png")
    _png_header_only(w / "huge.png", 200_000, 200_000)
    (w / "notes.png").write_text("a text file with an image name\n")
    (w / "notes.txt").write_text("a file where a folder is expected\n")
    (w / "text.mp4").write_text("these are notes, not a video\n")
    (w / "empty.mp4").write_bytes(b"")
    full = _mp4(w / "full.mp4", 12, faststart=True)
    (w / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _mp4(w / "zero_frames.mp4", 0)
    (w / "refdir").mkdir()
    os.symlink(w / "loop_b.png", w / "loop_a.png")
    os.symlink(w / "loop_a.png", w / "loop_b.png")
    # non-UTF-8 bytes and spaces in a name (a Linux file system allows both)
    (w / os.fsdecode(b"bad name \xff.png")).write_text("not an image")
    # model folders: weights cut short, metadata cut short
    cut_model = w / "cut_model"
    shutil.copytree(BUILTIN_STUDENT, cut_model)
    shutil.copytree(BUILTIN_STUDENT.parent / "teacher", w / "teacher")  # the parts it links (../teacher)
    weights = cut_model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    cut_json = w / "cut_json"
    shutil.copytree(BUILTIN_STUDENT, cut_json, ignore=shutil.ignore_patterns("*.safetensors"))
    meta = cut_json / "animlcm.json"
    meta.write_text(meta.read_text()[:200])
    # caches: not a cache at all, a cut manifest
    (w / "no_cache").mkdir()
    (w / "cut_cache").mkdir()
    (w / "cut_cache" / "manifest.json").write_text('{"videos": [{"name": "a"')
    # a training run whose settings file was cut (--resume)
    (w / "cut_run").mkdir()
    (w / "cut_run" / "config.yaml").write_text("preset: tiny\nlr: [1e-4\n")
    (w / "cut.yaml").write_text("steps: [4\n")
    return w


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


BAD = os.fsdecode(b"bad name \xff.png")
# (command line with W for the fuzz folder, what the one line must contain)
CASES = [
    # render: reference images
    ("render W/refdir --out W/o.mp4", "refdir"),
    ("render W/tiny.png --out W/o.mp4", "tiny.png"),
    ("render W/huge.png --out W/o.mp4", "huge.png"),
    ("render W/notes.png --out W/o.mp4", "notes.png"),
    ("render W/BADNAME --out W/o.mp4", BAD),
    ("render W/loop_a.png --out W/o.mp4", "loop_a.png"),
    ("render W/missing.png --out W/o.mp4", "missing.png"),
    # render: pose sources
    ("render W/ref.png --pose W/text.mp4 --out W/o.mp4", "text.mp4"),
    ("render W/ref.png --pose W/empty.mp4 --out W/o.mp4", "empty.mp4"),
    ("render W/ref.png --pose W/truncated.mp4 --out W/o.mp4", "truncated.mp4"),
    ("render W/ref.png --pose W/zero_frames.mp4 --out W/o.mp4", "zero_frames.mp4"),
    ("render W/ref.png --pose W/loop_b.png --out W/o.mp4", "loop_b.png"),
    ("render W/ref.png --pose W/no_cache:a --out W/o.mp4", "no_cache"),
    ("render W/ref.png --pose W/cut_cache:a --out W/o.mp4", "manifest.json"),
    # render: outputs and flags
    ("render W/ref.png --out W/ref.png", "--out"),
    ("render W/ref.png --out W/notes.txt/o.mp4", "notes.txt"),
    ("render W/ref.png --out W/refdir", "refdir"),
    ("render W/ref.png --out W/o.mp4 --frames-dir W/notes.txt", "notes.txt"),
    ("render W/ref.png --out W/o.mp4 --steps 1000", "--steps 1000"),
    ("render W/ref.png --out W/o.mp4 --height 13", "--height"),
    ("render W/ref.png --out W/o.mp4 --max-frames 0", "--max-frames"),
    ("render W/ref.png --out W/o.mp4 --config W/cut.yaml", "cut.yaml"),
    # render: model folders
    ("render W/ref.png --out W/o.mp4 --model W/cut_model", "diffusion_pytorch_model.safetensors"),
    ("render W/ref.png --out W/o.mp4 --model W/cut_json", "animlcm.json"),
    ("render W/ref.png --out W/o.mp4 --model W/no_model", "no_model"),
    # extract
    ("extract W/missing.mp4 --out W/cache", "missing.mp4"),
    ("extract W/full.mp4 --out W/notes.txt/cache", "notes.txt"),
    ("extract W/full.mp4 --out W/c --config W/cut.yaml", "cut.yaml"),
    # inspect, eval, export
    ("inspect W/no_cache", "no_cache"),
    ("inspect W/cut_cache", "manifest.json"),
    ("eval --model W/cut_model --cache W/no_cache --out W/e", "no_cache"),
    ("eval --cache W/cut_cache --out W/e", "manifest.json"),
    ("eval --cache W/cut_cache --out W/notes.txt/e", "notes.txt"),
    ("eval --model W/cut_json --cache W/cut_cache --out W/e", "manifest.json"),  # the cheaper check first
    ("export W/cut_model --out W/x", "diffusion_pytorch_model.safetensors"),
    ("export W/cut_json --out W/x", "animlcm.json"),
    ("export W/cut_model --out W/notes.txt/x", "notes.txt"),
    # training
    ("distill --cache W/no_cache --teacher W/cut_model --out W/r", "no_cache"),
    ("distill --cache W/cut_cache --teacher W/cut_model --out W/r", "manifest.json"),
    ("distill --cache W/cut_cache --teacher W/cut_json --out W/r", "manifest.json"),
    ("distill --cache W/no_cache --teacher W/cut_model --out W/notes.txt/r", "notes.txt"),
    ("distill --cache W/no_cache --teacher W/cut_model --out W/cut_run --resume", "config.yaml"),
    ("train-teacher --cache W/no_cache --out W/r", "no_cache"),
    ("train-teacher --cache W/cut_cache --out W/r", "manifest.json"),
    ("train-teacher --cache W/no_cache --out W/cut_run --resume", "config.yaml"),
    # writers
    ("synth --out W/notes.txt/s --identities 1 --clips-per-identity 1", "notes.txt"),
    ("teacher init --out W/notes.txt/t", "notes.txt"),
    ("teacher info W/cut_json", "animlcm.json"),
    ("smpl test-model --out W/notes.txt/m", "notes.txt"),
]


@pytest.mark.parametrize("line, names", CASES, ids=[c[0].replace("W/", "") for c in CASES])
def test_bad_input_is_one_line_naming_it(world, line, names):
    # split first: the non-UTF-8 name holds a space
    args = [a.replace("W/", f"{world}/").replace("BADNAME", BAD) for a in line.split(" ")]
    before = _snapshot(world)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    exc = result.exception
    if isinstance(exc, SystemExit):  # typer's own usage errors (exit 2) and extract's per-video table
        assert names in result.output or names in " ".join(args), result.output
    else:
        message = error_line(exc)
        assert message is not None, f"{type(exc).__name__}: {exc}"  # a bug, not a user's mistake
        assert "\n" not in message and names in message, message
    assert _snapshot(world) == before  # nothing created, nothing changed


@pytest.mark.parametrize(
    "args, names",
    [
        (["render", "REF", "--out", "W/o.mp4", "--steps", "1000"], "--steps 1000"),
        (["render", "REF", "--pose", "W/truncated.mp4", "--out", "W/o.mp4"], "truncated.mp4"),
    ],
)
def test_the_real_entry_point_prints_one_line_and_exits_2(world, args, names):
    args = [a.replace("W/", f"{world}/").replace("REF", str(world / "ref.png")) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "animlcm", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr

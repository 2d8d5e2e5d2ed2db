"""render's checks that need no model: they agree with the sampler's own limits and answer before torch
is imported (issue 16: `render --steps 1000` used to fail only after the model had loaded)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from animlcm.diffusion.timesteps import lcm_timesteps, segment_edges, segmented_plan
from animlcm.errors import AnimlcmError
from animlcm.stages.render import precheck
from animlcm.stages.render.config import RenderConfig


@pytest.mark.parametrize("segments, grid", [(1, 50), (2, 50), (3, 50), (4, 50), (2, 20), (3, 7), (5, 50)])
def test_max_steps_is_exactly_what_the_sampler_accepts(segments, grid):
    most = precheck.max_student_steps(segments, grid)
    edges = segment_edges(segments, grid)
    assert precheck.segment_lengths(segments, grid) == [
        [0, *[(i + 1) * (1000 // grid) - 1 for i in range(grid)]].index(e)
        - [0, *[(i + 1) * (1000 // grid) - 1 for i in range(grid)]].index(s)
        for s, e in zip(edges, edges[1:], strict=False)
    ]
    if segments == 1:
        assert len(lcm_timesteps(most, grid)) == most
        with pytest.raises(AnimlcmError):
            lcm_timesteps(most + 1, grid)
    else:
        assert len(segmented_plan(edges, most, grid)) == most
        with pytest.raises(AnimlcmError, match="exceed"):
            segmented_plan(edges, most + 1, grid)


def _cfg(tmp_path, **kw) -> RenderConfig:
    return RenderConfig(reference=tmp_path / "ref.png", out=tmp_path / "o.mp4", **kw)


def test_steps_limits_come_from_the_model_folder_json(tmp_path):
    folder = tmp_path / "run" / "student"
    shutil.copytree(precheck.BUILTIN_STUDENT, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    data = json.loads((folder / "animlcm.json").read_text())
    data["meta"].update(num_ddim_steps=20, segments=1)
    (folder / "animlcm.json").write_text(json.dumps(data))
    precheck.check_steps(_cfg(tmp_path, model=tmp_path / "run", steps=20))  # no weights needed
    with pytest.raises(AnimlcmError, match=r"--steps 21: this student samples in at most 20 steps"):
        precheck.check_steps(_cfg(tmp_path, model=tmp_path / "run", steps=21))
    with pytest.raises(AnimlcmError, match=r"at least 3 steps"):
        precheck.check_steps(_cfg(tmp_path, model=folder, steps=2, segments=3))
    with pytest.raises(AnimlcmError, match=r"at most 1000 steps"):
        precheck.check_steps(_cfg(tmp_path, model=folder, steps=1001, teacher=True))


FAST = """
import sys, time
from typer.testing import CliRunner
from animlcm.cli import app, error_line
t = time.perf_counter()
r = CliRunner().invoke(app, sys.argv[1:])
print(round(time.perf_counter() - t, 2), "torch" in sys.modules, "diffusers" in sys.modules)
print(error_line(r.exception))
"""


@pytest.mark.parametrize(
    "args, says",
    [
        (["--steps", "1000"], "--steps 1000: this student samples in at most 50 steps"),
        (["--height", "13"], "not divisible by 8"),
        (["--out", "REF"], "give a path ending in .mp4"),
        (["--out", "REF/x.mp4"], "ref_person_1.png is a file, not a folder"),
        (["--pose", "TMP/notes.mp4"], "notes.mp4: not a readable video"),
        (["--pose", "TMP/missing.mp4"], "missing.mp4: pose source not found"),
    ],
)
def test_argument_errors_answer_before_torch_loads(real_data, tmp_path, args, says):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    ref = str(real_data / "ref_person_1.png")
    args = [a.replace("TMP", str(tmp_path)).replace("REF", ref) for a in args]
    cmd = [sys.executable, "-c", FAST, "render", ref, "--out", str(tmp_path / "o.mp4"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout.splitlines()
    seconds, torch_loaded, diffusers_loaded = out[0].split()
    assert torch_loaded == diffusers_loaded == "False", out
    assert says in out[1], out
    assert float(seconds) < 5  # ~0.1 s here; torch alone takes 2 s to import
    assert not (tmp_path / "o.mp4").exists()

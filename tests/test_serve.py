"""`animlcm serve` without a browser: the page's render equals `animlcm render`, bad uploads get the CLI's
messages under the visitor's file names, limits hold, zips cannot write outside, cancel stops a render."""

from __future__ import annotations

import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from animlcm.errors import AnimlcmError
from animlcm.serve.jobs import Cancelled, RenderRequest, render_request, visitor_message
from animlcm.serve.limits import UploadLimits, check_image, check_video, unpack_zip
from animlcm.serve.models import BUILTIN_LABEL, ModelPool, model_choices
from animlcm.stages.render import videoio


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A reference image and a 6-frame skeleton video (the built-in dance as drawn by extract), 10 fps."""
    from animlcm.stages.render.run import builtin_dance

    d = tmp_path_factory.mktemp("serve_inputs")
    videoio.write_video(d / "pose.mp4", builtin_dance(96, 64, 6).skeleton, fps=10)
    ref = np.zeros((120, 80, 3), np.uint8)
    ref[20:110, 25:55] = (200, 120, 90)
    videoio.write_image(d / "ref.png", ref)
    return d


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool()  # the built-in student, loaded once for the module


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from animlcm.cli import app

    return CliRunner().invoke(app, args)


def _request(tmp_path, pool, req: RenderRequest, limits: UploadLimits | None = None, **kw):
    return render_request(
        req, pool=pool, workdir=tmp_path, job_dir=tmp_path / "job", limits=limits or UploadLimits(), **kw
    )


def test_page_render_equals_cli_render(inputs, pool, tmp_path):
    """The app calls render's own run: for the same files, seed and settings the frames are identical."""
    req = RenderRequest(inputs / "ref.png", (inputs / "pose.mp4",), steps=2, seed=3, frames=5, window=4)
    res = _request(tmp_path, pool, req)
    cli_out = tmp_path / "cli.mp4"
    result = _cli(["render", str(inputs / "ref.png"), "--pose", str(inputs / "pose.mp4"), "--steps", "2",
                   "--seed", "3", "--max-frames", "5", "--window", "4", "--out", str(cli_out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    page, cli = _decode(res.video), _decode(cli_out)
    assert page.shape == (5, 128, 128, 3)
    np.testing.assert_array_equal(page, cli)
    assert res.preview.is_file() and res.teacher_video is None
    assert "5 frames at 10 fps" in res.summary and "seed 3" in res.summary
    # a different seed is a different render: the comparison above can fail
    other = _request(tmp_path / "b", pool, RenderRequest(inputs / "ref.png", (inputs / "pose.mp4",), steps=2,
                                                         seed=4, frames=5, window=4))  # fmt: skip
    assert not np.array_equal(_decode(other.video), page)
    assert len(pool) == 1  # the model was loaded once for both renders


def test_builtin_dance_and_skeleton_images(inputs, pool, tmp_path):
    """No motion upload: the built-in dance; several images or a zip: a skeleton-image folder (render's)."""
    res = _request(tmp_path, pool, RenderRequest(inputs / "ref.png", steps=2, frames=3, window=4))
    assert _decode(res.video).shape[0] == 3
    frames = videoio.read_video(inputs / "pose.mp4")[0][:4]
    names = {}
    for i, frame in enumerate(frames):
        videoio.write_image(tmp_path / f"up{i}" / f"pose_{i:02d}.png", frame)
        names[str(tmp_path / f"up{i}" / f"pose_{i:02d}.png")] = f"pose_{i:02d}.png"
    imgs = tuple(Path(p) for p in reversed(list(names)))  # upload order does not matter: names do
    res = _request(tmp_path / "i", pool, RenderRequest(inputs / "ref.png", imgs, steps=2, frames=4, window=4,
                                                       names=names))  # fmt: skip
    assert _decode(res.video).shape[0] == 4
    with zipfile.ZipFile(tmp_path / "poses.zip", "w") as z:
        for path in imgs:
            z.write(path, f"clip/{Path(path).name}")
    res = _request(tmp_path / "z", pool, RenderRequest(inputs / "ref.png", (tmp_path / "poses.zip",), steps=2,
                                                       frames=2, window=4))  # fmt: skip
    assert _decode(res.video).shape[0] == 2


def test_teacher_comparison_renders_with_the_models_teacher(inputs, pool, tmp_path):
    req = RenderRequest(
        inputs / "ref.png", steps=2, frames=2, window=4, compare_teacher=True, teacher_steps=3
    )
    res = _request(tmp_path, pool, req)
    student, teacher = _decode(res.video), _decode(res.teacher_video)
    assert student.shape == teacher.shape == (2, 128, 128, 3)
    assert not np.array_equal(student, teacher)  # the teacher's own DDIM + CFG sampler, not the student again
    assert len(pool) == 2  # student and teacher, each loaded once


def _app_error(tmp_path, pool, req, limits=None) -> str:
    with pytest.raises(AnimlcmError) as err:
        _request(tmp_path, pool, req, limits)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) not in message  # one line, no server path
    return message


def test_bad_uploads_get_the_clis_messages_with_the_visitors_names(inputs, pool, tmp_path):
    up = tmp_path / "upload"
    up.mkdir()
    (up / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(up / "dot.png")
    (up / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    for bad_ref in ("notes.png", "dot.png"):
        cli = _cli(["render", str(up / bad_ref), "--out", str(tmp_path / "o.mp4")])
        assert isinstance(cli.exception, AnimlcmError), cli.output
        req = RenderRequest(up / bad_ref, names={str(up / bad_ref): bad_ref}, steps=2, frames=2)
        assert _app_error(tmp_path, pool, req) == str(cli.exception).replace(str(up / bad_ref), bad_ref)
    cli = _cli(
        [
            "render",
            str(inputs / "ref.png"),
            "--pose",
            str(up / "broken.mp4"),
            "--out",
            str(tmp_path / "o.mp4"),
        ]
    )
    assert "not a readable video" in str(cli.exception)
    req = RenderRequest(
        inputs / "ref.png", (up / "broken.mp4",), names={str(up / "broken.mp4"): "broken.mp4"}
    )
    assert _app_error(tmp_path, pool, req) == str(cli.exception).replace(str(up / "broken.mp4"), "broken.mp4")
    assert not (tmp_path / "job").exists() or not list((tmp_path / "job").glob("*.mp4"))


def test_upload_limits(inputs, pool, tmp_path):
    long = tmp_path / "twenty_minutes.mp4"
    videoio.write_video(long, np.zeros((1200, 16, 16, 3), np.uint8), fps=1)  # 20:00 at 1 fps: cheap
    msg = _app_error(tmp_path, pool, RenderRequest(inputs / "ref.png", (long,)))
    assert (
        msg
        == "twenty_minutes.mp4: the video is 20:00 long; the limit here is 2:00 (cut the part you want first)"
    )
    wide = tmp_path / "wide.png"
    Image.new("RGB", (5000, 40)).save(wide)
    assert "wide.png: the image is 5000x40 pixels; the limit here is 4096" in _app_error(
        tmp_path, pool, RenderRequest(wide)
    )
    with pytest.raises(AnimlcmError, match=r"ref.png: the file is \d+ MB; the limit here is 1e-05 MB"):
        check_image(inputs / "ref.png", UploadLimits(max_file_mb=1e-5), "ref.png")
    check_video(inputs / "pose.mp4", UploadLimits(), "pose.mp4")  # within the limits: no error
    with pytest.raises(AnimlcmError, match="frames 300: choose 1 to 240"):
        _request(tmp_path, pool, RenderRequest(inputs / "ref.png", frames=300))
    assert "2:00 long" in UploadLimits().describe() and "200 MB" in UploadLimits().describe()


def test_zip_members_never_become_paths(tmp_path):
    """A ``../`` entry or an absolute name is unpacked flat into the job folder, nowhere else."""
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png)
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.write(png, "../../escaped.png")
        z.write(png, "/abs/escaped2.png")
        z.writestr("readme.txt", "skipped: not an image")
    out = unpack_zip(tmp_path / "evil.zip", tmp_path / "job" / "poses", UploadLimits(), "evil.zip")
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png"]
    assert not list(tmp_path.rglob("escaped*.png"))
    (tmp_path / "fake.zip").write_text("no zip")
    with pytest.raises(AnimlcmError, match="fake.zip: not a readable zip file"):
        unpack_zip(tmp_path / "fake.zip", tmp_path / "j2", UploadLimits(), "fake.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(AnimlcmError, match="empty.zip: no skeleton images"):
        unpack_zip(tmp_path / "empty.zip", tmp_path / "j3", UploadLimits(), "empty.zip")
    with pytest.raises(AnimlcmError, match="the zip holds 2 images; the limit here is 1"):
        unpack_zip(tmp_path / "evil.zip", tmp_path / "j4", UploadLimits(max_zip_images=1), "evil.zip")


def test_visitor_message_hides_server_paths(tmp_path):
    names = {"/srv/x/gradio/abc/ref.png": "ref.png", "/srv/x/gradio/abc/ref.png.bak": "other.png"}
    msg = "/srv/x/gradio/abc/ref.png.bak: bad; /srv/x/gradio/abc/ref.png: worse; /srv/x/sessions/s1/poses: no"
    assert (
        visitor_message(msg, names, Path("/srv/x")) == "other.png: bad; ref.png: worse; sessions/s1/poses: no"
    )


def test_cancel_stops_at_the_next_step(inputs, pool, tmp_path):
    seen = []

    def on_step(phase, i, n):
        seen.append((phase, i, n))
        raise Cancelled("render cancelled")

    with pytest.raises(Cancelled):
        _request(
            tmp_path, pool, RenderRequest(inputs / "ref.png", steps=2, frames=2, window=4), on_step=on_step
        )
    assert seen == [("student", 1, 2)]  # stopped after the first of two steps, nothing written
    assert not list(tmp_path.rglob("*.mp4"))


def test_model_choices_and_server_warnings(tmp_path):
    from animlcm.serve.config import ServeConfig
    from animlcm.serve.launch import warnings_for

    assert model_choices([]) == {BUILTIN_LABEL: None}
    with pytest.raises(AnimlcmError, match=r"--model .*nothing: no animlcm.json here"):
        model_choices([tmp_path / "nothing"])
    from animlcm.stages.render.model import BUILTIN_STUDENT

    two = model_choices([BUILTIN_STUDENT, BUILTIN_STUDENT])
    assert list(two) == ["student", "student (2)"]
    assert warnings_for(ServeConfig(models=two)) == []
    (warn,) = warnings_for(ServeConfig(models=two, host="0.0.0.0"))
    assert "--host 0.0.0.0 listens beyond this machine" in warn
    assert any("public gradio.live link" in w for w in warnings_for(ServeConfig(models=two, share=True)))
    with pytest.raises(AnimlcmError, match="--concurrency 0"):
        ServeConfig(models=two, concurrency=0).validate()


def test_serve_cli_refuses_a_bad_model_in_one_line(tmp_path):
    result = _cli(["serve", "--model", str(tmp_path / "missing"), "--port", "7999"])
    assert isinstance(result.exception, AnimlcmError)
    assert "missing: no animlcm.json" in str(result.exception)

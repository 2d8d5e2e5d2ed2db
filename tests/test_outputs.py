"""``check_output``: what an output path may be before any work starts, and a render run twice to one file."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from animlcm.errors import AnimlcmError
from animlcm.outputs import check_output


def test_an_existing_output_is_replaced_and_a_wrong_kind_refused(tmp_path):
    (tmp_path / "out.mp4").write_bytes(b"an earlier render")
    check_output(tmp_path / "out.mp4", "--out", folder=False, suffix=".mp4")  # replaced, from its folder
    (tmp_path / "run").mkdir()
    check_output(tmp_path / "run", "--out", folder=True)
    check_output(tmp_path / "new" / "deeper" / "out.mp4", "--out", folder=False, suffix=".mp4")
    with pytest.raises(AnimlcmError, match="is a folder"):
        check_output(tmp_path / "run", "--out", folder=False)
    with pytest.raises(AnimlcmError, match="is a file, not a folder"):
        check_output(tmp_path / "out.mp4", "--out", folder=True)
    with pytest.raises(AnimlcmError, match="cannot be created because .*out.mp4 is a file"):
        check_output(tmp_path / "out.mp4" / "x.mp4", "--out", folder=False, suffix=".mp4")
    with pytest.raises(AnimlcmError, match="must end in .mp4"):
        check_output(tmp_path / "out.avi", "--out", folder=False, suffix=".mp4")


def test_render_twice_to_the_same_file(tmp_path):
    """Rendering again over the previous result (as `make demo` run twice does) replaces it."""
    from animlcm.cli import app
    from animlcm.stages.render import videoio

    ref = np.zeros((64, 48, 3), np.uint8)
    ref[8:60, 16:32] = (200, 120, 90)
    videoio.write_image(tmp_path / "ref.png", ref)
    args = ["render", str(tmp_path / "ref.png"), "--out", str(tmp_path / "o.mp4"), "--steps", "2",
            "--max-frames", "2", "--height", "64", "--width", "48"]  # fmt: skip
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "o.mp4").stat().st_size > 0 and (tmp_path / "o.preview.png").stat().st_size > 0

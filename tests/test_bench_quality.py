"""`make bench-quality`'s report (benchmarks/quality.py): the table it renders from eval's rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

QUALITY = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, steps, psnr, model, **looks):
    return {"method": method, "ablation": "", "steps": steps, "l1": 0.1, "psnr": psnr, "ssim": 0.5,
            "seconds_per_frame": 0.01, "peak_memory_mb": 100.0, "psnr_vs_teacher": 20.0, "model": model,
            **looks}  # fmt: skip


VARIANTS = {"spatial_steps": 10, "temporal_steps": 5, "batch": [4, 1], "lr": 1e-5, "w": 0.5}
BUDGET = {"vs_teacher_steps": 25, "vs_teacher_cfg": 1.5, "teacher_cfg": 3.5, "variants": VARIANTS}


def test_quality_md_shows_the_appearance_columns(quality, tmp_path):
    looks = dict(part_colour_error=31.25, psnr_person=14.5, psnr_background=19.75,
                 part_colour_errors={"head": 30.0, "torso": 32.5})  # fmt: skip
    rows = [
        _row("teacher", 25, 17.0, "built-in", **looks),
        _row("dancelcm", 4, 17.1, "built-in", **looks),
        _row("lcm", 4, 16.0, "variant", part_colour_error=40.0, psnr_person=13.0, psnr_background=18.0),
    ]
    quality._write(tmp_path, BUDGET, rows)
    text = (tmp_path / "quality.md").read_text()
    assert "part colour err is the RGB distance" in text  # the columns are explained above the tables
    header = "| method | ablation | steps | L1 | PSNR | SSIM | part colour err | PSNR person | PSNR bg |"
    assert text.count(header) == 2  # the built-in table and the variants' table
    assert "| dancelcm | - | 4 | 0.1000 | 17.10 | 0.5000 | 31.25 | 14.50 | 19.75 | 20.00 |" in text
    assert "| lcm | - | 4 | 0.1000 | 16.00 | 0.5000 | 40.00 | 13.00 | 18.00 | 20.00 |" in text
    saved = json.loads((tmp_path / "quality.json").read_text())["rows"]
    assert saved[0]["part_colour_errors"] == {"head": 30.0, "torso": 32.5}
    assert (tmp_path / "quality.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_md_from_rows_without_labels_has_no_appearance_columns(quality, tmp_path):
    quality._write(tmp_path, BUDGET, [_row("teacher", 25, 17.0, "built-in")])  # an older quality.json
    text = (tmp_path / "quality.md").read_text()
    assert "PSNR person" not in text and "part colour err" not in text
    assert "| teacher | - | 25 | 0.1000 | 17.00 | 0.5000 | 20.00 |" in text

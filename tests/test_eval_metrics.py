"""Eval's metrics against hand-computed values, LPIPS from a stand-in weights file, and the report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from animlcm.errors import AnimlcmError
from animlcm.stages.evaluate import lpips, metrics, report


def test_psnr_of_a_known_mse_and_l1():
    real = np.full((3, 16, 16, 3), 100, np.uint8)
    pred = real.copy()
    pred[..., :] = 110  # every pixel off by 10/255: MSE = (10/255)^2, L1 = 10/255
    m = metrics.frame_metrics(pred, real)
    assert m["l1"] == pytest.approx(10 / 255, rel=1e-5)
    assert m["psnr"] == pytest.approx(10 * math.log10(1 / (10 / 255) ** 2), rel=1e-5)
    assert m["ssim"] < 1.0


def test_psnr_is_averaged_per_frame():
    real = np.zeros((2, 8, 8, 3), np.uint8)
    pred = real.copy()
    pred[0] = 51  # frame 0: MSE 0.04 -> 13.98 dB; frame 1: MSE (1/255)^2 -> 48.13 dB
    pred[1] = 1
    m = metrics.frame_metrics(pred, real)
    expected = (10 * math.log10(1 / 0.04) + 10 * math.log10(255**2)) / 2
    assert m["psnr"] == pytest.approx(expected, rel=1e-4)


def test_identical_frames_and_shape_mismatch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (2, 24, 24, 3), dtype=np.uint8)
    m = metrics.frame_metrics(x, x)
    assert m["l1"] == 0 and m["ssim"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(AnimlcmError, match="differ in shape"):
        metrics.frame_metrics(x, x[:1])
    assert metrics.mean_rows([{"l1": 1.0, "psnr": 10.0}, {"l1": 3.0, "psnr": 20.0}]) == {
        "l1": 2.0,
        "psnr": 15.0,
    }


def _two_part_clip():
    """2 frames of 8x8 on grey 100: part 1 a 4x4 block (16 px), part 2 a 3x5 block (15 px, too few)."""
    real = np.full((2, 8, 8, 3), 100, np.uint8)
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, :4, :4] = 1
    labels[:, 5:8, 3:8] = 2
    pred = real.copy()
    # frame 0, part 1: half its pixels +20 red, half +40 red, all +40 green: mean shift (30, 40, 0) -> 50
    pred[0, :2, :4] += np.array([20, 40, 0], np.uint8)
    pred[0, 2:4, :4] += np.array([40, 40, 0], np.uint8)
    pred[1, :4, :4, 2] -= 10  # frame 1, part 1: mean shift (0, 0, -10) -> 10
    pred[:, 5:8, 3:8] = 0  # part 2 far off, but never 16 pixels large
    return pred, real, labels


def test_part_colour_error_of_known_mean_shifts():
    pred, real, labels = _two_part_clip()
    assert metrics.part_colour_errors(pred, real, labels) == {1: pytest.approx((50 + 10) / 2)}
    # the 15-pixel part counts once the threshold allows it: shift (-100, -100, -100) in both frames
    loose = metrics.part_colour_errors(pred, real, labels, min_pixels=15)
    assert loose[2] == pytest.approx(100 * math.sqrt(3))
    # the mean colour, not the per-pixel error: a texture shuffled inside the part has no colour error
    stripes = real.copy()
    stripes[:, ::2] = 200
    assert metrics.part_colour_errors(stripes[:, ::-1], stripes, np.ones((2, 8, 8), np.uint8)) == {
        1: pytest.approx(0.0)
    }
    # a part hidden in one frame is averaged over the frames that show it
    hidden = labels.copy()
    hidden[1, :4, :4] = 0
    assert metrics.part_colour_errors(pred, real, hidden) == {1: pytest.approx(50.0)}
    with pytest.raises(AnimlcmError, match="do not match"):
        metrics.part_colour_errors(pred, real, labels[:, :4])


def test_person_and_background_psnr_of_known_errors():
    real = np.zeros((2, 4, 8, 3), np.uint8)
    labels = np.zeros((2, 4, 8), np.uint8)
    labels[0, :2] = 3  # frame 0: 16 person pixels; frame 1: none
    pred = real.copy()
    pred[0][labels[0] > 0] = 51  # person off by 0.2: MSE 0.04 -> 13.98 dB
    pred[0][labels[0] == 0] = 1  # background off by 1/255 -> 48.13 dB
    pred[1] = 2  # frame 1 all background, off by 2/255 -> 42.11 dB
    person = metrics.masked_psnr(pred, real, labels > 0)
    assert person == pytest.approx(10 * math.log10(1 / 0.04))  # frame 1 has no person: not averaged in
    background = metrics.masked_psnr(pred, real, labels == 0)
    assert background == pytest.approx((10 * math.log10(255**2) + 10 * math.log10(255**2 / 4)) / 2)
    assert metrics.masked_psnr(pred, real, np.zeros((2, 4, 8), bool)) is None
    looks = metrics.appearance_metrics(pred, real, labels, ("background", "head", "torso", "left_arm"))
    assert looks["psnr_person"] == person and looks["psnr_background"] == background
    assert looks["part_colour_errors"] == {"left_arm": pytest.approx(51 * math.sqrt(3))}
    assert looks["part_colour_error"] == looks["part_colour_errors"]["left_arm"]


def test_appearance_is_averaged_over_clips_then_parts():
    a = {"part_colour_errors": {"head": 10.0, "torso": 20.0}, "part_colour_error": 15.0,
         "psnr_person": 20.0, "psnr_background": 30.0}  # fmt: skip
    b = {"part_colour_errors": {"head": 30.0}, "part_colour_error": 30.0,
         "psnr_person": 24.0, "psnr_background": None}  # fmt: skip
    row = metrics.mean_appearance([a, b])
    assert row["part_colour_errors"] == {"head": 20.0, "torso": 20.0}
    assert row["part_colour_error"] == 20.0  # the mean over parts, not over the clips' own means (22.5)
    assert row["psnr_person"] == 22.0 and row["psnr_background"] == 30.0
    assert metrics.mean_appearance([]) == dict.fromkeys(
        ("part_colour_error", "psnr_person", "psnr_background", "part_colour_errors")
    )


def _stand_in_lpips(path, seed=0):
    """AlexNet's layer layout with tiny channel counts, saved the way users save the real one."""
    g = torch.Generator().manual_seed(seed)
    chans = [3, 8, 12, 12, 8, 8]
    kernels = [11, 5, 3, 3, 3]
    sd = {}
    for k, (idx, c_in, c_out, ks) in enumerate(
        zip((0, 3, 6, 8, 10), chans[:-1], chans[1:], kernels, strict=True)
    ):
        sd[f"features.{idx}.weight"] = torch.randn(c_out, c_in, ks, ks, generator=g) * 0.1
        sd[f"features.{idx}.bias"] = torch.zeros(c_out)
        sd[f"lin{k}.model.1.weight"] = torch.rand(1, c_out, 1, 1, generator=g)
    save_file(sd, str(path))
    return sd


def test_lpips_from_stand_in_weights(tmp_path):
    path = tmp_path / "lpips.safetensors"
    _stand_in_lpips(path)
    net = lpips.load_lpips(path)
    a = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    b = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(net(a, a), torch.zeros(2), atol=1e-6)
    d = net(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(d, net(b, a))
    assert net(a, (a + 0.02).clamp(0, 1)).mean() < d.mean()  # a small change is closer than a new image


def test_lpips_bad_files(tmp_path):
    with pytest.raises(AnimlcmError, match="not found"):
        lpips.load_lpips(tmp_path / "none.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(AnimlcmError, match="missing features.0.weight"):
        lpips.load_lpips(tmp_path / "wrong.safetensors")


def test_report_files(tmp_path):
    rows = [
        report.MetricRow("lcd", "-", s, 0.1 / s, 20 + s, 0.5, 0.01 * s, 100.0, extra={"lpips": 0.3})
        for s in (1, 2, 4)
    ] + [report.MetricRow("teacher", "-", s, 0.05, 25.0, 0.6, 0.05 * s, 120.0) for s in (4, 25)]
    report.write_metrics_json(rows, tmp_path / "metrics.json")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report.ROW_KEYS) <= set(data["rows"][0]) and data["rows"][0]["lpips"] == 0.3
    assert [r["method"] for r in data["rows"]] == ["lcd"] * 3 + ["teacher"] * 2
    # a row read back (with a caller's label added) is the row written, its extra columns included
    assert [report.MetricRow.from_json({**r, "model": "variant"}) for r in data["rows"]] == rows
    table = report.markdown_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(rows) and "LPIPS" in lines[0] and "| teacher | - | 25 |" in table
    report.plot_sweep(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PSNR person" not in table  # no labels, no appearance columns


def test_report_appearance_columns_and_round_trip(tmp_path):
    looks = dict(part_colour_error=12.345, psnr_person=17.5, psnr_background=21.25,
                 part_colour_errors={"head": 10.0, "torso": 14.69})  # fmt: skip
    rows = [
        report.MetricRow("dancelcm", "", 4, 0.1, 18.0, 0.5, 0.01, 100.0, extra={"lpips": 0.3}, **looks),
        report.MetricRow("teacher", "", 25, 0.1, 19.0, 0.6, 0.05, 120.0),  # e.g. a cache without labels
    ]
    report.write_metrics_json(rows, tmp_path / "metrics.json")
    data = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert data[0]["part_colour_errors"] == {"head": 10.0, "torso": 14.69}
    assert data[0]["psnr_person"] == 17.5 and data[1]["psnr_person"] is None
    assert [report.MetricRow.from_json(r) for r in data] == rows
    assert "psnr_person" not in report.MetricRow.from_json(data[0]).extra
    old = {k: v for k, v in data[1].items() if k not in (*report.APPEARANCE_KEYS, "part_colour_errors")}
    assert report.MetricRow.from_json(old) == rows[1]  # a metrics.json from before the measure
    lines = report.markdown_table(rows).splitlines()
    assert "| SSIM | part colour err | PSNR person | PSNR bg | LPIPS |" in lines[0]
    assert "| 0.5000 | 12.35 | 17.50 | 21.25 | 0.3000 |" in lines[2]
    assert "| 0.6000 | - | - | - | - |" in lines[3]
    report.plot_sweep(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

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

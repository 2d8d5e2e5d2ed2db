"""`make bench-quality`'s report (benchmarks/quality.py): seed means and spreads, paired paper-claim
verdicts, the targets, and the tables it renders from eval's rows."""

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


def _row(method, steps, psnr, model, variant=None, seed=None, **looks):
    row = {"method": method, "ablation": "", "steps": steps, "l1": 0.1, "psnr": psnr, "ssim": 0.5,
           "seconds_per_frame": 0.01, "peak_memory_mb": 100.0, "psnr_vs_teacher": 20.0, "model": model,
           **looks}  # fmt: skip
    if variant is not None:
        row.update(variant=variant, seed=seed)
    return row


VARIANTS = {"spatial_steps": 10, "temporal_steps": 5, "batch": [4, 1], "lr": 1e-5, "w": 0.5}
BUDGET = {"vs_teacher_steps": 25, "vs_teacher_cfg": 1.5, "teacher_cfg": 3.5, "variants": VARIANTS,
          "seeds": [0, 1, 2], "heldout": {"clips": 8}, "claim_steps": 4}  # fmt: skip


def test_paired_differences_and_verdicts_by_hand(quality):
    full = [_row("dancelcm", 4, p, "variant", "dancelcm", s) for s, p in enumerate([20.0, 20.2, 20.4])]
    ablated = [
        _row("dancelcm", 4, p, "variant", "dancelcm-no-aux", s) for s, p in enumerate([19.0, 19.3, 19.5])
    ]
    mean, se, n = quality.paired(full + ablated, "dancelcm", "dancelcm-no-aux", 4, "psnr")
    # differences 1.0, 0.9, 0.9: mean 0.9333, sd 0.0577, standard error sd / sqrt(3) = 0.0333
    assert (mean, se, n) == (pytest.approx(0.93333, abs=1e-4), pytest.approx(0.03333, abs=1e-4), 3)
    assert quality.verdict(mean, se) == "reproduced"
    assert quality.verdict(-mean, se).startswith("not reproduced")
    assert quality.verdict(0.05, 0.03) == "within noise"  # under two standard errors
    assert quality.verdict(-2.5, 1.0, higher_is_better=False) == "reproduced"  # e.g. a colour error
    assert quality.verdict(1.0, float("nan")) == "within noise"  # one seed: no spread to judge by
    assert quality.paired(full, "dancelcm", "cosec", 4, "psnr") is None


def test_quality_md_shows_seed_means_spreads_claims_and_targets(quality, tmp_path):
    looks = dict(part_colour_error=31.25, psnr_person=14.5, psnr_background=19.75,
                 part_colour_errors={"head": 30.0, "torso": 32.5})  # fmt: skip
    rows = []
    for seed, shift in enumerate([-0.1, 0.0, 0.1]):
        rows += [
            _row("teacher", 25, 17.0 + shift, "built-in", "teacher", seed, **looks),
            _row("teacher", 4, 14.0 + shift, "built-in", "teacher", seed, **looks),
            _row("dancelcm", 4, 17.1 + shift, "built-in", "built-in", seed, **looks),
            _row("dancelcm", 4, 18.0 + shift, "variant", "dancelcm", seed),
            _row("dancelcm", 4, 17.0 + 2 * shift, "variant", "dancelcm-no-aux", seed),
        ]
    quality._write(tmp_path, BUDGET, rows)
    text = (tmp_path / "quality.md").read_text()
    assert "part colour err is the RGB distance" in text  # the columns are explained above the tables
    assert "| teacher | 25 | 17.00 ± 0.10 | 20.00 ± 0.00 | 31.25 ± 0.00 |" in text
    assert "| dancelcm-no-aux | 4 | 17.00 ± 0.20 |" in text
    # the claim: full minus ablated per seed is 1.1, 1.0, 0.9: +1.00 ± 0.06 (standard error), reproduced
    assert "| DanceLCM Table 3 | the auxiliary ground-truth head helps (`dancelcm` vs `dancelcm-no-aux`) | " \
           "+1.00 ± 0.06 |" in text  # fmt: skip
    assert "| 3 | reproduced | within noise |" in text  # every row has the same PSNR vs teacher here
    # the targets, from the means: 4-step student +0.10 dB against the teacher at 25, +3.10 over its 4 steps
    assert "within 0.3 dB of the teacher at 25 steps: +0.10 dB (met)" in text
    assert "above the teacher's 4-step DDIM: +3.10 dB (met)" in text
    assert "**Noise floor.**" in text and "spreads by 0.10 dB" in text
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert len(saved["rows"]) == 15 and saved["rows"][0]["part_colour_errors"] == {
        "head": 30.0,
        "torso": 32.5,
    }
    dance = next(m for m in saved["means"] if m["variant"] == "dancelcm")
    assert (
        dance["seeds"] == 3
        and dance["psnr"] == pytest.approx(18.0)
        and dance["psnr_sd"] == pytest.approx(0.1)
    )
    assert (tmp_path / "quality.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_md_from_rows_without_labels_or_seeds(quality, tmp_path):
    old_budget = {k: v for k, v in BUDGET.items() if k not in ("seeds", "heldout")}
    quality._write(tmp_path, old_budget, [_row("teacher", 25, 17.0, "built-in")])  # an older quality.json
    text = (tmp_path / "quality.md").read_text()
    assert "PSNR person" not in text and "part colour err" not in text
    assert "| teacher | - | 25 | 0.1000 | 17.00 | 0.5000 | 20.00 |" in text

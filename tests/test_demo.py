"""`make demo` (``animlcm.demo``): a held-out dancer re-animated by the built-in student, measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from animlcm.cache import CacheReader
from animlcm.demo import ASSETS, run_demo
from animlcm.stages.evaluate import metrics
from animlcm.stages.render.preview import LABEL_H
from animlcm.stages.render.videoio import read_image, read_video
from animlcm.synth import layout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if not (ASSETS / "student" / "animlcm.json").exists():
        pytest.skip("no built-in student in src/animlcm/assets/tiny (make models builds it)")
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, steps=2, frames=8)


def test_demo_writes_its_files_and_measures_appearance(demo):
    out, report = demo
    for name in ("demo.mp4", "demo.preview.png", "side_by_side.mp4", "side_by_side.png", "demo.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "demo.json").read_text()) == report
    assert report["frames"] == 8 and report["steps"] == 2
    # the appearance measure is eval's, on the student's video against the cached truth and its labels
    generated, _ = read_video(out / "demo.mp4")
    with CacheReader(out / "cache").open("id000_clip00") as entry:
        truth, labels = entry.frames(slice(None)), entry.part_labels(slice(None))
    expected = metrics.appearance_metrics(generated, truth, labels, layout.PART_NAMES)
    assert report["part_colour_error"] == pytest.approx(expected["part_colour_error"])
    assert set(report["part_colour_errors"]) == set(layout.PART_NAMES[1:])  # every part, in a full-body clip
    assert report["psnr_person"] == pytest.approx(expected["psnr_person"])
    assert report["psnr_background"] == pytest.approx(expected["psnr_background"])


def test_side_by_side_is_reference_truth_student_with_captions(demo):
    out, _ = demo
    image = read_image(out / "side_by_side.png")
    generated, _ = read_video(out / "demo.mp4")
    with CacheReader(out / "cache").open("id000_clip00") as entry:
        truth = entry.frames(slice(None))
    h, w = truth.shape[1:3]
    assert image.shape == (6 * (LABEL_H + h), 3 * w, 3)  # six frames down, three panels across
    first, last = image[LABEL_H : LABEL_H + h], image[-h:]
    np.testing.assert_array_equal(first[:, :w], truth[0])  # the reference: the first frame, held still
    np.testing.assert_array_equal(last[:, :w], truth[0])
    np.testing.assert_array_equal(last[:, w : 2 * w], truth[-1])  # the ground truth, frame by frame
    np.testing.assert_array_equal(last[:, 2 * w :], generated[-1])  # the student
    strip = image[:LABEL_H]
    assert strip.min() < 60 and strip.max() > 200  # a dark caption strip with light text

"""Context windows for long videos: coverage, full-length windows, blend weights summing to 1."""

from __future__ import annotations

import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.render.windows import blend, context_windows, window_weights, windowed_denoiser


@pytest.mark.parametrize(
    "frames,window,overlap",
    [(1, 16, 4), (16, 16, 4), (17, 16, 4), (40, 16, 4), (24, 8, 2), (100, 16, 0), (9, 4, 3)],
)
def test_windows_cover_every_frame_and_weights_sum_to_one(frames, window, overlap):
    wins = context_windows(frames, window, overlap)
    covered = torch.zeros(frames, dtype=torch.bool)
    for w in wins:
        assert len(w) == min(window, frames)  # the motion modules always see a full window
        assert 0 <= w.start and w.stop <= frames
        covered[w.start : w.stop] = True
    assert covered.all()
    weights = window_weights(wins, frames, overlap)
    assert weights.shape == (len(wins), frames)
    torch.testing.assert_close(weights.sum(0), torch.ones(frames, dtype=torch.float64))
    # a window gives no weight outside its frames
    for k, w in enumerate(wins):
        outside = torch.ones(frames, dtype=torch.bool)
        outside[w.start : w.stop] = False
        assert (weights[k][outside] == 0).all()


def test_window_starts_by_hand():
    assert [w.start for w in context_windows(40, 16, 4)] == [0, 12, 24]
    assert [w.start for w in context_windows(30, 16, 4)] == [0, 12, 14]  # last one shifted back to the end


def test_overlap_ramp_by_hand():
    wins = context_windows(6, 4, 2)  # windows [0,4) and [2,6)
    w = window_weights(wins, 6, 2)
    # ramp over 2 frames: raw weights 1/3, 2/3, 2/3, 1/3 at window positions 0..3
    # frame 2: first window pos 2 (2/3), second pos 0 (1/3) -> 2/3 and 1/3 after normalising
    torch.testing.assert_close(w[:, 2], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(w[:, 3], torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    assert w[0, 0] == 1 and w[1, 5] == 1


def test_blend_of_a_constant_is_the_constant():
    wins = context_windows(20, 8, 3)
    weights = window_weights(wins, 20, 3)
    outs = [torch.full((1, 4, 8, 2, 2), 3.0) for _ in wins]
    torch.testing.assert_close(blend(outs, wins, weights), torch.full((1, 4, 20, 2, 2), 3.0))


def test_windowed_denoiser_is_exact_for_a_per_frame_function():
    # a denoiser that acts frame by frame gives the same answer whatever the windows
    calls = []

    def denoise_window(x, t, frames):
        calls.append(frames)
        return x * 0.5 + t.view(-1, 1, 1, 1, 1)

    x = torch.randn(1, 4, 21, 3, 3)
    t = torch.tensor([7.0])
    full = windowed_denoiser(denoise_window, 21, 8, 2)(x, t)
    torch.testing.assert_close(full, x * 0.5 + 7.0)
    assert len(calls) == len(context_windows(21, 8, 2)) > 1


def test_bad_window_settings_fail_clearly():
    with pytest.raises(AnimlcmError, match="overlap"):
        context_windows(10, 4, 4)
    with pytest.raises(AnimlcmError, match="no frames"):
        context_windows(0, 4, 1)

"""Timestep grids: skipping grid, LCM timesteps (spec + diffusers), teacher timesteps, segments, pairs."""

from __future__ import annotations

import json

import pytest
import torch

from animlcm.diffusion.schedule import NoiseSchedule
from animlcm.diffusion.timesteps import (
    ddim_grid,
    grid_levels,
    lcm_timesteps,
    sample_timestep_pairs,
    segment_edges,
    segment_of,
    segmented_plan,
    teacher_timesteps,
)
from animlcm.errors import AnimlcmError


@pytest.fixture(scope="module")
def spec(shared_dir):
    return json.loads((shared_dir / "data" / "spec_vectors.json").read_text())


def test_ddim_grid_and_levels():
    grid = ddim_grid()
    assert grid.tolist()[:3] == [19, 39, 59] and grid[-1].item() == 999 and len(grid) == 50
    assert set(torch.diff(grid).tolist()) == {20}  # skip k = 20
    assert grid_levels().tolist()[:2] == [0, 19] and len(grid_levels()) == 51
    with pytest.raises(AnimlcmError):
        ddim_grid(0)


def test_lcm_timesteps_spec(spec):
    for original in (50, 100):
        for steps, expected in spec[f"lcm_timesteps_original{original}"].items():
            assert lcm_timesteps(int(steps), original) == expected


def test_lcm_timesteps_match_diffusers_for_every_step_count():
    lcm = NoiseSchedule.sd15().make_scheduler("lcm")
    for original in (50, 100):
        for steps in range(1, original + 1):
            lcm.set_timesteps(steps, original_inference_steps=original)
            assert lcm_timesteps(steps, original) == lcm.timesteps.tolist(), (original, steps)
    with pytest.raises(AnimlcmError, match="steps=0"):
        lcm_timesteps(0)


def test_teacher_timesteps_hand_and_diffusers():
    assert teacher_timesteps(4, NoiseSchedule.zero_snr_v()) == [999, 749, 499, 249]  # trailing
    assert teacher_timesteps(4, NoiseSchedule.sd15()) == [751, 501, 251, 1]  # leading, offset 1
    for schedule in (NoiseSchedule.sd15(), NoiseSchedule.zero_snr_v()):
        ddim = schedule.make_scheduler("ddim")
        ddim.set_timesteps(25)
        assert teacher_timesteps(25, schedule) == ddim.timesteps.tolist()


def test_segment_edges_and_segment_of():
    assert segment_edges(1) == [0, 999]
    assert segment_edges(2) == [0, 499, 999]
    assert segment_edges(4) == [0, 259, 499, 759, 999]
    levels = grid_levels().tolist()
    for k in range(1, 11):
        edges = segment_edges(k)
        assert len(edges) == k + 1 and all(e in levels for e in edges) and edges == sorted(set(edges))
    edges = segment_edges(2)
    t = torch.tensor([999, 519, 500, 499, 19, 0])
    assert segment_of(t, edges).tolist() == [1, 1, 1, 0, 0, 0]
    with pytest.raises(AnimlcmError, match="K=0"):
        segment_edges(0)


def test_plain_pairs():
    pairs = sample_timestep_pairs(4000, generator=torch.Generator().manual_seed(0))
    grid = set(ddim_grid().tolist())
    assert set(pairs.t_start.tolist()) == grid  # every grid point gets drawn
    assert torch.equal(pairs.t_end, (pairs.t_start - 20).clamp(min=0))
    assert torch.equal(grid_levels()[pairs.index], pairs.t_end)
    assert pairs.index.min().item() == 0 and pairs.index.max().item() == 49
    assert not pairs.boundary.any() and not pairs.segment.any()
    again = sample_timestep_pairs(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.t_start, pairs.t_start)  # a function of the generator


@pytest.mark.parametrize("adjacent", [True, False])
def test_segmented_pairs_stay_in_their_segment(adjacent):
    edges = segment_edges(2)
    p = sample_timestep_pairs(
        3000, edges=edges, adjacent=adjacent, generator=torch.Generator().manual_seed(1)
    )
    e = torch.tensor(edges)
    assert torch.equal(p.boundary, e[p.segment])
    assert bool((p.t_start > p.boundary).all()) and bool((p.t_start <= e[p.segment + 1]).all())
    assert bool((p.t_end >= p.boundary).all()) and bool((p.t_end < p.t_start).all())
    assert set(p.segment.tolist()) == {0, 1}
    assert set(p.t_end.tolist()) <= set(grid_levels().tolist())
    assert (p.t_end == 499).any()  # the edge itself is a valid t_n
    gaps = (p.t_start - p.t_end).unique().tolist()
    if adjacent:
        assert torch.equal(p.t_end, (p.t_start - 20).clamp(min=0))  # one skip-k solver step
    else:
        assert max(gaps) > 20  # eq. 4 literally: t_n anywhere in [s_o, t_m)
    with pytest.raises(AnimlcmError, match="not on the DDIM grid"):
        sample_timestep_pairs(2, edges=[0, 500, 999])


def test_segmented_plan():
    assert segmented_plan(segment_edges(2)) == [(999, 499), (499, 0)]
    assert segmented_plan(segment_edges(1), 4) == [(t, 0) for t in lcm_timesteps(4)]
    assert segmented_plan(segment_edges(2), 4) == [(999, 499), (759, 499), (499, 0), (259, 0)]
    assert segmented_plan(segment_edges(2), 3) == [(999, 499), (759, 499), (499, 0)]  # extra step on top
    with pytest.raises(AnimlcmError, match="fewer than the 2 segments"):
        segmented_plan(segment_edges(2), 1)

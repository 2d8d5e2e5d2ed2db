"""Timestep grids: the DDIM skipping grid, LCM inference timesteps, segment edges, training pairs.

The skipping grid (LCM, AnimateLCM "sample sparse timesteps from dense timesteps"): N = 50 of T = 1000 steps,
skip k = T // N = 20, grid points t_i = (i + 1) k - 1 = 19, 39, ..., 999 (diffusers' LCM distill script and
LCMScheduler use exactly these). Below the first point lies the boundary t = 0, so the "levels" a trajectory
visits are [0, 19, 39, ..., 999] (N + 1 values), and a solver step goes from level n + 1 to level n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from animlcm.errors import AnimlcmError


def ddim_grid(num_ddim_steps: int = 50, num_train_timesteps: int = 1000) -> Tensor:
    """The skipping grid, ascending, (N,) long: (i + 1) * k - 1 for i < N, k = T // N (19, 39, ..., 999)."""
    if not 1 <= num_ddim_steps <= num_train_timesteps:
        raise AnimlcmError(
            f"DDIM grid: num_ddim_steps={num_ddim_steps} must be in [1, {num_train_timesteps}] (50 is usual)"
        )
    k = num_train_timesteps // num_ddim_steps
    return torch.arange(1, num_ddim_steps + 1, dtype=torch.long) * k - 1


def grid_levels(num_ddim_steps: int = 50, num_train_timesteps: int = 1000) -> Tensor:
    """[0] + ddim_grid: the N + 1 levels of a trajectory, ascending; level n + 1 steps to level n."""
    return torch.cat([torch.zeros(1, dtype=torch.long), ddim_grid(num_ddim_steps, num_train_timesteps)])


def lcm_timesteps(steps: int, original_steps: int = 50, num_train_timesteps: int = 1000) -> list[int]:
    """LCM inference timesteps, descending (= diffusers LCMScheduler.set_timesteps).

    4 of 50 -> [999, 759, 499, 259]: `steps` evenly spaced indices (floor of linspace, endpoint excluded)
    into the descending skipping grid.
    """
    if not 1 <= steps <= original_steps:
        raise AnimlcmError(f"LCM timesteps: steps={steps} must be in [1, {original_steps}] (original_steps)")
    grid = ddim_grid(original_steps, num_train_timesteps).flip(0).tolist()
    # i * (N / steps) in float64, floored: bit-for-bit numpy's linspace(0, N, steps, endpoint=False) there
    step = original_steps / steps
    return [grid[math.floor(i * step)] for i in range(steps)]


def teacher_timesteps(steps: int, schedule) -> list[int]:
    """The teacher's DDIM sampling timesteps, descending, exactly as diffusers' DDIMScheduler.set_timesteps
    spaces them for this schedule (`timestep_spacing`, `steps_offset`)."""
    if not 1 <= steps <= schedule.num_train_timesteps:
        raise AnimlcmError(
            f"teacher timesteps: steps={steps} must be in [1, {schedule.num_train_timesteps}] (25-50 usual)"
        )
    scheduler = schedule.make_scheduler("ddim")
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def segment_edges(num_segments: int, num_ddim_steps: int = 50, num_train_timesteps: int = 1000) -> list[int]:
    """Edges s_0 < s_1 < ... < s_K of K segments (DanceLCM eq. 4; Multistep CM), all on the grid levels.

    s_0 = 0, s_K = T - 1 and the inner edges are the LCM inference timesteps for K steps, so walking the edges
    with one call per segment visits exactly the LCM K-step timesteps: K = 2 -> [0, 499, 999],
    K = 4 -> [0, 259, 499, 759, 999]. K = 1 -> [0, 999] (plain LCD).
    """
    if not 1 <= num_segments <= num_ddim_steps:
        raise AnimlcmError(
            f"segments: K={num_segments} must be in [1, {num_ddim_steps}] (the DDIM grid size); 2 is usual"
        )
    inner = lcm_timesteps(num_segments, num_ddim_steps, num_train_timesteps)[1:]
    top = int(ddim_grid(num_ddim_steps, num_train_timesteps)[-1])
    return [0, *sorted(inner), top]


def segment_of(t: Tensor | int, edges: list[int] | Tensor) -> Tensor:
    """Index o of the segment holding t, with segments half-open from below: s_o < t <= s_{o+1} (t = 0 -> 0).

    A point on an inner edge belongs to the segment above it, whose lower edge it is not: at t = s_o there is
    nothing left to do in segment o (t_n in [s_o, t_m) is empty), so the sampler moves on to segment o - 1.
    """
    edges_t = torch.as_tensor(edges, dtype=torch.long)
    t = torch.as_tensor(t, dtype=torch.long)
    o = torch.searchsorted(edges_t.to(t.device), t, right=False) - 1
    return o.clamp(0, len(edges_t) - 2)


@dataclass
class TimestepPairs:
    """A batch of training pairs (t_{n+k} > t_n) and where they sit. All (B,) long tensors."""

    t_start: Tensor
    """t_{n+k} (t_m in DanceLCM): where x is noised and the student is evaluated."""
    t_end: Tensor
    """t_n: where the teacher's DDIM step lands and the EMA target is evaluated."""
    index: Tensor
    """n: the level index of t_n in `grid_levels` (0..N-1), for AnimateLCM's weighting lambda_n."""
    segment: Tensor
    """o: the segment of the pair (0 for plain LCD)."""
    boundary: Tensor
    """s_o: the lower edge both student and target map to (0 for plain LCD)."""


def sample_timestep_pairs(
    batch_size: int,
    *,
    num_ddim_steps: int = 50,
    num_train_timesteps: int = 1000,
    edges: list[int] | None = None,
    adjacent: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> TimestepPairs:
    """Draw consistency-distillation pairs (t_{n+k}, t_n) on the skipping grid.

    Plain LCD (`edges` None): t_{n+k} uniform on the grid (19..999), t_n the level below it
    (t_{n+k} - k, or 0), as diffusers' LCM distill script does.
    Segmented CD (`edges` from `segment_edges`, DanceLCM eq. 4): t_m uniform over the grid points with
    s_o < t_m <= s_{o+1} over all segments (so segments are drawn in proportion to their length), then
    - `adjacent=True`: t_n = the level just below t_m (one solver step; never below s_o, a level itself);
    - `adjacent=False`: t_n uniform over the levels in [s_o, t_m), eq. 4 literally. The teacher then bridges
      t_m -> t_n with ONE DDIM step, a coarse ODE solve for long gaps, which is why adjacent is the default
      (LCM and Phased CM also use one skip-k step).
    """
    levels = grid_levels(num_ddim_steps, num_train_timesteps)
    # m: level index of t_m in 1..N
    m = torch.randint(1, num_ddim_steps + 1, (batch_size,), generator=generator)
    if edges is None:
        segment = torch.zeros_like(m)
        lower = torch.zeros_like(m)  # level index of the boundary s_o
    else:
        edge_idx = torch.searchsorted(levels, torch.as_tensor(edges, dtype=torch.long))
        if len(edges) < 2 or not torch.equal(
            levels[edge_idx.clamp(max=len(levels) - 1)], torch.as_tensor(edges)
        ):
            raise AnimlcmError(
                f"segment edges {list(edges)} are not on the DDIM grid; build them with segment_edges"
            )
        segment = segment_of(levels[m], edges)
        lower = edge_idx[segment]
    if adjacent:
        n = m - 1
    else:
        # uniform integer in [lower, m - 1]
        span = (m - lower).to(torch.float64)
        n = (
            lower
            + torch.floor(torch.rand(batch_size, generator=generator, dtype=torch.float64) * span).long()
        )
    pairs = TimestepPairs(
        t_start=levels[m], t_end=levels[n], index=n, segment=segment, boundary=levels[lower]
    )
    for name in ("t_start", "t_end", "index", "segment", "boundary"):
        setattr(pairs, name, getattr(pairs, name).to(device or "cpu"))
    return pairs


def segmented_plan(
    edges: list[int], steps: int | None = None, num_ddim_steps: int = 50, num_train_timesteps: int = 1000
) -> list[tuple[int, int]]:
    """The (t, s) calls a segmented sampler makes, from s_K down: at each, the student maps x_t to edge s.

    steps = None or K: one call per segment, t = s_{o+1}, s = s_o. More steps: each segment is split evenly on
    the grid levels (the first `steps % K` segments from the top get one extra step); the sampler re-noises
    from the edge estimate to the next t inside the segment. With K = 1 this gives the LCM timesteps.
    """
    levels = grid_levels(num_ddim_steps, num_train_timesteps).tolist()
    num_segments = len(edges) - 1
    steps = num_segments if steps is None else steps
    if steps < num_segments:
        raise AnimlcmError(
            f"sampling: steps={steps} is fewer than the {num_segments} segments; use at least {num_segments}"
        )
    missing = [e for e in edges if e not in levels]
    if missing:
        raise AnimlcmError(f"segment edges {missing} are not on the DDIM grid; build them with segment_edges")
    base, extra = divmod(steps, num_segments)
    plan: list[tuple[int, int]] = []
    for rank, o in enumerate(range(num_segments - 1, -1, -1)):
        n_o = base + (1 if rank < extra else 0)
        lo, hi = levels.index(edges[o]), levels.index(edges[o + 1])
        if n_o > hi - lo:
            raise AnimlcmError(
                f"sampling: {n_o} steps in segment [{edges[o]}, {edges[o + 1]}] exceed its {hi - lo} grid "
                "points; use fewer steps"
            )
        for j in range(n_o):
            plan.append((levels[hi - (j * (hi - lo)) // n_o], edges[o]))
    return plan

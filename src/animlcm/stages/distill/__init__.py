"""`animlcm distill`: consistency distillation of a pose-guided animation teacher into a few-step student.

Pure parts (no nn.Module, tested against hand-computed values and `data/spec_vectors.json`):
- `losses.py`: pseudo-Huber / L2, the CD loss with motion-mask weighting (DanceLCM eq. 7) and AnimateLCM's
  lambda_n, the aux-head loss (DanceLCM eq. 5/8), CoSeC's ETA / bounded CoNS (eq. 4-5) and the temporal
  self-dependency loss (eq. 6-8).
- `targets.py`: one CD target: the CFG-augmented teacher DDIM step, the teacher-free target,
  f_student and f_target.
The schedule, parametrisation, timestep grids and samplers they use live in `animlcm.diffusion`.
"""

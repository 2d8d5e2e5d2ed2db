"""Diffusion math shared by distill, render and the tests: pure functions of tensors, no nn.Module.

- `schedule`: `NoiseSchedule` (betas -> alphas_cumprod through diffusers' own scheduler code).
- `param`: prediction-type conversions (eps / v / x0), the DDIM step and the consistency parametrisations.
- `timesteps`: the skipping grid, LCM inference timesteps, segment edges, training pair sampling.
- `sampling`: k-diffusion style samplers over a denoiser callable (student consistency, teacher DDIM + CFG).
"""

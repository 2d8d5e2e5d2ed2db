#!/usr/bin/env bash
# Real-size speed and memory on a lent GPU: SD1.5 + AnimateDiff architecture (random weights: the cost of a
# step does not depend on them), 512x768, 16 frames, bf16.
# On the device machine:  source benchmarks/gpu/env.sh && bash benchmarks/gpu/sd15.sh OUT
set -uo pipefail
out=${1:?usage: sd15.sh OUT}
python3 benchmarks/bench_render.py --preset sd15 --random --frames 16 --repeats 2 \
    --json "$out/render_sd15.json" 2>&1 | tee "$out/render_sd15.log"
# a distill step per method and stage, bf16 + gradient checkpointing: measured peak next to the planned one
python3 benchmarks/bench_distill.py --preset sd15 --random --frames 16 --methods lcm,dancelcm,cosec,animatelcm \
    --stages spatial,temporal --steps 3 --mixed-precision bf16 --gradient-checkpointing \
    --work /tmp/bench_distill --out "$out/distill_sd15.json" \
    2>&1 | tee "$out/distill_sd15.log"
# the teacher's two CFG passes as one call of twice the batch (--batched-cfg; off by default until measured)
python3 benchmarks/bench_distill.py --preset sd15 --random --frames 16 --methods dancelcm --stages spatial \
    --steps 3 --mixed-precision bf16 --gradient-checkpointing --batched-cfg \
    --work /tmp/bench_distill --out "$out/distill_sd15_batched_cfg.json" 2>&1 | tee "$out/distill_batched_cfg.log"

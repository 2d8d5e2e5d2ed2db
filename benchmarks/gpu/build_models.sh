#!/usr/bin/env bash
# `make models` on a lent GPU: the built-in teacher and student (the shipped GPU-trained VAE is reused) on
# 2000 synthetic dancers, with larger batches, the cache preloaded into memory and wall-clock budgets per
# run (the step counts are whatever fits; build.json records them). About 9 minutes on one H200 (untested
# there: written 2026-12-02 on a CPU-only session; synth and extract use 14 processes).
# On the device machine:  source benchmarks/gpu/env.sh && bash benchmarks/gpu/build_models.sh OUT
# TEACHER_WIDTHS=64,128 builds a ~4x bigger teacher (8.05 M parameters), which learns more per sample
# (benchmarks/README.md, "Teacher generalisation"); TEACHER_MINUTES sets its spatial budget.
# OUT receives build.log, logs.tar.gz (every run's log.jsonl and config.yaml) and assets.tar.part-* (the
# built-in models in 15 MB pieces: `cat assets.tar.part-* | tar -x` puts back assets/).
set -uo pipefail
out=${1:?usage: build_models.sh OUT}
work=/tmp/build_models
python3 -m animlcm.synth.build_models --work "$work" --out "$work/assets" \
    --extract-jobs 14 --num-workers 0 --preload ${TEACHER_WIDTHS:+--teacher-widths $TEACHER_WIDTHS} \
    --teacher-batch 64 --teacher-steps 1000000 --teacher-minutes ${TEACHER_MINUTES:-4.0} \
    --teacher-temporal-batch 16 --teacher-temporal-steps 100000 --teacher-temporal-minutes 1.0 \
    --student-batch 16 --student-steps 100000 --student-minutes 1.2 \
    --student-temporal-batch 4 --student-temporal-steps 100000 --student-temporal-minutes 0.5 \
    2>&1 | grep --line-buffered -v "━" | tee "$out/build.log"
(cd "$work" && tar -czf "$out/logs.tar.gz" --exclude=checkpoints --exclude='*.safetensors' \
    $(ls -d */log.jsonl */config.yaml vae/config.json 2>/dev/null))
if [ -d "$work/assets" ]; then
    tar -c -C "$work" assets | split -b 15m - "$out/assets.tar.part-"
else  # a build cut short: bring back the finished pieces (no checkpoints) to resume from
    (cd "$work" && tar -c --exclude=checkpoints --exclude=cache --exclude=videos . | split -b 15m - "$out/work.tar.part-")
fi
ls -la "$out"

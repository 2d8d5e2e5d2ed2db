#!/usr/bin/env bash
# `make models` on a lent GPU: the built-in VAE, teacher and student with larger batches, a wider VAE and
# wall-clock budgets per run (the step counts are whatever fits; build.json records them).
# On the device machine:  source benchmarks/gpu/env.sh && bash benchmarks/gpu/build_models.sh OUT
# What ships was built without TEACHER_WIDTHS (the default 32,64 teacher); TEACHER_WIDTHS=64,128 builds a ~4x
# bigger teacher (8.05 M parameters) for the next GPU session to try.
# OUT receives build.log, logs.tar.gz (every run's log.jsonl and config.yaml) and assets.tar.part-* (the
# built-in models in 15 MB pieces: `cat assets.tar.part-* | tar -x` puts back assets/).
set -uo pipefail
out=${1:?usage: build_models.sh OUT}
work=/tmp/build_models
python3 -m animlcm.synth.build_models --work "$work" --out "$work/assets" \
    --vae-channels 16,32,64,64 --vae-crop 128 --vae-batch 32 --vae-steps 8000 --vae-minutes 1.5 \
    --extract-jobs 12 --num-workers 6 ${TEACHER_WIDTHS:+--teacher-widths $TEACHER_WIDTHS} \
    --teacher-batch 32 --teacher-steps 100000 --teacher-minutes 2.5 \
    --teacher-temporal-batch 8 --teacher-temporal-steps 100000 --teacher-temporal-minutes 1.0 \
    --student-batch 8 --student-steps 100000 --student-minutes 1.0 \
    --student-temporal-batch 2 --student-temporal-steps 100000 --student-temporal-minutes 0.6 \
    2>&1 | grep --line-buffered -v "━" | tee "$out/build.log"
(cd "$work" && tar -czf "$out/logs.tar.gz" --exclude=checkpoints --exclude='*.safetensors' \
    $(ls -d */log.jsonl */config.yaml vae/config.json 2>/dev/null))
if [ -d "$work/assets" ]; then
    tar -c -C "$work" assets | split -b 15m - "$out/assets.tar.part-"
else  # a build cut short: bring back the finished pieces (no checkpoints) to resume from
    (cd "$work" && tar -c --exclude=checkpoints --exclude=cache --exclude=videos . | split -b 15m - "$out/work.tar.part-")
fi
ls -la "$out"

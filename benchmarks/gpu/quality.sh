#!/usr/bin/env bash
# `make bench-quality` on a lent GPU: the training cache is rebuilt there (the same synth call as
# `make models`, extracted with the built-in teacher's VAE), then every variant is distilled, six at a time.
# On the device machine:  source benchmarks/gpu/env.sh && bash benchmarks/gpu/quality.sh OUT
set -uo pipefail
out=${1:?usage: quality.sh OUT}
w=/tmp/quality
teacher=src/animlcm/assets/tiny/teacher
python3 -m animlcm synth --out $w/videos --identities 12 --clips 4 --frames 48 --size 128 --seed 0 >/dev/null
for i in $(seq 0 11); do
    python3 -m animlcm extract $w/videos --out $w/cache --preset tiny --pose groundtruth --teacher $teacher \
        --shard $i/12 >/dev/null 2>&1 &
done
wait
echo "training cache: $(ls $w/cache/*.h5 | wc -l) videos"
timeout 510 python3 benchmarks/quality.py --out "$out" --work $w/work --train-cache $w/cache --jobs 6 \
    --batch 8 --temporal-batch 2 --spatial-steps 200 --temporal-steps 50 --num-workers 2 \
    --variants dancelcm lcm cosec animatelcm dancelcm-no-segments dancelcm-no-aux dancelcm-no-motion \
    dancelcm-no-face dancelcm-K4 cosec-no-eta cosec-no-cons cosec-no-temporal-sdm \
    2>&1 | grep --line-buffered -v "━" | grep --line-buffered "^\$ animlcm\|rror\|^|\|^#\|Traceback" | tee "$out/quality.log"
ls -la "$out"

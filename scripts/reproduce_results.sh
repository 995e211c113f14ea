#!/usr/bin/env bash
# Reproduce the README's "Results" figures on CPU (2 cores: about 1.5-2 hours in all).
#   bash scripts/reproduce_results.sh [CAMVID_DIR] [OUT]
# Each step resumes or skips when its output is already complete.
set -euo pipefail
cd "$(dirname "$0")/.."
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs}
S=.venv/bin/synthseg
make setup >/dev/null
mkdir -p "$OUT/camvid" "$OUT/cls"

# 1. A U-Net on all of real CamVid train (the FCN-score reference and the quality filter).
[ -f "$OUT/camvid/unet_real/metrics.json" ] || \
  $S unet train --data "camvid:$CAMVID" --image-size 128x160 --epochs 40 --batch-size 8 --out "$OUT/camvid/unet_real"
# 2. pix2pix on CamVid train (128x160, 2000 steps of batch 8).
$S gan train --data "camvid:$CAMVID" --out "$OUT/camvid/gan" --image-size 128x160 --batch-size 8 \
  --steps 2000 --base-filters 32 --log-every 50 --image-every 250 --checkpoint-every 250 --resume
# 3. FCN-score on CamVid val: the real-trained U-Net on generated images vs their label maps.
$S gan evaluate --generator "$OUT/camvid/gan" --segmenter "$OUT/camvid/unet_real/model" \
  --data "camvid:$CAMVID?split=val" --out "$OUT/camvid/gan_eval"
# 4. 1,000 new samples: sampled label maps (rare classes boosted), quality-filtered.
$S generate --generator "$OUT/camvid/gan" --masks sample --class-balance rare --n 1000 \
  --quality-model "$OUT/camvid/unet_real/model" --min-quality 0.25 --out "$OUT/camvid/synthetic"
# 5. Real vs real+synthetic U-Nets on 25% of CamVid train, 3 seeds, evaluated on val.
$S experiment segmentation --data "camvid:$CAMVID" --synthetic "$OUT/camvid/synthetic" \
  --fractions 0.25 --seeds 3 --settings real,real+synthetic --image-size 128x160 --steps 300 --out "$OUT/camvid/experiment"
# 6. Classification: a class-conditional pix2pix on Canny edges of demo-classes, class-balanced
#    synthetic images, classifiers with and without them over 3 seeds.
$S gan train --data demo-classes --out "$OUT/cls/gan" --image-size 64 --batch-size 16 --steps 800 \
  --base-filters 32 --log-every 100 --image-every 400 --checkpoint-every 400 --resume
$S generate --generator "$OUT/cls/gan" --masks sample --labels balanced --n 740 --out "$OUT/cls/synthetic"
$S experiment classification --data demo-classes --synthetic "$OUT/cls/synthetic" --seeds 3 --epochs 20 --patience 4 --out "$OUT/cls/experiment"
echo "reports: $OUT/camvid/experiment/report/report.html $OUT/cls/experiment/report/report.html"

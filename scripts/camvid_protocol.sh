#!/usr/bin/env bash
# The README's CamVid figures under the honest protocol (CPU, 2 cores; hours - every step resumes).
#   bash scripts/camvid_protocol.sh [CAMVID_DIR] [OUT] [FRACTION] [SETTINGS]
# One subset per fraction (subset seed 0): its fit images train pix2pix, the quality U-Net, the
# FreeMask-filtered synthetic set and the copy-paste set; U-Nets in every setting x 3 seeds stop
# early on the subset's selection images and are scored once on CamVid val.
set -euo pipefail
cd "$(dirname "$0")/.."
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs}
FRACTION=${3:-0.25}
SETTINGS=${4:-real,real+augment,real+copypaste,real+synthetic,synthetic}
make setup >/dev/null
.venv/bin/synthseg experiment segmentation --data "camvid:$CAMVID" --fractions "$FRACTION" --seeds 3 \
  --subset-seed 0 --settings "$SETTINGS" --image-size 96x128 --batch-size 8 --steps 400 --patience 8 \
  --out "$OUT/camvid_protocol_f$FRACTION"

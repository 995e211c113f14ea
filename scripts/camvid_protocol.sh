#!/usr/bin/env bash
# The README's CamVid figures under the honest protocol (CPU, 2 cores; hours - every step resumes).
#   bash scripts/camvid_protocol.sh [CAMVID_DIR] [OUT] [FRACTION] [SETTINGS] [PATIENCE]
#   RECIPE=ema (default)       the current figures: every U-Net runs 800 steps, no early stopping,
#                              selection / keep-best / the kept model use an EMA of the weights (0.99)
#                              -> OUT/camvid_emafix_f$FRACTION
#   CARVE=blocks               with RECIPE=ema: carve each subset's selection part as runs of
#                              neighbouring frames (--selection-carve blocks) -> OUT/camvid_emafix_blocks_f$FRACTION
#   RECIPE=early-stopping      the earlier figures: raw weights, at most 400 steps, early stopping with
#                              PATIENCE epochs -> OUT/camvid_protocol_f$FRACTION
# One subset per fraction (subset seed 0): its fit images train pix2pix, the quality U-Net, the
# FreeMask-filtered synthetic set and the copy-paste set; U-Nets in every setting x 3 seeds select
# on the subset's selection images and are scored once on CamVid val. real+pretrain pretrains on
# the synthetic set and fine-tunes on the fit images (real+pretrain+mix: on the fit images plus the
# synthetic set; real+pretrain+copypaste: plus the copy-paste set); the selected-recipe row picks,
# per seed, the recipe with the highest selection mIoU.
# PATIENCE is in epochs of the fit images; the default keeps it at about 80 optimizer steps
# whatever the fraction (8 epochs of 10 steps at 25 %, 20 epochs of 4 steps at 10 %).
set -euo pipefail
cd "$(dirname "$0")/.."
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs}
FRACTION=${3:-0.25}
RECIPE=${RECIPE:-ema}
CARVE=${CARVE:-hash}
case "$CARVE" in
  hash) CARVE_ARGS=(); SUFFIX="" ;;
  blocks) CARVE_ARGS=(--selection-carve blocks); SUFFIX="_blocks" ;;
  *) echo "CARVE must be hash or blocks, got '$CARVE'" >&2; exit 2 ;;
esac
make setup >/dev/null
case "$RECIPE" in
  ema)
    SETTINGS=${4:-real,real+synthetic,synthetic,real+pretrain,real+copypaste,real+pretrain+copypaste,real+pretrain+mix}
    .venv/bin/synthseg experiment segmentation --data "camvid:$CAMVID" --fractions "$FRACTION" --seeds 3 \
      --subset-seed 0 --settings "$SETTINGS" --image-size 96x128 --batch-size 8 --steps 800 --ema 0.99 \
      ${CARVE_ARGS[@]+"${CARVE_ARGS[@]}"} --out "$OUT/camvid_emafix${SUFFIX}_f$FRACTION" ;;
  early-stopping)
    [ "$CARVE" = hash ] || { echo "CARVE=blocks goes with RECIPE=ema" >&2; exit 2; }
    SETTINGS=${4:-real,real+augment,real+copypaste,real+synthetic,synthetic,real+pretrain,real+pretrain+mix}
    case "$FRACTION" in 0.1) DEFAULT_PATIENCE=20 ;; *) DEFAULT_PATIENCE=8 ;; esac
    PATIENCE=${5:-$DEFAULT_PATIENCE}
    .venv/bin/synthseg experiment segmentation --data "camvid:$CAMVID" --fractions "$FRACTION" --seeds 3 \
      --subset-seed 0 --settings "$SETTINGS" --image-size 96x128 --batch-size 8 --steps 400 --patience "$PATIENCE" \
      --out "$OUT/camvid_protocol_f$FRACTION" ;;
  *) echo "RECIPE must be ema or early-stopping, got '$RECIPE'" >&2; exit 2 ;;
esac

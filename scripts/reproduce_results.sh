#!/usr/bin/env bash
# Reproduce the README's "Results" figures on CPU (2 cores; every step resumes or is reused).
#   bash scripts/reproduce_results.sh [CAMVID_DIR] [OUT]
# Every figure follows the protocol of synthseg_tf/experiments/protocol.py: per fraction, one
# subset of CamVid train; its fit images alone train the GAN, the quality U-Net, the synthetic
# and copy-paste sets and every U-Net; selection on the subset's held-out images; the figures
# come from CamVid val, which nothing else reads.
set -euo pipefail
cd "$(dirname "$0")/.."
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs}
make setup >/dev/null
# The classification steps below (demo-classes) were measured before the classifier's batch-norm
# momentum default became "auto" (2026-12-03); they pin the 0.99 they used. Step 32 uses the default.
BN099="--bn-momentum 0.99"
# 1. CamVid, 25 % of train (92 images: 75 fit + 17 selection), 3 seeds: the current recipe (EMA
#    weights, 800 steps), then the earlier one (raw weights, early stopping) the README also shows.
bash scripts/camvid_protocol.sh "$CAMVID" "$OUT" 0.25
RECIPE=early-stopping bash scripts/camvid_protocol.sh "$CAMVID" "$OUT" 0.25
#    The budget check: real-only for 1,600 steps, the compute of pretraining + fine-tuning.
.venv/bin/synthseg experiment segmentation --data "camvid:$CAMVID" --fractions 0.25 --seeds 3 --subset-seed 0 \
  --settings real --image-size 96x128 --batch-size 8 --steps 1600 --ema 0.99 --out "$OUT/camvid_emafix1600_f0.25"
# 2. The generator's FCN-score on the subset's selection images (also the README's grid).
.venv/bin/python scripts/gan_eval_selection.py "$OUT/camvid_protocol_f0.25/subsets/frac0.25-subset0" "camvid:$CAMVID"
# 3. The same at 10 % of train (37 images): the current recipe with the settings that carried the
#    25 % result, then the earlier recipe.
bash scripts/camvid_protocol.sh "$CAMVID" "$OUT" 0.1 real,synthetic,real+pretrain+copypaste,real+copypaste
RECIPE=early-stopping bash scripts/camvid_protocol.sh "$CAMVID" "$OUT" 0.1
# 4. Classification on demo-classes: per-subset class-conditional GAN (FiLM, edges), confidence
#    filter, rare classes targeted; selection on val, figures on the test split.
#    real+pretrain pretrains on the synthetic images and fine-tunes on the real ones.
#    Steps 4-8 ran with the defaults of their time, which they now name: 40 epochs (the default
#    is 80 since step 9 showed 40 leaves the real-only classifier under-trained) and, in step 4,
#    a fixed 0.5 confidence filter (the default is calibrated since step 8).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --seeds 3 --subset-seed 0 --epochs 40 \
  --min-confidence 0.5 --settings real,real+augment,real+synthetic,real+pretrain --out "$OUT/cls_protocol"
# 5. The same generator (its provenance is checked against the subset), a stricter confidence
#    filter (>= 0.9 instead of 0.5): the ablation the README reports beside step 4.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --seeds 3 --subset-seed 0 --epochs 40 \
  --settings real,real+synthetic,real+pretrain,real+pretrain+mix \
  --generator "$OUT/cls_protocol/subsets/frac1-subset0/gan" --min-confidence 0.9 --out "$OUT/cls_conf0.9"
# 6. The same generator, the calibrated filter (per-class thresholds from the val images).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --seeds 3 --subset-seed 0 --epochs 40 \
  --settings real,real+synthetic --generator "$OUT/cls_protocol/subsets/frac1-subset0/gan" \
  --min-confidence calibrated --out "$OUT/cls_calibrated"
# 7. Replication of step 6 on a fresh draw of demo-classes (new images; its own GAN and filter).
.venv/bin/synthseg experiment classification $BN099 --data "demo-classes?seed=1" --seeds 3 --subset-seed 0 --epochs 40 \
  --settings real,real+synthetic --min-confidence calibrated --out "$OUT/cls_calibrated_data1"
# 8. A second fresh draw with the calibrated filter (then made the default).
.venv/bin/synthseg experiment classification $BN099 --data "demo-classes?seed=2" --seeds 3 --subset-seed 0 --epochs 40 \
  --settings real,real+synthetic,real+pretrain --min-confidence calibrated --out "$OUT/cls_default_data2"
# 9. The budget check: step 7's draw and synthetic set with 80 epochs for every setting. Real-only
#    at 80 epochs takes as many optimiser steps as real+synthetic at 40 (twice the images per epoch).
.venv/bin/synthseg experiment classification $BN099 --data "demo-classes?seed=1" --seeds 3 --subset-seed 0 --epochs 80 \
  --settings real,real+synthetic --synthetic "$OUT/cls_calibrated_data1/subsets/frac1-subset0/synthetic" \
  --out "$OUT/cls_epochs80_data1"
# 10. Real-only with up to 160 epochs on step 7's draw (as many steps as real+synthetic at 80;
#     early stopping on val loss, patience 12, may end it sooner).
.venv/bin/synthseg experiment classification $BN099 --data "demo-classes?seed=1" --seeds 3 --subset-seed 0 --epochs 160 \
  --settings real --out "$OUT/cls_real160_data1"
# 11. A quarter of demo-classes' train split (194 images, stratified): its own GAN, filter classifier
#     and synthetic set, 4 candidates per image; up to 200 epochs (early stopping on val).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+pretrain --n-per-image 4 --out "$OUT/cls_f0.25"
# 12. The same synthetic set mixed in instead of appended: at 0.25 (plain real+synthetic), 0.1 and 0.5;
#     selected-recipe chooses the ratio per seed on val.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1,real+synthetic@0.5 --synthetic-ratio 0.25 \
  --synthetic "$OUT/cls_f0.25/subsets/frac0.25-subset0/synthetic" --out "$OUT/cls_f0.25_mix"
# 13. The same subset with a GAN trained 6,000 steps instead of 1,500 (its own filter and synthetic
#     set, 4 candidates per image), mixed at 0.25.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --gan-steps 6000 --n-per-image 4 \
  --out "$OUT/cls_f0.25_gan6k"
# 14. Step 12's synthetic set with a fair budget: an epoch of a mixed run is one pass over the real
#     images at its ratio (--real-passes), at 0.25 (at 0.1 it is 7 steps either way: step 12's runs).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --real-passes \
  --synthetic "$OUT/cls_f0.25/subsets/frac0.25-subset0/synthetic" --out "$OUT/cls_f0.25_mixrp"
# 15. Two more seeds (3 and 4) of step 12's real, 0.25 and 0.1 settings, in the same folder (seeds are
#     not part of an experiment's identity: the three earlier seeds are reused), so the ratio
#     chosen on val is measured on 5 paired seeds (0.5 stays at 3 seeds).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 5 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 \
  --synthetic "$OUT/cls_f0.25/subsets/frac0.25-subset0/synthetic" --out "$OUT/cls_f0.25_mix"
# 16. Step 12's settings (without 0.5) with every classifier's weights averaged (--ema 0.99,
#     validated, selected and kept), real-only included.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 --ema 0.99 \
  --synthetic "$OUT/cls_f0.25/subsets/frac0.25-subset0/synthetic" --out "$OUT/cls_f0.25_ema"
# 17. Step 11's generator with class hardness: the rare classes' candidates are also drawn in
#     proportion to how weak the subset-trained classifier is on each class's val images (its own
#     filter calibration and synthetic set, 4 kept images per subset image), mixed at 0.25 and 0.1.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 --n-per-image 4 \
  --class-hardness --generator "$OUT/cls_f0.25/subsets/frac0.25-subset0/gan" --out "$OUT/cls_f0.25_hard"
# 18. Step 12's synthetic set with soft labels: each synthetic image is trained on 0.5 x its class +
#     0.5 x the probabilities of the cell's filter classifier (trained on the subset alone: the
#     teacher of Noisy Student), mixed at 0.25 and 0.1.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 \
  --synthetic-soft-labels 0.5 \
  --synthetic "$OUT/cls_f0.25/subsets/frac0.25-subset0/synthetic" --out "$OUT/cls_f0.25_soft"
# 19. CamVid 25 % again, with the selection part carved as runs of neighbouring frames (72 fit + 20
#     selection images, another fit set than step 1's): its own GAN, filters and all seven settings.
CARVE=blocks bash scripts/camvid_protocol.sh "$CAMVID" "$OUT" 0.25
# 20. Step 11's subset with a four times larger synthetic set (16 kept images per subset image: its
#     own GAN, filter and 3,104 images), mixed at 0.25 and 0.1; selected-recipe picks the ratio on val.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 --n-per-image 16 \
  --out "$OUT/cls_f0.25_n16"
# 21. Step 11's subset and recipe (its own GAN, filter and synthetic set, 4 candidates per image), the
#     mixed run at 0.25 then fine-tuned on the real subset alone at a tenth of the learning rate
#     (real+synthetic+finetune).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic+finetune --synthetic-ratio 0.25 --n-per-image 4 \
  --out "$OUT/cls_f0.25_ft"
# 22. Step 21 with a second GAN draw on the same subset (--gan-seed 1: its own GAN and synthetic set;
#     the real-only runs and the filter classifier are the same as step 21's, retrained here).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic+finetune --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-seed 1 --out "$OUT/cls_f0.25_ft_gan1"
# 23. The same with a third GAN draw (--gan-seed 2).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic+finetune --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-seed 2 --out "$OUT/cls_f0.25_ft_gan2"
# 24. Step 21's recipe on a tenth of the train split (81 images, 1 to 4 per class), up to 300 epochs
#     (3 optimiser steps each): its own GAN, filter classifier and synthetic set.
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.1 --seeds 3 --subset-seed 0 \
  --epochs 300 --settings real,real+synthetic,real+synthetic+finetune --synthetic-ratio 0.25 --n-per-image 4 \
  --out "$OUT/cls_f0.1_ft"
# 25. Step 21 with a fourth GAN draw (--gan-seed 3).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic,real+synthetic+finetune --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-seed 3 --out "$OUT/cls_f0.25_ft_gan3"
# 26. The oracle diagnostic (breaks the protocol on purpose; never a result about synthetic data):
#     step 21's real and real+synthetic runs again (the same runs to the digit), then each
#     real+synthetic run repeated with its synthetic set swapped for new procedural demo-classes
#     images (oracle) or for the cell's GAN rendering those images' edge maps (gan-maps).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --n-per-image 4 --out "$OUT/cls_oracle"
.venv/bin/python scripts/oracle_ceiling.py "$OUT/cls_oracle" --variants oracle,gan-maps --grid "$OUT/cls_oracle/oracle/grid.png"
# 27. The generator-fidelity levers the oracle points to, on step 26's recipe (its real-only runs are
#     the same to the digit): no colour jitter in the GAN's DiffAugment, then the GAN's class loss
#     (the filter classifier's cross-entropy on each generated image, weight 1), both together, and
#     the class loss on a second GAN draw (--gan-seed 1; step 22 is that draw without it).
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-diffaugment translation,cutout --out "$OUT/cls_nocolor"
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-class-loss 1.0 --out "$OUT/cls_clsloss"
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-class-loss 1.0 --gan-diffaugment translation,cutout --out "$OUT/cls_clsloss_nocolor"
.venv/bin/synthseg experiment classification $BN099 --data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 \
  --epochs 200 --settings real,real+synthetic --synthetic-ratio 0.25 --n-per-image 4 \
  --gan-class-loss 1.0 --gan-seed 1 --out "$OUT/cls_clsloss_gan1"
# 28. A matching-aware discriminator (Reed et al. 2016: it also learns to call each real image fake
#     under a wrong class label), then the full schedule (--patience 200: early stopping never ends a
#     run; keep-best still reads val) for the default GAN, the class-loss GANs and the matching-aware
#     one, and a generator and discriminator twice as wide, all on step 26's recipe.
R="--data demo-classes --fractions 0.25 --seeds 3 --subset-seed 0 --epochs 200 --settings real,real+synthetic \
  --synthetic-ratio 0.25 --n-per-image 4"
.venv/bin/synthseg experiment classification $BN099 $R --gan-mismatch 1.0 --out "$OUT/cls_mismatch"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --out "$OUT/cls_full"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-class-loss 1.0 --gan-seed 1 \
  --out "$OUT/cls_full_clsloss_gan1"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-mismatch 1.0 --out "$OUT/cls_full_mismatch"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-class-loss 1.0 \
  --gan-diffaugment translation,cutout --out "$OUT/cls_full_clsloss_nocolor"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-base-filters 64 --out "$OUT/cls_full_bf64"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-base-filters 64 --gan-seed 1 \
  --out "$OUT/cls_full_bf64_gan1"
# 29. Pose borrowing (--borrow-maps 0.5): half of the candidates are conditioned on the edge map of
#     another class's subset image (donors in proportion to their image counts), and the calibrated
#     confidence filter decides whether the rendered image still shows its class; full schedule.
#     Then the diagnostic of which donors were kept and whether an edge-map classifier could choose them.
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --borrow-maps 0.5 --out "$OUT/cls_borrow"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --borrow-maps 0.5 --gan-seed 1 \
  --out "$OUT/cls_borrow_gan1"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-seed 1 --out "$OUT/cls_full_gan1"
.venv/bin/python scripts/borrow_donors.py "$OUT/cls_borrow"
.venv/bin/python scripts/borrow_donors.py "$OUT/cls_borrow_gan1"
# 30. Two conditioning levers, each on GAN draws 0 and 1, full schedule: a projection discriminator
#     (the class label's embedding dotted with every patch's last features, instead of the label
#     tiled beside the edge map) and colour-aware edge maps (the union of per-channel Canny edges).
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-d-label-conditioning projection \
  --out "$OUT/cls_proj"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-d-label-conditioning projection \
  --gan-seed 1 --out "$OUT/cls_proj_gan1"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-conditioning color-edges --out "$OUT/cls_cedges"
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --gan-conditioning color-edges --gan-seed 1 \
  --out "$OUT/cls_cedges_gan1"
#     The same four folders again with real+synthetic@0.1 added (the runs above are reused): the mix
#     ratio chosen on val (selected-recipe) for each of the four synthetic sets.
for args in "--gan-d-label-conditioning projection --out $OUT/cls_proj" \
    "--gan-d-label-conditioning projection --gan-seed 1 --out $OUT/cls_proj_gan1" \
    "--gan-conditioning color-edges --out $OUT/cls_cedges" \
    "--gan-conditioning color-edges --gan-seed 1 --out $OUT/cls_cedges_gan1"; do
  # shellcheck disable=SC2086
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 $args
done
# 31. A SPADE generator (GauGAN's spatially-adaptive normalisation; the edge map and the class
#     embedding scale and shift every normalisation) on GAN draws 0 and 1, full schedule, mixed at
#     0.25 and 0.1.
for seed in 0 1; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-generator-arch spade --gan-seed $seed --out "$OUT/cls_spade_gan$seed"
done
# 32. Sign Language Digits (real photos, 10 class folders), 10 % of train (144 photos), 3 seeds, the
#     default class-conditional GAN and the default classifier recipe (batch-norm momentum auto).
.venv/bin/synthseg experiment classification --data classfolders:"$(dirname "$CAMVID")/sign_digits" --fractions 0.1 \
  --seeds 3 --subset-seed 0 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 \
  --out "$OUT/sign_f0.1"
# 33. A multi-scale discriminator (pix2pixHD: a second PatchGAN with its own weights on the pair
#     average-pooled by 2) on GAN draws 0 and 1, full schedule, mixed at 0.25 and 0.1.
for seed in 0 1; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-d-scales 2 --gan-seed $seed --out "$OUT/cls_ms2_gan$seed"
done
# 34. Sign Language Digits at 5 % of train (70 photos, 7 per class), otherwise as step 32.
.venv/bin/synthseg experiment classification --data classfolders:"$(dirname "$CAMVID")/sign_digits" --fractions 0.05 \
  --seeds 3 --subset-seed 0 --settings real,real+synthetic,real+synthetic@0.1 --synthetic-ratio 0.25 \
  --out "$OUT/sign_f0.05"
# 35. AC-GAN's auxiliary classifier on the projection discriminator of step 30 (a head on the last
#     trunk convolution, trained on the real subset images; the generator also minimises its
#     cross-entropy), GAN draws 0 and 1, full schedule, mixed at 0.25 and 0.1.
for seed in 0 1; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-d-label-conditioning projection --gan-aux-class 1 --gan-seed $seed --out "$OUT/cls_ac_gan$seed"
done
# ... and at three times the weight, GAN draw 0.
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
  --gan-d-label-conditioning projection --gan-aux-class 3 --out "$OUT/cls_ac3_gan0"
# 36. A reference image (GauGAN's style encoder as exemplar guidance, --gan-style-dim 32): the generator
#     also takes a real subset image of the candidate's class (the one its edge map came from), whose
#     appearance code FiLMs the decoder; GAN draws 0 and 1, full schedule, mixed at 0.25 and 0.1.
for seed in 0 1; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-style-dim 32 --gan-seed $seed --out "$OUT/cls_style_gan$seed"
done
# 37. Step 36's generators with swapped references (--reference-swap 1): each candidate's reference is
#     another subset image of its class than the one its edge map came from (one image's pose,
#     another's appearance). The GAN, filter classifier and real-only runs are trained as in step 36
#     (same options and seeds); only the generated set differs. GAN draws 0, 1 and 2, and step 36's
#     unswapped setting on draw 2 for the paired comparison.
for seed in 0 1 2; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-style-dim 32 --gan-seed $seed --reference-swap 1 --out "$OUT/cls_swap_gan$seed"
done
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
  --gan-style-dim 32 --gan-seed 2 --out "$OUT/cls_style_gan2"
# 38. Step 37's swapped-reference recipe with a lighter L1 (10) and pix2pixHD's feature matching (10):
#     a new GAN, draw 0 (the filter classifier and real-only runs are step 37's).
.venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
  --gan-style-dim 32 --reference-swap 1 --gan-l1-weight 10 --gan-feature-matching 10 --out "$OUT/cls_fm_gan0"
# 39. Step 37's synthetic sets (GAN draws 0, 1, 2, swapped references), mixed runs retrained with separate
#     batch statistics for the synthetic part of each batch (--synthetic-bn separate); the GANs, filter and
#     real-only runs are step 37's.
for seed in 0 1 2; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic,real+synthetic@0.1 \
    --gan-style-dim 32 --gan-seed $seed --reference-swap 1 --synthetic-bn separate --out "$OUT/cls_sepbn_swap$seed"
done
# ... and the control for draws 0, 1 and 2: the same fixed batches (29 real + 3 synthetic at 0.1), shared statistics.
for seed in 0 1 2; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic@0.1 \
    --gan-style-dim 32 --gan-seed $seed --reference-swap 1 --synthetic-batches fixed --out "$OUT/cls_fixed_swap$seed"
done
# 40. AdvProp's auxiliary batch norms (--synthetic-bn auxiliary: the synthetic rows through their own copy of
#     every batch norm, scales and offsets included), mixed at 0.1 on step 37's three synthetic sets.
for seed in 0 1 2; do
  .venv/bin/synthseg experiment classification $BN099 $R --patience 200 --settings real,real+synthetic@0.1 \
    --gan-style-dim 32 --gan-seed $seed --reference-swap 1 --synthetic-bn auxiliary --out "$OUT/cls_aux_swap$seed"
done
# 41. Seeds 3-5 on draw 0: real-only, separate statistics, fixed and sampled batches at 0.1 (seeds 0-2
#     are steps 37 and 39's, reused from copies of their folders; real-only seeds 3-5 are trained once).
[ -e "$OUT/cls_sepbn6_swap0" ] || cp -r "$OUT/cls_sepbn_swap0" "$OUT/cls_sepbn6_swap0"
.venv/bin/synthseg experiment classification $BN099 $R --seeds 6 --patience 200 --settings real,real+synthetic@0.1 \
  --gan-style-dim 32 --gan-seed 0 --reference-swap 1 --synthetic-bn separate --out "$OUT/cls_sepbn6_swap0"
if [ ! -e "$OUT/cls_fixed6_swap0" ]; then
  cp -r "$OUT/cls_fixed_swap0" "$OUT/cls_fixed6_swap0"
  for s in 3 4 5; do cp -r "$OUT/cls_sepbn6_swap0/runs/frac0.25-seed$s-real" "$OUT/cls_fixed6_swap0/runs/"; done
fi
.venv/bin/synthseg experiment classification $BN099 $R --seeds 6 --patience 200 --settings real,real+synthetic@0.1 \
  --gan-style-dim 32 --gan-seed 0 --reference-swap 1 --synthetic-batches fixed --out "$OUT/cls_fixed6_swap0"
if [ ! -e "$OUT/cls_swap6_gan0" ]; then  # ... and step 37's sampled batches with shared statistics
  cp -r "$OUT/cls_swap_gan0" "$OUT/cls_swap6_gan0"
  for s in 3 4 5; do cp -r "$OUT/cls_sepbn6_swap0/runs/frac0.25-seed$s-real" "$OUT/cls_swap6_gan0/runs/"; done
fi
.venv/bin/synthseg experiment classification $BN099 $R --seeds 6 --patience 200 --settings real,real+synthetic@0.1 \
  --gan-style-dim 32 --gan-seed 0 --reference-swap 1 --out "$OUT/cls_swap6_gan0"
echo "reports: $OUT/camvid_emafix_f0.25/report/report.html $OUT/camvid_protocol_f0.25/report/report.html" \
  "$OUT/camvid_emafix1600_f0.25/report/report.html $OUT/cls_real160_data1/report/report.html" \
  "$OUT/camvid_emafix_f0.1/report/report.html $OUT/camvid_protocol_f0.1/report/report.html" \
  "$OUT/cls_protocol/report/report.html $OUT/cls_conf0.9/report/report.html" \
  "$OUT/cls_calibrated/report/report.html $OUT/cls_calibrated_data1/report/report.html" \
  "$OUT/cls_default_data2/report/report.html $OUT/cls_epochs80_data1/report/report.html" \
  "$OUT/cls_f0.25/report/report.html $OUT/cls_f0.25_mix/report/report.html" \
  "$OUT/cls_f0.25_gan6k/report/report.html $OUT/cls_f0.25_mixrp/report/report.html" \
  "$OUT/cls_f0.25_ema/report/report.html $OUT/cls_f0.25_hard/report/report.html" \
  "$OUT/cls_f0.25_soft/report/report.html $OUT/camvid_emafix_blocks_f0.25/report/report.html" \
  "$OUT/cls_f0.25_n16/report/report.html $OUT/cls_f0.25_ft/report/report.html" \
  "$OUT/cls_f0.25_ft_gan1/report/report.html $OUT/cls_f0.25_ft_gan2/report/report.html" \
  "$OUT/cls_nocolor/report/report.html $OUT/cls_clsloss/report/report.html" \
  "$OUT/cls_clsloss_nocolor/report/report.html $OUT/cls_clsloss_gan1/report/report.html" \
  "$OUT/cls_mismatch/report/report.html $OUT/cls_full/report/report.html" \
  "$OUT/cls_full_clsloss_gan1/report/report.html $OUT/cls_full_mismatch/report/report.html" \
  "$OUT/cls_full_clsloss_nocolor/report/report.html $OUT/cls_full_bf64/report/report.html" \
  "$OUT/cls_full_bf64_gan1/report/report.html $OUT/cls_borrow/report/report.html" \
  "$OUT/cls_borrow_gan1/report/report.html $OUT/cls_full_gan1/report/report.html" \
  "$OUT/cls_proj/report/report.html $OUT/cls_proj_gan1/report/report.html" \
  "$OUT/cls_cedges/report/report.html $OUT/cls_cedges_gan1/report/report.html" \
  "$OUT/cls_spade_gan0/report/report.html $OUT/cls_spade_gan1/report/report.html" \
  "$OUT/sign_f0.1/report/report.html $OUT/cls_ms2_gan0/report/report.html" \
  "$OUT/cls_ms2_gan1/report/report.html $OUT/sign_f0.05/report/report.html" \
  "$OUT/cls_ac_gan0/report/report.html $OUT/cls_ac_gan1/report/report.html" \
  "$OUT/cls_ac3_gan0/report/report.html $OUT/cls_style_gan0/report/report.html" \
  "$OUT/cls_style_gan1/report/report.html $OUT/cls_swap_gan0/report/report.html" \
  "$OUT/cls_swap_gan1/report/report.html $OUT/cls_swap_gan2/report/report.html" \
  "$OUT/cls_style_gan2/report/report.html $OUT/cls_fm_gan0/report/report.html" \
  "$OUT/cls_sepbn_swap0/report/report.html $OUT/cls_sepbn_swap1/report/report.html" \
  "$OUT/cls_sepbn_swap2/report/report.html $OUT/cls_fixed_swap0/report/report.html" \
  "$OUT/cls_fixed_swap1/report/report.html $OUT/cls_fixed_swap2/report/report.html" \
  "$OUT/cls_aux_swap0/report/report.html $OUT/cls_aux_swap1/report/report.html" \
  "$OUT/cls_aux_swap2/report/report.html $OUT/cls_sepbn6_swap0/report/report.html" \
  "$OUT/cls_fixed6_swap0/report/report.html $OUT/cls_swap6_gan0/report/report.html"

"""Segmentation experiment: does synthetic data help a U-Net, under the honest protocol?

For every fraction ``f`` of the real training split and every seed ``s`` the experiment trains
U-Nets in the settings below, all on the same *fit* images (see
:mod:`synthseg_tf.experiments.protocol`):

==================  ======================================================================
``real``            the fit images, standard augmentation (flip, scale + crop, colour jitter)
``real+augment``    the fit images, strong classical augmentation instead (rotation, blur,
                    noise, stronger scale and colour changes)
``real+copypaste``  + copy-paste of the fit images' own objects on real pixels (no GAN)
``real+synthetic``  + samples a GAN trained on the fit images rendered from new label maps
                    built from the fit images' maps
``synthetic``       the GAN's samples only
``real+pretrain``   the ``synthetic`` recipe first (pretraining), then the fit images alone,
                    starting from its kept weights (fine-tuning); an opt-in recipe
``real+pretrain+mix``  the same pretraining, then the ``real+synthetic`` recipe (fit images
                    plus synthetic samples) from its weights; opt-in
``real+pretrain+copypaste``  the same pretraining, then the ``real+copypaste`` recipe from its
                    weights: what the GAN adds on top of the cheap baseline; in the default
                    settings (it helped on CamVid at 25 % and 10 %, README)
==================  ======================================================================

One change at a time: every setting but ``real+augment`` uses the same (standard)
augmentation, so each delta against ``real`` measures one ingredient, and ``real+synthetic``
is also compared with the two cheap baselines, ``real+augment`` and ``real+copypaste``.

Per cell (fraction, subset seed) the experiment builds, in ``OUT/subsets/frac{f}-subset{k}/``,
only what its settings need, each step resumable and reused when finished:

1. ``subset.json``: the subset, its fit and selection parts (source ids);
2. ``gan/``: pix2pix trained on the fit images (``gan`` options), unless a generator or a
   synthetic folder is given, whose provenance must then lie inside the fit images;
3. ``quality/``: a real-only U-Net on the fit images, selected on the selection images: the
   quality filter of generation (sample-level threshold = ``quality_factor`` x its selection
   mIoU, and the FreeMask pixel filter / hardness-aware sampling);
4. ``synthetic/``: ``synthseg generate`` output from the fit images' label maps;
5. ``copypaste/``: the copy-paste baseline set;
6. ``pretrain-seed{s}/``: the pretraining run of the ``real+pretrain*`` recipes (reused from the
   ``synthetic`` run of the same seed when that one kept its weights).

Every U-Net selects its weights (keep-best, early stopping with ``patience``) on the selection
images and is scored once, at native resolution, on the evaluation split (``evaluation``:
default the dataset's val split), which nothing else reads. Runs of a cell use the same fit
images, seed, hyper-parameters and maximum budget; each records the epochs, steps and seconds
it actually ran. ``subset_seed=None`` draws a new subset per seed (the spread then covers the
choice of images too, at the cost of one GAN per seed); an integer fixes one subset (one GAN)
per fraction.

Output folder::

    OUT/experiment.json  OUT/results.json  OUT/summary.json
    OUT/subsets/frac{f}-subset{k}/{subset.json, gan/, quality/, synthetic/, copypaste/}
    OUT/runs/frac{f}-seed{s}-{setting}/     one train_unet run each

``summary.json`` holds, per (fraction, setting), mean ± std over seeds of the evaluation
metrics, per-class IoU, seed-paired deltas against ``real`` (and, for ``real+synthetic``,
against ``real+augment`` and ``real+copypaste``) with a verdict per class
(:func:`synthseg_tf.experiments.protocol.verdict`), and the protocol that was followed.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from synthseg_tf.experiments.common import (  # noqa: F401  (also this module's public names, as before)
    BASELINE,
    DELTA_NOTE,
    EXPERIMENT_FILE,
    NOT_IDENTITY,
    PRETRAINED_SETTINGS,
    RECIPES,
    keeps_pretraining_weights,
    RESULTS_FILE,
    SELECTED,
    STD_NOTE,
    SUMMARY_FILE,
    check_experiment,
    gan_finished,
    generation_complete,
    grid_summary,
    normalize_fractions,
    normalize_seeds,
    normalize_settings,
    pretraining_run,
    read_json,
    record_head,
    run_grid,
    run_name,
    select_recipe,
    selected_rule,
    stats,
    summarize,
    write_results,
)
from synthseg_tf.experiments import protocol as P

SEGMENTATION_SETTINGS = ("real", "real+augment", "real+copypaste", "real+synthetic", "synthetic", "real+pretrain",
                         "real+pretrain+mix", "real+pretrain+copypaste")
# the baselines, the GAN settings and the one recipe measured to help (CamVid 25 % and 10 %, README)
DEFAULT_SETTINGS = SEGMENTATION_SETTINGS[:5] + ("real+pretrain+copypaste",)
SYNTHETIC_SETTINGS = ("real+synthetic", "synthetic")
# whose recipe each pretrained setting's fine-tune follows
FINE_TUNE_RECIPE = {"real+pretrain": "real", "real+pretrain+mix": "real+synthetic",
                    "real+pretrain+copypaste": "real+copypaste"}
STRONG = "strong"

# Defaults of the per-cell artifacts (each can be overridden through the matching dict argument).
GAN_DEFAULTS = dict(steps=2000, batch_size=8, base_filters=32, seed=0, upsample="resize",
                    diffaugment="color,translation,cutout", ema_decay=0.999)
GENERATION_DEFAULTS = dict(n_per_image=6, class_balance="rare", quality_factor=0.5, pixel_filter=1.25,
                           hardness=True, samples_per_shard=200, batch_size=16)
COPYPASTE_DEFAULTS = dict(n_per_image=6, class_balance="rare")


# ============================================================================ records
def _seg_record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    if "eval" not in metrics:  # a run made before the protocol: its only figures are the selection split's
        from synthseg_tf.experiments.protocol import ProtocolError

        raise ProtocolError(f"{run_dir}/metrics.json has no evaluation figures (\"eval\"), only the selection "
                            "split's; it was made by an older version: remove it (the experiment trains it again) "
                            "or use a new output folder")
    ev, sel = metrics["eval"], metrics["val"]
    return {
        **record_head(run_dir, out_dir, fraction, seed, setting, config.get("train_samples"), config),
        "total_steps": config.get("total_steps"),
        "steps_run": metrics.get("steps_run"),
        "epochs_run": metrics.get("epochs_run"),
        "best_epoch": metrics.get("best_epoch"),
        "train_seconds": metrics.get("train_seconds"),
        "seconds": metrics.get("seconds"),
        "augment": config.get("augment"),
        "selection_mean_iou": sel.get("mean_iou"),
        "metrics": {"mean_iou": ev.get("mean_iou"), "mean_dice": ev.get("mean_dice"),
                    "pixel_accuracy": ev.get("pixel_accuracy")},
        "per_class": {"iou": {c: v.get("iou") for c, v in ev["per_class"].items()},
                      "dice": {c: v.get("dice") for c, v in ev["per_class"].items()}},
    }


# ============================================================================ the per-cell artifacts
class Cell:
    """The subset of one (fraction, subset seed) and the artifacts built from it (lazily)."""

    def __init__(self, exp: "_Experiment", fraction: float, subset_seed: int):
        self.exp, self.fraction, self.subset_seed = exp, fraction, subset_seed
        subset = exp.train.fraction(fraction, seed=subset_seed)
        if exp.selection is None:
            self.fit, self.sel = P.carve(subset, exp.selection_fraction, exp.selection_carve)
            rule = (f"hash of source_id < {exp.selection_fraction:g}" if exp.selection_carve == "hash" else
                    f"blocks of neighbouring source ids, about {exp.selection_fraction:g} of the subset")
            self.selection_desc = f"{len(self.sel)} of the subset's {len(subset)} images ({rule})"
        else:
            self.fit, self.sel = subset, exp.selection
            self.selection_desc = exp.selection_desc
        self.subset = subset
        self.fit_ids = P.source_ids(self.fit)
        self.dir = os.path.join(exp.out_dir, "subsets", f"frac{fraction:g}-subset{subset_seed}")
        self._write_subset_file()

    def _write_subset_file(self) -> None:
        from synthseg_tf.training.segmentation import write_json

        record = {"fraction": self.fraction, "subset_seed": self.subset_seed, "fit": self.fit_ids,
                  "selection": P.source_ids(self.sel), "selection_rule": self.selection_desc}
        path = os.path.join(self.dir, "subset.json")
        if os.path.isfile(path):
            if read_json(path) != json.loads(json.dumps(record)):
                raise P.ProtocolError(f"{path} records another subset than this run draws; the data changed since "
                                      "the experiment started - use a new output folder")
            return
        os.makedirs(self.dir, exist_ok=True)
        write_json(path, record)

    def protocol(self, generator_desc: Optional[str]) -> Dict:
        return P.describe(self.fraction, self.subset_seed, len(self.subset), len(self.fit), len(self.sel),
                          self.selection_desc, self.exp.eval_desc, generator_desc)

    # ------------------------------------------------------------------ GAN
    def generator(self) -> str:
        exp = self.exp
        if exp.generator is not None:
            return P.checked(exp.generator, "generator", self.fit_ids)
        from synthseg_tf.data.layouts import absolute_spec
        from synthseg_tf.training.gan import train_gan
        from synthseg_tf.training.gan_data import gan_datasets

        gan_dir = os.path.join(self.dir, "gan")
        if not gan_finished(gan_dir):
            opts = dict(GAN_DEFAULTS, **(exp.gan or {}))
            steps, bs, seed = int(opts.pop("steps")), int(opts.pop("batch_size")), int(opts.pop("seed"))
            exp.log(f"training pix2pix on the {len(self.fit)} fit images of fraction {self.fraction:g} "
                    f"(subset {self.subset_seed}): {steps} steps -> {gan_dir}")
            gd = gan_datasets(self.fit, exp.size, bs, seed, val=False)
            every = max(1, steps // 10)
            train_gan(gd.train, gan_dir, num_classes=exp.classes.num_classes, image_size=exp.size, steps=steps,
                      batch_size=bs, class_table=exp.classes, seed=seed, resume=os.path.isdir(gan_dir),
                      log_every=every, image_every=max(every, steps // 4), checkpoint_every=max(every, steps // 4),
                      verbose=bool(exp.verbose),
                      extra_config={"data": absolute_spec(exp.spec) if isinstance(exp.spec, str) else exp.spec,
                                    "conditioning": "labelmap", "train_source_ids": self.fit_ids}, **opts)
        return P.checked(gan_dir, "generator", self.fit_ids)

    # ------------------------------------------------------------------ quality model
    def quality_model(self) -> str:
        from synthseg_tf.training.segmentation import train_unet

        qdir = os.path.join(self.dir, "quality")
        if not os.path.isfile(os.path.join(qdir, "metrics.json")):
            exp = self.exp
            exp.log(f"training the quality-filter U-Net on the {len(self.fit)} fit images -> {qdir}")
            train_unet(self.fit, self.sel, qdir, image_size=exp.size, batch_size=exp.batch_size,
                       epochs=exp.epochs, steps=exp.steps, patience=exp.patience, seed=self.subset_seed,
                       export=True, overwrite=True, verbose=exp.verbose,
                       extra_config={"experiment": {"role": "quality model", "fit": self.fit_ids}},
                       **exp.options_for("real"))
        return os.path.join(qdir, "model")

    # ------------------------------------------------------------------ synthetic set
    def synthetic(self) -> str:
        exp = self.exp
        if exp.synthetic is not None:
            return P.checked(exp.synthetic, "synthetic set", self.fit_ids, P.source_ids(self.sel))
        from synthseg_tf.generation import GenerationConfig, run_generation

        out = os.path.join(self.dir, "synthetic")
        if not generation_complete(out):
            gen = self.generator()
            opts = dict(GENERATION_DEFAULTS, **(exp.generation or {}))
            n = int(opts.pop("n", 0) or max(1, round(float(opts["n_per_image"]) * len(self.fit))))
            opts.pop("n_per_image")
            factor = opts.pop("quality_factor")
            qm = None
            if factor is not None or opts.get("pixel_filter") or opts.get("hardness"):
                qm = self.quality_model()
                sel_miou = read_json(os.path.join(os.path.dirname(qm), "metrics.json"))["val"]["mean_iou"]
                if factor is not None:
                    opts["min_quality"] = round(float(factor) * float(sel_miou), 4)
            exp.log(f"generating {n} samples from the fit images' label maps -> {out}")
            run_generation(GenerationConfig(generator=gen, out=out, n=n, masks="sample", seed=self.subset_seed,
                                            quality_model=qm, **opts), log=exp.log)
        return P.checked(out, "synthetic set", self.fit_ids, P.source_ids(self.sel))

    # ------------------------------------------------------------------ copy-paste set
    def copypaste(self) -> str:
        from synthseg_tf.generation.copypaste import write_copypaste_set

        exp = self.exp
        out = os.path.join(self.dir, "copypaste")
        opts = dict(COPYPASTE_DEFAULTS, **(exp.copypaste or {}))
        n = int(opts.pop("n", 0) or max(1, round(float(opts["n_per_image"]) * len(self.fit))))
        opts.pop("n_per_image")
        write_copypaste_set(self.fit, out, n, exp.size, seed=self.subset_seed, log=exp.log, **opts)
        return P.checked(out, "copy-paste set", self.fit_ids)

    # ------------------------------------------------------------------ pretraining (real+pretrain)
    def pretrained(self, seed: int, synthetic_run: str) -> Tuple[str, Dict]:
        """The weights of a U-Net trained on the synthetic set alone (the ``synthetic`` recipe,
        selected on the selection images), and what that run recorded. Reuses ``synthetic_run``
        when it kept its weights; otherwise trains ``pretrain-seed{seed}/``."""
        from synthseg_tf.training.segmentation import train_unet

        exp = self.exp
        syn = self.synthetic()  # provenance-checked against the fit images

        def train(run: str) -> None:
            exp.log(f"pretraining a U-Net on the synthetic set {syn} (seed {seed}) -> {run}")
            train_unet(self.fit, self.sel, run, image_size=exp.size, batch_size=exp.batch_size, epochs=exp.epochs,
                       steps=exp.steps, synthetic=syn, synthetic_ratio=1.0, seed=seed, patience=exp.patience,
                       export=False, save_weights=True, overwrite=True, verbose=exp.verbose,
                       extra_config={"experiment": {"role": "pretraining of real+pretrain", "fit": self.fit_ids}},
                       **exp.options_for("synthetic"))

        run, config, metrics = pretraining_run(
            (synthetic_run, os.path.join(self.dir, f"pretrain-seed{seed}")), syn, self.fit_ids, train)
        return os.path.join(run, "weights.h5"), {
            "run": run, "synthetic": config.get("synthetic"), "steps_run": metrics.get("steps_run"),
            "epochs_run": metrics.get("epochs_run"), "train_seconds": metrics.get("train_seconds"),
            "selection_mean_iou": metrics["val"].get("mean_iou")}


class _Experiment:
    """The experiment's fixed inputs, shared by its cells."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self._cells: Dict[Tuple[float, int], Cell] = {}

    def cell(self, fraction: float, seed: int) -> Cell:
        k = seed if self.subset_seed is None else int(self.subset_seed)
        if (fraction, k) not in self._cells:
            self._cells[(fraction, k)] = Cell(self, fraction, k)
        return self._cells[(fraction, k)]

    def options_for(self, setting: str) -> Dict:
        """One change at a time: every setting uses the experiment's augmentation except
        ``real+augment``, which replaces it with the strong classical one."""
        opts = dict(self.train_options)
        if setting == "real+augment":
            opts["augment"] = self.strong_augment
        return opts


# ============================================================================ the experiment
def run_segmentation_experiment(
    data,
    out_dir: str,
    synthetic: Optional[str] = None,
    generator: Optional[str] = None,
    fractions: Sequence[float] = (0.1, 0.25),
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    image_size=(128, 128),
    epochs: Optional[int] = None,
    steps: Optional[int] = None,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    batch_size: int = 8,
    synthetic_ratio: float = 0.5,
    evaluation=None,
    selection=None,
    subset_seed: Optional[int] = None,
    selection_fraction: float = P.SELECTION_FRACTION,
    selection_carve: str = "hash",
    patience: Optional[int] = None,
    strong_augment: str = STRONG,
    gan: Optional[Dict] = None,
    generation: Optional[Dict] = None,
    copypaste: Optional[Dict] = None,
    export_models: bool = False,
    verbose: int = 0,
    log: Callable = print,
    **train_options,
) -> Dict:
    """Run (or resume) the fraction x seed x setting grid; returns the summary (also in ``summary.json``).

    ``data``: a segmentation Dataset or spec; subsets are drawn from its training split.
    ``evaluation``: the evaluation data (spec or Dataset; default the dataset's val split);
    ``selection``: a spec/Dataset to select on instead of carving ``selection_fraction`` of each
    subset (it must not be the evaluation data); ``selection_carve``: ``"hash"`` (each image by the
    hash of its id) or ``"blocks"`` (runs of neighbouring ids, for frames cut from video; see
    :func:`~synthseg_tf.experiments.protocol.carve_selection_blocks`). ``synthetic`` (a generated folder) or
    ``generator`` (a GAN run/export) replace the per-cell GAN, and are refused unless their
    provenance lies inside the cell's fit images. ``gan``: :func:`train_gan` options for the
    per-cell GAN (``steps``, ``batch_size``, ``base_filters``, ...; defaults ``GAN_DEFAULTS``);
    ``generation``: :class:`GenerationConfig` fields plus ``n`` or ``n_per_image`` and
    ``quality_factor`` (defaults ``GENERATION_DEFAULTS``); ``copypaste``:
    ``write_copypaste_set`` options plus ``n`` / ``n_per_image``. ``epochs`` / ``steps`` is the
    maximum budget of each U-Net, ``patience`` its early stopping on the selection images.
    ``train_options`` go to :func:`~synthseg_tf.training.segmentation.train_unet` for every run.
    """
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.segmentation import parse_image_size, train_unet

    out_dir = os.path.abspath(os.fspath(out_dir))
    fractions = normalize_fractions(fractions)
    seeds = normalize_seeds(seeds)
    settings = normalize_settings(settings, SEGMENTATION_SETTINGS)
    if synthetic is not None and generator is not None:
        raise ValueError("give synthetic (a folder of generated samples) or generator, not both")
    if not 0.0 < float(synthetic_ratio) <= 1.0:
        raise ValueError(f"synthetic_ratio must be in (0, 1], got {synthetic_ratio}")
    size = parse_image_size(image_size)
    P.check_carve(selection_carve)
    if selection is not None and selection_carve != "hash":
        raise ValueError("selection_carve applies to the part carved from each subset; it cannot be combined "
                         "with an explicit selection split")

    for key, what in (("class_loss_weight", "class loss"), ("mismatch_weight", "matching-aware discriminator"),
                      ("aux_class_weight", "auxiliary classifier")):
        if float((gan or {}).get(key) or 0.0) > 0.0:
            raise ValueError(f"the GAN's {what} is for classification experiments (a class-conditional GAN); "
                             "a segmentation experiment's label-map GAN has no class label")
    if (gan or {}).get("conditioning") not in (None, "labelmap"):
        raise ValueError(f"the GAN's conditioning {gan['conditioning']!r} is for classification experiments; a "
                         "segmentation experiment's GAN is conditioned on the label maps")
    if (gan or {}).get("d_label_conditioning") not in (None, "input"):
        raise ValueError("the GAN's d_label_conditioning is for classification experiments (a class-conditional "
                         "GAN); a segmentation experiment's label-map GAN has no class label")
    ds = load(data)
    if ds.task != "segmentation":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; a segmentation dataset is needed")
    train, eval_ds, eval_desc = P.split_for_protocol(ds, evaluation)
    sel_ds, sel_desc = None, None
    if selection is not None:
        sel_ds = load(selection) if isinstance(selection, str) else selection
        if set(P.source_ids(sel_ds)) & set(P.source_ids(eval_ds)):
            raise P.ProtocolError(f"the selection data {sel_ds.spec} overlaps the evaluation data {eval_desc}; "
                                  "select on a split the figures are not computed on")
        if set(P.source_ids(sel_ds)) & set(P.source_ids(train)):
            train = train.select([i for i, s in enumerate(train.samples)
                                  if s.source_id not in set(P.source_ids(sel_ds))])
        sel_desc = sel_ds.spec

    identity = {
        "task": "segmentation", "data": ds.spec, "train_samples": len(train),
        "evaluation": eval_desc, "evaluation_samples": len(eval_ds), "selection": sel_desc or "carved from each subset",
        "selection_fraction": float(selection_fraction), "subset_seed": subset_seed,
        "synthetic": os.path.abspath(synthetic) if synthetic else None,
        "generator": os.path.abspath(generator) if generator else None,
        "gan": dict(GAN_DEFAULTS, **(gan or {})), "generation": dict(GENERATION_DEFAULTS, **(generation or {})),
        "copypaste": dict(COPYPASTE_DEFAULTS, **(copypaste or {})),
        "image_size": list(size), "batch_size": int(batch_size), "epochs": epochs, "steps": steps,
        "patience": patience, "synthetic_ratio": float(synthetic_ratio), "strong_augment": strong_augment,
        "train_options": {k: v for k, v in sorted(train_options.items()) if k not in NOT_IDENTITY},
    }
    if selection_carve != "hash":  # experiments made before the option keep their identity
        identity["selection_carve"] = selection_carve
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})
    exp = _Experiment(spec=ds.spec, classes=ds.classes, train=train, eval_ds=eval_ds, eval_desc=eval_desc,
                      selection=sel_ds, selection_desc=sel_desc, selection_fraction=float(selection_fraction),
                      selection_carve=selection_carve, subset_seed=subset_seed, out_dir=out_dir, size=size,
                      batch_size=int(batch_size),
                      epochs=epochs, steps=steps, patience=patience, synthetic=synthetic, generator=generator,
                      gan=gan, generation=generation, copypaste=copypaste, strong_augment=strong_augment,
                      train_options=train_options, verbose=verbose, log=log)

    def cell(f: float, s: int):
        c = exp.cell(f, s)

        def run_dir_of(setting: str) -> str:
            return os.path.join(out_dir, "runs", run_name(f, s, setting))

        def added_set(setting: str) -> Optional[str]:
            """The folder of samples the setting adds to the fit images (None: the fit images alone)."""
            if setting in SYNTHETIC_SETTINGS:
                return c.synthetic()
            if setting == "real+copypaste":
                return c.copypaste()
            return None

        def train_run(setting: str, run_dir: str) -> None:
            if setting in PRETRAINED_SETTINGS:
                weights, pre = c.pretrained(s, run_dir_of("synthetic"))
                extra = added_set(FINE_TUNE_RECIPE[setting])
                gen_desc = f"the {len(c.fit)} fit images (generator {generator or os.path.join(c.dir, 'gan')})"
                train_unet(
                    c.fit, c.sel, run_dir, image_size=size, batch_size=batch_size, epochs=epochs, steps=steps,
                    seed=s, patience=patience, evaluate=eval_ds, export=export_models, overwrite=True,
                    verbose=verbose, init_weights=weights,
                    extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                                 "real_subset": c.fit_ids, "pretraining": pre,
                                                 "protocol": c.protocol(gen_desc)}},
                    **(dict(synthetic=extra, synthetic_ratio=synthetic_ratio) if extra else {}),
                    **exp.options_for("real"))
                return
            syn = added_set(setting)
            gen_desc = None
            if setting in SYNTHETIC_SETTINGS:
                gen_desc = (f"synthetic set {syn}" if synthetic else
                            f"the {len(c.fit)} fit images (generator {generator or os.path.join(c.dir, 'gan')})")
            train_unet(
                c.fit, c.sel, run_dir, image_size=size, batch_size=batch_size, epochs=epochs, steps=steps,
                synthetic=syn, synthetic_ratio=1.0 if setting == "synthetic" else synthetic_ratio, seed=s,
                patience=patience, evaluate=eval_ds, export=export_models, overwrite=True, verbose=verbose,
                save_weights=keeps_pretraining_weights(setting, state["settings"]),
                extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                             "real_subset": c.fit_ids, "protocol": c.protocol(gen_desc)}},
                **exp.options_for(setting))

        return run_dir_of, f" ({len(c.fit)} fit + {len(c.sel)} selection images)", train_run

    def summary_of(identity_: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
        summary = _seg_summary(identity_, runs, class_names, evaluated_on=eval_desc)
        summary["protocol"] = _protocol_summary(exp, state)
        return summary

    return run_grid(out_dir, "segmentation", state, (fractions, seeds, settings), cell, _seg_record,
                    summary_of, ds.classes.names, log)


# the ways of using the synthetic set that the selected-recipe row chooses among
SEG_RECIPES = RECIPES + ("real+pretrain+copypaste",)
SELECTED_RULE = selected_rule("mean IoU on the selection images", SEG_RECIPES)


def selected_recipe_runs(runs: List[Dict]) -> List[Dict]:
    """One ``selected-recipe`` record per (fraction, seed) where at least two of :data:`SEG_RECIPES` ran:
    a copy of the recipe with the highest selection mean IoU (ties: the first), with ``chosen`` naming it."""
    return select_recipe(runs, SEG_RECIPES, "selection_mean_iou")


def _seg_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str],
                 evaluated_on: str = "the evaluation split") -> Dict:
    chosen = selected_recipe_runs(runs)
    summary = grid_summary("segmentation", identity, runs + chosen, class_names, SEGMENTATION_SETTINGS + (SELECTED,),
                           ["mean_iou", "mean_dice", "pixel_accuracy"], "mean_iou", ["iou", "dice"],
                           f"{evaluated_on}, native resolution, void pixels skipped (read by nothing else)",
                           extra_baselines={"real+synthetic": ("real+augment", "real+copypaste"),
                                            "real+pretrain": ("real+copypaste", "real+synthetic"),
                                            "real+pretrain+mix": ("real+copypaste", "real+synthetic", "real+pretrain"),
                                            "real+pretrain+copypaste": ("real+copypaste", "real+pretrain"),
                                            SELECTED: ("real+augment", "real+copypaste")})
    if chosen:
        summary["selected_recipe"] = {"rule": SELECTED_RULE,
                                      "chosen": [{"fraction": r["fraction"], "seed": r["seed"], "setting": r["chosen"]}
                                                 for r in chosen]}
    return summary


def _protocol_summary(exp: _Experiment, state: Dict) -> Dict:
    cells = []
    for f in state["fractions"]:
        for s in state["seeds"]:
            c = exp.cell(f, s)
            d = c.protocol(exp.generator or exp.synthetic or os.path.join(c.dir, "gan"))
            if d not in cells:
                cells.append(d)
    return {"rule": P.describe(0, 0, 0, 0, 0, "", "", None)["rule"], "verdict_rule": P.VERDICT_RULE,
            "evaluation": exp.eval_desc, "cells": cells}


__all__ = ["run_segmentation_experiment", "summarize", "stats", "SEGMENTATION_SETTINGS", "DEFAULT_SETTINGS"]

"""Classification experiment: the CNN classifier on real vs real+synthetic images, honest protocol.

Splits: :func:`~synthseg_tf.training.classification.split_classification` (the layout's own
train/val/test folders whenever any exists, else a stratified split seeded by ``split_seed``).
The **val** split is the *selection* split (early stopping, keep-best); the **test** split is the
*evaluation* split, read once per run and by nothing else. At fraction ``f`` a stratified
subset of the train split (seeded by the subset seed) is the only labelled data of the cell:

==================  ==============================================================
``real``            the subset, standard augmentation
``real+augment``    the subset, strong classical augmentation
``real+synthetic``  + images of a class-conditional GAN trained on the subset only (edge
                    maps of the subset's images, classes drawn towards the rare ones,
                    kept when a classifier trained on the subset gives the intended class
                    at least ``min_confidence``; ``"calibrated[:CAP]"``, the default: at least
                    the median probability it gives the class's real val images, at most CAP)
``synthetic``       the GAN's images only
``real+pretrain``   the ``synthetic`` run's weights (pretraining), then the subset alone with
                    the ``real`` recipe (fine-tuning); both stages select on val
``real+pretrain+mix``  the same pretraining, then the ``real+synthetic`` recipe from its weights
``real+synthetic+finetune``  the ``real+synthetic`` run's kept weights, then the subset alone with
                    the ``real`` recipe at ``FINE_TUNE_LR_SCALE`` x its learning rate (the
                    mixed model adapted to real images only); both stages select on val
==================  ==============================================================

``real+synthetic@R`` is ``real+synthetic`` with the synthetic images mixed in at ratio ``R``
for that run, whatever ``synthetic_ratio`` says; several ratios in one grid are candidates of
``selected-recipe``, so the ratio too is chosen on the val split.

Per cell ``OUT/subsets/frac{f}-subset{k}/`` holds ``subset.json``, ``gan/``, ``quality/`` (the
real-trained classifier used as the confidence filter) and ``synthetic/``; each is resumable and
checked (:mod:`synthseg_tf.experiments.protocol`) to come from the subset alone.

Metrics: test accuracy, macro-F1, weighted-F1 and ``rare_macro_f1`` (macro-F1 over the classes
with fewer than ``RARE_BELOW`` images in the training split, reported separately), per-class F1
and recall, seed-paired deltas vs ``real`` (``real+synthetic`` also vs ``real+augment``) with
verdicts.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from synthseg_tf.experiments import protocol as P
from synthseg_tf.experiments.common import (
    NOT_IDENTITY,
    PRETRAINED_SETTINGS,
    RECIPES,
    keeps_pretraining_weights,
    check_experiment,
    gan_finished,
    generation_complete,
    grid_summary,
    normalize_fractions,
    normalize_seeds,
    normalize_settings,
    pretraining_run,
    split_setting,
    with_ratio_variants,
    read_json,
    record_head,
    run_grid,
    run_name,
    SELECTED,
    select_recipe,
    selected_rule,
)

FINETUNED = "real+synthetic+finetune"
CLASSIFICATION_SETTINGS = ("real", "real+augment", "real+synthetic", "synthetic", "real+pretrain", "real+pretrain+mix",
                           FINETUNED)
# The ways of using the synthetic set selected-recipe chooses among, here.
CLS_RECIPES = RECIPES + (FINETUNED,)
# real+synthetic+finetune's second stage: the real recipe at this fraction of its learning rate, so the
# mixed model is adapted to the real images rather than retrained from its start.
FINE_TUNE_LR_SCALE = 0.1
SYNTHETIC_SETTINGS = ("real+synthetic", "synthetic")
RATIO_SETTINGS = ("real+synthetic",)  # may be written real+synthetic@RATIO
METRICS = ["accuracy", "macro_f1", "weighted_f1", "rare_macro_f1"]
RARE_BELOW = 25
GAN_DEFAULTS = dict(steps=1500, batch_size=16, base_filters=32, seed=0, conditioning="edges", upsample="resize",
                    diffaugment="color,translation,cutout", ema_decay=0.999, label_conditioning="film")
GENERATION_DEFAULTS = dict(n_per_image=1, labels="rare", min_confidence="calibrated", samples_per_shard=200, batch_size=32)


CALIBRATED = "calibrated"
DEFAULT_CAP = 0.9


def calibrated_cap(min_confidence) -> Optional[float]:
    """The cap of a ``calibrated[:CAP]`` filter (per-class thresholds from the val images, at most
    ``CAP``, default 0.9), or ``None`` for a fixed threshold (a number). Anything else: ValueError."""
    if isinstance(min_confidence, str):
        text = min_confidence.strip().lower()
        if text == CALIBRATED:
            return DEFAULT_CAP
        if text.startswith(CALIBRATED + ":"):
            try:
                cap = float(text.split(":", 1)[1])
            except ValueError:
                cap = -1.0
            if 0.0 < cap <= 1.0:
                return cap
        try:
            float(text)
        except ValueError:
            raise ValueError(f"min_confidence must be a probability, '{CALIBRATED}' or '{CALIBRATED}:CAP' (CAP in "
                             f"(0, 1]), got {min_confidence!r}") from None
        raise ValueError(f"give min_confidence as a number, not the string {min_confidence!r}")
    return None


HARDNESS_FLOOR = 0.05


def class_hardness(medians: Sequence[Optional[float]], floor: float = HARDNESS_FLOOR) -> List[float]:
    """Per-class draw factors of ``--class-hardness``: ``1 - m`` for a class whose real selection
    images get median probability ``m`` of their own class from the real-trained classifier, at
    least ``floor`` (a class it already recognises still gets a few candidates); a class without
    selection images gets the mean factor of the others (1 when no class has any)."""
    known = [max(float(floor), 1.0 - float(m)) for m in medians if m is not None]
    fill = sum(known) / len(known) if known else 1.0
    return [fill if m is None else max(float(floor), 1.0 - float(m)) for m in medians]


def _cls_record_factory(rare: Sequence[str]):
    def record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
        metrics = read_json(os.path.join(run_dir, "metrics.json"))
        config = read_json(os.path.join(run_dir, "config.json"))
        test = metrics["test"]
        f1 = {c: v["f1"] for c, v in test["per_class"].items()}
        rare_f1 = [f1[c] for c in rare if f1.get(c) is not None]
        return {
            **record_head(run_dir, out_dir, fraction, seed, setting, config["splits"]["train"], config),
            "test_samples": test.get("num_samples"),
            "epochs_run": metrics.get("epochs_run"),
            # optimiser steps: settings with synthetic images appended take more steps per epoch
            "steps_run": (metrics["epochs_run"] * config["steps_per_epoch"]
                          if metrics.get("epochs_run") is not None and config.get("steps_per_epoch") else None),
            "best_epoch": metrics.get("best_epoch"),
            "train_seconds": metrics.get("seconds"),
            "augment": config.get("augment"),
            "pretraining": (config.get("experiment") or {}).get("pretraining"),
            "fine_tuned_from": (config.get("experiment") or {}).get("fine_tuned_from"),
            "selection_accuracy": metrics.get("val", {}).get("accuracy"),
            "selection_macro_f1": (metrics.get("val", {}).get("macro") or {}).get("f1"),
            "metrics": {"accuracy": test["accuracy"], "macro_f1": test["macro"]["f1"],
                        "weighted_f1": test["weighted"]["f1"],
                        "rare_macro_f1": sum(rare_f1) / len(rare_f1) if rare_f1 else None},
            "per_class": {"f1": f1, "recall": {c: v["recall"] for c, v in test["per_class"].items()}},
        }

    return record


class _Cell:
    def __init__(self, exp: Dict, fraction: float, subset_seed: int):
        from synthseg_tf.models.classifier import stratified_split

        self.exp, self.fraction, self.subset_seed = exp, fraction, subset_seed
        train = exp["train"]
        if fraction < 1.0:
            keep, _ = stratified_split([s.label for s in train.samples], (fraction, 1.0 - fraction), seed=subset_seed)
            train = train.select(sorted(keep.tolist()))
        self.subset = train
        self.fit_ids = P.source_ids(train)
        # One Dataset whose layout splits are exactly (subset, val, test): train_classifier honours them.
        samples = ([replace(s, split="train") for s in train.samples]
                   + [replace(s, split="val") for s in exp["val"].samples]
                   + [replace(s, split="test") for s in exp["test"].samples])
        self.data = replace(exp["ds"], samples=samples)
        self.dir = os.path.join(exp["out_dir"], "subsets", f"frac{fraction:g}-subset{subset_seed}")
        os.makedirs(self.dir, exist_ok=True)
        from synthseg_tf.training.segmentation import write_json

        path = os.path.join(self.dir, "subset.json")
        record = {"fraction": fraction, "subset_seed": subset_seed, "fit": self.fit_ids}
        if os.path.isfile(path) and read_json(path) != record:
            raise P.ProtocolError(f"{path} records another subset than this run draws; use a new output folder")
        if not os.path.isfile(path):
            write_json(path, record)

    def protocol(self, generator_desc) -> Dict:
        e = self.exp
        return P.describe(self.fraction, self.subset_seed, len(self.subset), len(self.subset), len(e["val"]),
                          f"the val split ({len(e['val'])} images)", e["eval_desc"], generator_desc)

    def generator(self) -> str:
        e = self.exp
        if e["generator"] is not None:
            return P.checked(e["generator"], "generator", self.fit_ids)
        from synthseg_tf.data.layouts import absolute_spec
        from synthseg_tf.training.gan import train_gan
        from synthseg_tf.training.gan_data import gan_datasets

        gan_dir = os.path.join(self.dir, "gan")
        if not gan_finished(gan_dir):
            opts = dict(GAN_DEFAULTS, **(e["gan"] or {}))
            steps, bs, seed = int(opts.pop("steps")), int(opts.pop("batch_size")), int(opts.pop("seed"))
            conditioning = opts.pop("conditioning")
            if float(opts.get("class_loss_weight") or 0.0) > 0.0:
                # the confidence filter's classifier: trained on the same subset, selected on val
                opts["class_loss_model"] = self.quality_model()
            e["log"](f"training a class-conditional pix2pix ({conditioning}) on the {len(self.subset)} subset "
                     f"images: {steps} steps -> {gan_dir}")
            gd = gan_datasets(self.subset, e["size"], bs, seed, conditioning=conditioning, val=False)
            every = max(1, steps // 10)
            spec = e["ds"].spec
            train_gan(gd.train, gan_dir, num_classes=gd.classes.num_classes, image_size=e["size"], steps=steps,
                      batch_size=bs, class_table=gd.classes, num_labels=gd.num_labels, seed=seed,
                      resume=os.path.isdir(gan_dir), log_every=every, image_every=max(every, steps // 4),
                      checkpoint_every=max(every, steps // 4), verbose=bool(e["verbose"]),
                      extra_config={"data": absolute_spec(spec), "conditioning": gd.conditioning,
                                    "label_names": e["ds"].classes.names, "train_source_ids": self.fit_ids},
                      **opts)
        return P.checked(gan_dir, "generator", self.fit_ids)

    def quality_model(self) -> str:
        from synthseg_tf.training.classification import train_classifier

        e = self.exp
        qdir = os.path.join(self.dir, "quality")
        if not os.path.isfile(os.path.join(qdir, "metrics.json")):
            e["log"](f"training the confidence-filter classifier on the {len(self.subset)} subset images -> {qdir}")
            train_classifier(self.data, qdir, image_size=e["size"], batch_size=e["batch_size"], epochs=e["epochs"],
                             patience=e["patience"], seed=self.subset_seed, export=True, overwrite=True,
                             verbose=e["verbose"], report_test=False, **e["options_for"]("real"))
        return os.path.join(qdir, "model")

    def synthetic(self) -> str:
        e = self.exp
        if e["synthetic"] is not None:
            return P.checked(e["synthetic"], "synthetic set", self.fit_ids, P.source_ids(e["val"]))
        from synthseg_tf.generation import GenerationConfig, run_generation

        out = os.path.join(self.dir, "synthetic")
        if not generation_complete(out):
            gen = self.generator()
            opts = dict(GENERATION_DEFAULTS, **(e["generation"] or {}))
            n = int(opts.pop("n", 0) or max(1, round(float(opts["n_per_image"]) * len(self.subset))))
            opts.pop("n_per_image")
            conf, hardness = opts.pop("min_confidence"), opts.pop("class_hardness", False)
            cap = calibrated_cap(conf)
            # one read of the val-calibrated record serves both the thresholds and the hardness
            rec = self.confidence_thresholds(cap or DEFAULT_CAP) if cap is not None or hardness else None
            if conf is not None:
                opts["quality_model"] = self.quality_model()
                if cap is None:
                    opts["min_quality"] = float(conf)
                else:
                    opts["class_min_quality"] = rec["thresholds"]
            if hardness:
                opts["class_weights"] = class_hardness(rec["median"])
                e["log"](f"class hardness from the val images: draw factors {min(opts['class_weights']):.2f}.."
                         f"{max(opts['class_weights']):.2f}")
            e["log"](f"generating {n} class-conditional images ({opts.get('labels')} classes) -> {out}")
            run_generation(GenerationConfig(generator=gen, out=out, n=n, masks="sample", seed=self.subset_seed,
                                            **opts), log=e["log"])
        return P.checked(out, "synthetic set", self.fit_ids, P.source_ids(e["val"]))

    def teacher(self) -> Dict:
        """``{"teacher": the confidence filter's classifier}`` when synthetic images get soft labels
        (``synthetic_soft_labels`` > 0): it was trained on the subset alone, selected on val."""
        alpha = float(self.exp["train_options"].get("synthetic_soft_labels") or 0.0)
        return {"teacher": self.quality_model()} if alpha > 0.0 else {}

    def confidence_thresholds(self, cap: float) -> Dict:
        """Per-class thresholds of the ``calibrated`` filter (``quality/thresholds.json``): the
        median probability the filter classifier gives each class's real **val** (selection)
        images, clipped to ``[1/C, cap]`` (:func:`~synthseg_tf.generation.filtering.calibrated_confidence_thresholds`)."""
        import numpy as np

        from synthseg_tf.generation.filtering import calibrated_confidence_thresholds
        from synthseg_tf.models.classifier import load_classifier
        from synthseg_tf.training.segmentation import write_json

        model = self.quality_model()
        path = os.path.join(os.path.dirname(model), "thresholds.json")
        if os.path.isfile(path):
            rec = read_json(path)
            if rec.get("cap") == float(cap) and rec.get("quality_model") == model:
                return rec
        val = self.exp["val"]
        clf = load_classifier(model)
        probs = np.concatenate([clf.predict_proba(val.read_image(smp)[0].astype(np.float32) / 255.0)
                                for smp in val.samples]) if len(val) else np.zeros((0, val.num_classes))
        rec = calibrated_confidence_thresholds(probs, [smp.label for smp in val.samples], val.num_classes, cap)
        rec.update(quality_model=model, selection=f"the val split ({len(val)} images)",
                   classes=list(val.classes.names))
        write_json(path, rec)
        self.exp["log"](f"calibrated confidence filter: per-class thresholds {min(rec['thresholds']):.2f}.."
                        f"{max(rec['thresholds']):.2f} from the {len(val)} val images -> {path}")
        return rec

    def pretrained(self, seed: int, synthetic_run: str) -> Tuple[str, Dict]:
        """The weights of a classifier trained on the synthetic images alone (the ``synthetic``
        recipe, selected on val) and what that run recorded. Reuses ``synthetic_run`` when it kept
        its weights; otherwise trains ``pretrain-seed{seed}/`` in the cell."""
        return self._first_stage(seed, synthetic_run, f"pretrain-seed{seed}", 1.0, "synthetic",
                                 "pretraining of real+pretrain", "pretraining a classifier on the synthetic set")

    def mixed(self, seed: int, mixed_run: str, ratio: Optional[float]) -> Tuple[str, Dict]:
        """The weights ``real+synthetic+finetune`` starts from: the ``real+synthetic`` run of this
        seed (``mixed_run``) when it kept them, else ``mix-seed{seed}/`` trained in the cell with
        the same recipe (the cell's synthetic set at ``ratio``, ``None``: appended)."""
        weights, rec = self._first_stage(seed, mixed_run, f"mix-seed{seed}", ratio, "real+synthetic",
                                         f"first stage of {FINETUNED}", "training real+synthetic to fine-tune from")
        rec["synthetic_ratio"] = ratio
        return weights, rec

    def _first_stage(self, seed: int, reuse: str, folder: str, ratio: Optional[float], recipe: str, role: str,
                     message: str) -> Tuple[str, Dict]:
        """The kept weights of a run on the cell's synthetic set at ``ratio`` with ``recipe``'s
        options (``reuse`` when it kept them, else trained in ``folder`` of the cell, selected on
        val, never scoring test) and what that run recorded; checked by :func:`pretraining_run`."""
        from synthseg_tf.training.classification import train_classifier

        e = self.exp
        syn = self.synthetic()  # provenance-checked against the subset

        def train(run: str) -> None:
            e["log"](f"{message} {syn} (seed {seed}) -> {run}")
            train_classifier(self.data, run, image_size=e["size"], batch_size=e["batch_size"], epochs=e["epochs"],
                             synthetic=syn, synthetic_ratio=ratio, seed=seed, patience=e["patience"], export=False,
                             save_weights=True, overwrite=True, verbose=e["verbose"], report_test=False,
                             extra_config={"experiment": {"role": role, "real_subset": self.fit_ids}},
                             **self.teacher(), **e["options_for"](recipe))

        run, config, metrics = pretraining_run((reuse, os.path.join(self.dir, folder)), syn, self.fit_ids, train,
                                               ratio=ratio)
        return os.path.join(run, "weights.h5"), {
            "run": run, "synthetic": config.get("synthetic"), "epochs_run": metrics.get("epochs_run"),
            "best_epoch": metrics.get("best_epoch"), "train_seconds": metrics.get("seconds"),
            "selection_accuracy": metrics.get("val", {}).get("accuracy")}

def run_classification_experiment(
    data,
    out_dir: str,
    synthetic: Optional[str] = None,
    generator: Optional[str] = None,
    fractions: Sequence[float] = (1.0,),
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    settings: Sequence[str] = ("real", "real+augment", "real+synthetic"),
    image_size=(64, 64),
    batch_size: int = 32,
    epochs: int = 80,
    patience: int = 12,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    subset_seed: Optional[int] = None,
    synthetic_ratio: Optional[float] = None,
    strong_augment: str = "strong",
    gan: Optional[Dict] = None,
    generation: Optional[Dict] = None,
    export_models: bool = False,
    verbose: int = 0,
    log: Callable = print,
    **train_options,
) -> Dict:
    """Run (or resume) the classifier grid under the protocol; returns the summary (``summary.json``).

    ``data``: ``classfolders:DIR`` / ``demo-classes`` (or a classification Dataset).
    ``synthetic`` / ``generator``: use these instead of a per-cell GAN; refused unless their
    provenance lies inside the cell's subset. ``gan``: options of the per-cell class-
    conditional GAN (``GAN_DEFAULTS``); ``generation``: GenerationConfig fields plus ``n`` /
    ``n_per_image`` and ``min_confidence`` (``GENERATION_DEFAULTS``). ``synthetic_ratio=None``
    appends the synthetic images to the subset; a ratio mixes them in at that rate.
    ``train_options`` go to :func:`~synthseg_tf.training.classification.train_classifier`.
    """
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.classification import CLASSIFIER_DEFAULTS, split_classification, train_classifier
    from synthseg_tf.training.segmentation import parse_image_size

    out_dir = os.path.abspath(os.fspath(out_dir))
    fractions = normalize_fractions(fractions)
    seeds = normalize_seeds(seeds)
    settings = normalize_settings(settings, CLASSIFICATION_SETTINGS, RATIO_SETTINGS)
    if synthetic is not None and generator is not None:
        raise ValueError("give synthetic (a folder of generated samples) or generator, not both")
    calibrated_cap(dict(GENERATION_DEFAULTS, **(generation or {})).get("min_confidence"))  # fails early
    gan_opts = gan or {}
    if float(gan_opts.get("aux_class_weight") or 0.0) > 0.0 and gan_opts.get("d_label_conditioning") != "projection":
        raise ValueError("the GAN's auxiliary classifier (aux_class_weight > 0) needs d_label_conditioning "
                         "'projection' (--gan-d-label-conditioning projection): with the label at the "
                         "discriminator's input, the head would read the label, not the image")
    ds = load(data)
    if ds.task != "classification":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; class folders (classfolders:DIR) are needed")
    train, val, test = split_classification(ds, split_fractions, split_seed)
    counts: Dict[int, int] = {}
    for s in train.samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    rare = [n for i, n in enumerate(ds.classes.names) if counts.get(i, 0) < RARE_BELOW]
    eval_desc = f"{ds.spec}: test split ({len(test)} images)"
    size = parse_image_size(image_size)

    identity = {
        "task": "classification", "data": ds.spec, "samples": len(ds),
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "split_fractions": list(split_fractions), "split_seed": int(split_seed), "subset_seed": subset_seed,
        "synthetic": os.path.abspath(synthetic) if synthetic else None,
        "generator": os.path.abspath(generator) if generator else None,
        "gan": dict(GAN_DEFAULTS, **(gan or {})), "generation": dict(GENERATION_DEFAULTS, **(generation or {})),
        "image_size": list(size), "batch_size": int(batch_size), "epochs": int(epochs), "patience": int(patience),
        "synthetic_ratio": synthetic_ratio, "strong_augment": strong_augment,
        # bn_momentum always: folders from before "auto" (0.99 throughout) are not resumed under it
        "train_options": {k: v for k, v in sorted({"bn_momentum": CLASSIFIER_DEFAULTS["bn_momentum"],
                                                   **train_options}.items()) if k not in NOT_IDENTITY},
    }
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})

    def options_for(setting: str) -> Dict:  # one change at a time (see the segmentation experiment)
        opts = dict(train_options)
        if setting == "real+augment":
            opts["augment"] = strong_augment
        return opts

    exp = dict(ds=ds, train=train, val=val, test=test, out_dir=out_dir, size=size, batch_size=int(batch_size),
               epochs=int(epochs), patience=int(patience), synthetic=synthetic, generator=generator, gan=gan,
               generation=generation, verbose=verbose, log=log, options_for=options_for, eval_desc=eval_desc,
               train_options=train_options)
    cells: Dict[Tuple[float, int], _Cell] = {}

    def get_cell(f: float, s: int) -> _Cell:
        k = s if subset_seed is None else int(subset_seed)
        if (f, k) not in cells:
            cells[(f, k)] = _Cell(exp, f, k)
        return cells[(f, k)]

    def cell(f: float, s: int):
        c = get_cell(f, s)

        def run_dir_of(setting: str) -> str:
            return os.path.join(out_dir, "runs", run_name(f, s, setting))

        def train_run(setting: str, run_dir: str) -> None:
            if setting in PRETRAINED_SETTINGS or setting == FINETUNED:  # two stages: from a first run's weights
                opts = options_for("real")
                if setting == FINETUNED:  # the real+synthetic run, fine-tuned on the subset alone
                    weights, first = c.mixed(s, run_dir_of("real+synthetic"), synthetic_ratio)
                    record = {"fine_tuned_from": first}
                    opts["learning_rate"] = FINE_TUNE_LR_SCALE * float(opts.get("learning_rate",
                                                                                CLASSIFIER_DEFAULTS["learning_rate"]))
                else:  # pretrained on the synthetic set, then real+synthetic's recipe (+mix) or real's
                    weights, pre = c.pretrained(s, run_dir_of("synthetic"))
                    record = {"pretraining": pre}
                    if setting == "real+pretrain+mix":
                        opts.update(synthetic=c.synthetic(), synthetic_ratio=synthetic_ratio, **c.teacher())
                train_classifier(
                    c.data, run_dir, image_size=size, batch_size=batch_size, epochs=epochs, seed=s,
                    patience=patience, export=export_models, overwrite=True, verbose=verbose, init_weights=weights,
                    extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                                 "real_subset": c.fit_ids, **record,
                                                 "protocol": c.protocol(f"the {len(c.subset)} subset images")}},
                    **opts)
                return
            base, own_ratio = split_setting(setting)
            syn = c.synthetic() if base in SYNTHETIC_SETTINGS else None
            ratio = 1.0 if base == "synthetic" else ((own_ratio or synthetic_ratio) if syn else None)
            gen_desc = f"the {len(c.subset)} subset images" if syn and not synthetic else syn
            train_classifier(
                c.data, run_dir, image_size=size, batch_size=batch_size, epochs=epochs, synthetic=syn,
                synthetic_ratio=ratio, seed=s, patience=patience, export=export_models, overwrite=True,
                verbose=verbose, save_weights=(keeps_pretraining_weights(setting, state["settings"])
                                               or (setting == "real+synthetic" and FINETUNED in state["settings"])),
                **(c.teacher() if syn else {}),
                extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                             "real_subset": c.fit_ids, "protocol": c.protocol(gen_desc)}},
                **options_for(setting))

        return run_dir_of, f" ({len(c.subset)} training images)", train_run

    def summary_of(identity_: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
        summary = _cls_summary(identity_, runs, class_names, eval_desc)
        summary["rare_classes"] = {"below": RARE_BELOW, "names": rare,
                                   "note": f"classes with fewer than {RARE_BELOW} images in the training split; "
                                           "rare_macro_f1 is the macro-F1 over them"}
        cells = []
        for f in state["fractions"]:
            for s in state["seeds"]:
                c = get_cell(f, s)
                source = synthetic or generator or os.path.join(c.dir, "gan")
                d = c.protocol(f"the {len(c.subset)} subset images ({source})")
                if d not in cells:
                    cells.append(d)
        summary["protocol"] = {"verdict_rule": P.VERDICT_RULE, "evaluation": eval_desc, "cells": cells}
        return summary

    return run_grid(out_dir, "classification", state, (fractions, seeds, settings), cell, _cls_record_factory(rare),
                    summary_of, ds.classes.names, log)


SELECTED_RULE = selected_rule("macro F1 on the val (selection) split",
                              CLS_RECIPES + ("every real+synthetic@RATIO",))


def _cls_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str],
                 evaluated_on: str = "the real test split") -> Dict:
    present = [r["setting"] for r in runs]
    chosen = select_recipe(runs, with_ratio_variants(CLS_RECIPES, present), "selection_macro_f1")
    variants = {v: ("real+augment", "real+synthetic") for v in set(present) if split_setting(v)[1] is not None}
    summary = grid_summary("classification", identity, runs + chosen, class_names,
                           with_ratio_variants(CLASSIFICATION_SETTINGS, present) + (SELECTED,), METRICS, "macro_f1",
                           ["f1", "recall"], f"{evaluated_on}, the same images for every run",
                           extra_baselines={**variants, "real+synthetic": ("real+augment",),
                                            "real+pretrain": ("real+augment", "real+synthetic"),
                                            "real+pretrain+mix": ("real+augment", "real+synthetic", "real+pretrain"),
                                            FINETUNED: ("real+augment", "real+synthetic"),
                                            SELECTED: ("real+augment",)})
    if chosen:
        summary["selected_recipe"] = {"rule": SELECTED_RULE,
                                      "chosen": [{"fraction": r["fraction"], "seed": r["seed"], "setting": r["chosen"]}
                                                 for r in chosen]}
    return summary


__all__ = ["run_classification_experiment", "CLASSIFICATION_SETTINGS"]

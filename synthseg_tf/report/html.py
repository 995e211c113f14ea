"""Write an experiment (or single training run) report as HTML and Markdown.

:func:`write_report` reads a folder written by
:func:`~synthseg_tf.experiments.segmentation.run_segmentation_experiment`,
:func:`~synthseg_tf.experiments.classification.run_classification_experiment` (``summary.json``,
``results.json``, ``runs/*/history.csv``, the synthetic samples' ``manifest.jsonl``) or by
``train_unet`` / ``train_classifier`` (``metrics.json``, ``history.csv``, ``config.json``), and
writes into ``RUN_DIR/report/``:

- ``report.html``: one self-contained page, every figure embedded as a base64 PNG data URI;
- ``report.md`` and the same figures as PNG files beside it.

Content: the setup, plain-language findings, metric tables (mean ± std over seeds per setting
and fraction, deltas vs real-only paired by seed), per-class delta bar charts, training curves,
and a sample grid (label map | real photo of the source map, when it can be found | synthetic
image). The findings state what the numbers are, including when synthetic data did not help or
when the difference is within the seed-to-seed spread; they are not significance tests.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPORT_DIR = "report"
SETTING_COLORS = {"real": "#4C72B0", "real+augment": "#8172B3", "real+copypaste": "#937860",
                  "real+synthetic": "#DD8452", "synthetic": "#55A868", "real+pretrain": "#C44E52", "real+pretrain+mix": "#8C8C8C",
                  "real+pretrain+copypaste": "#64B5CD", "real+synthetic+finetune": "#CCB974",
                  "selected-recipe": "#DA8BC3"}
METRIC_LABELS = {
    "mean_iou": "mean IoU", "mean_dice": "mean Dice", "pixel_accuracy": "pixel accuracy",
    "accuracy": "accuracy", "macro_f1": "macro F1", "weighted_f1": "weighted F1",
    "rare_macro_f1": "macro F1 of the rare classes",
    "iou": "IoU", "dice": "Dice", "f1": "F1", "recall": "recall",
}
CURVE_KEYS = {"segmentation": ("val_mean_iou", "loss"), "classification": ("val_accuracy", "loss")}


# ============================================================================ document model
class _Doc:
    """An ordered list of blocks rendered to both Markdown and HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: List[Tuple] = []
        self.figures: List[Tuple[str, bytes]] = []

    def h2(self, text: str):
        self.blocks.append(("h2", text))

    def h3(self, text: str):
        self.blocks.append(("h3", text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, items: Sequence[str]):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = ""):
        if rows:
            self.blocks.append(("table", list(header), [list(map(str, r)) for r in rows], caption))

    def figure(self, name: str, png: Optional[bytes], caption: str):
        if png:
            self.figures.append((name, png))
            self.blocks.append(("figure", name, png, caption))

    # ------------------------------------------------------------------ rendering
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "h2":
                out += [f"## {b[1]}", ""]
            elif kind == "h3":
                out += [f"### {b[1]}", ""]
            elif kind == "p":
                out += [b[1], ""]
            elif kind == "ul":
                out += [f"- {it}" for it in b[1]] + [""]
            elif kind == "table":
                _, header, rows, caption = b
                if caption:
                    out += [f"*{caption}*", ""]
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                _, name, _, caption = b
                out += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            kind = b[0]
            if kind in ("h2", "h3"):
                body.append(f"<{kind}>{e(b[1])}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{e(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(it)}</li>" for it in b[1]) + "</ul>")
            elif kind == "table":
                _, header, rows, caption = b
                cap = f"<caption>{e(caption)}</caption>" if caption else ""
                head = "".join(f"<th>{e(h)}</th>" for h in header)
                trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "figure":
                _, name, png, caption = b
                data = base64.b64encode(png).decode("ascii")
                body.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(caption)}</figcaption></figure>")
        style = (
            "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;"
            "margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.92em}"
            "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
            "caption{caption-side:top;text-align:left;font-style:italic;padding:4px 0}"
            "figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}"
            "figcaption{font-size:0.9em;color:#555}"
        )
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


# ============================================================================ formatting
def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _pct(v, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _stat(st: Optional[Dict], signed: bool = False) -> str:
    """``{"mean", "std", "n"}`` (fractions) -> ``"41.2 ± 1.0"`` in percent (``"41.2 (n=1)"`` for one run)."""
    if not st or st.get("mean") is None:
        return "n/a"
    m = _no_neg_zero(100 * st["mean"])
    s = f"{m:+.1f}" if signed else f"{m:.1f}"
    if st.get("std") is None:
        return f"{s} (n={st.get('n', 1)})"
    return f"{s} ± {100 * st['std']:.1f}"


def _no_neg_zero(v: float) -> float:
    return 0.0 if round(v, 1) == 0 else v


def _prose(st: Optional[Dict], signed: bool = False, unit: str = "%") -> str:
    """Stats for a sentence: ``"41.2 ± 1.0%"``, ``"+0.7 ± 1.5 points"``, ``"41.2%"`` (single run)."""
    if not st or st.get("mean") is None:
        return "n/a"
    m = _no_neg_zero(100 * st["mean"])
    s = f"{m:+.1f}" if signed else f"{m:.1f}"
    if st.get("std") is not None:
        s += f" ± {100 * st['std']:.1f}"
    return s + ("%" if unit == "%" else f" {unit}")


def _num(st: Optional[Dict]) -> str:
    if not st or st.get("mean") is None:
        return "—"
    return f"{st['mean']:.0f}" + (f" ± {st['std']:.0f}" if st.get("std") is not None else "")


def _verdict(delta: Dict, setting: str = "real+synthetic") -> str:
    """Plain-language reading of a paired delta (fractions) of ``setting`` vs real-only."""
    n, mean, std, vals = delta.get("n", 0), delta.get("mean"), delta.get("std"), delta.get("values", [])
    if mean is None or n == 0:
        return "no paired runs to compare"
    if n < 2:
        return ("a single seed, so this difference cannot be told apart from run-to-run variation"
                if round(100 * mean, 1) != 0 else "no difference (a single seed)")
    if std is not None and abs(mean) <= std:
        return "smaller than the seed-to-seed spread: no clear difference"
    every = "both seeds" if n == 2 else f"all {n} seeds"
    few = " (few seeds: weak evidence)" if n < 3 else ""
    if all(v > 0 for v in vals):
        return f"higher in {every}{few}"
    if all(v < 0 for v in vals):
        if setting == "synthetic":
            return f"lower in {every}: synthetic data alone does not match real data here{few}"
        return f"lower in {every}: adding synthetic data did not help here{few}"
    return ("higher on average, but not in every seed" if mean > 0 else
            "lower on average, but not in every seed")


def _fig():
    from functools import partial

    from matplotlib.figure import Figure

    return partial(Figure, layout="constrained")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _read_json(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _history(run_path: str) -> Dict[str, List[float]]:
    from synthseg_tf.training.segmentation import read_history_csv

    p = os.path.join(run_path, "history.csv")
    try:
        return read_history_csv(p) if os.path.isfile(p) else {}
    except (OSError, ValueError, KeyError):
        return {}


# ============================================================================ figures
def _metric_vs_fraction(summary: Dict) -> Optional[bytes]:
    metric = summary["primary_metric"]
    rows = summary["rows"]
    if len(summary["fractions"]) < 1:
        return None
    Figure = _fig()
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(111)
    n_set = len(summary["settings"])
    for i, setting in enumerate(summary["settings"]):
        rs = [r for r in rows if r["setting"] == setting and r["metrics"][metric]["mean"] is not None]
        if not rs:
            continue
        dodge = 1.0 + 0.015 * (i - (n_set - 1) / 2)  # keep error bars of the settings apart
        x = [r["fraction"] * dodge for r in rs]
        y = [100 * r["metrics"][metric]["mean"] for r in rs]
        err = [100 * (r["metrics"][metric]["std"] or 0.0) for r in rs]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=setting, color=SETTING_COLORS.get(setting))
    if len(summary["fractions"]) > 1 and min(summary["fractions"]) > 0 and \
            max(summary["fractions"]) / min(summary["fractions"]) > 5:
        ax.set_xscale("log")
    ax.set_xticks(summary["fractions"])
    ax.set_xticklabels([f"{f:g}" for f in summary["fractions"]])
    ax.set_xlabel("fraction of the real training data")
    ax.set_ylabel(f"{_label(metric)} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _delta_bars(summary: Dict, fraction: float) -> Optional[bytes]:
    base = summary["baseline"]
    rows = [r for r in summary["rows"] if r["fraction"] == fraction and r.get(f"delta_vs_{base}")]
    if not rows:
        return None
    names = summary["class_names"]
    pm = rows[0][f"delta_vs_{base}"]["per_class_metric"]
    Figure = _fig()
    fig = Figure(figsize=(7.0, max(2.5, 0.32 * len(names) * max(1, len(rows)) + 1.2)))
    ax = fig.add_subplot(111)
    height = 0.8 / len(rows)
    y = np.arange(len(names))
    for i, r in enumerate(rows):
        d = r[f"delta_vs_{base}"]["per_class"]
        vals = [100 * d[c]["mean"] if d[c]["mean"] is not None else 0.0 for c in names]
        err = [100 * d[c]["std"] if d[c]["std"] is not None else 0.0 for c in names]
        ax.barh(y + (i - (len(rows) - 1) / 2) * height, vals, height=height, xerr=err, capsize=2,
                color=SETTING_COLORS.get(r["setting"]), label=f"{r['setting']} - {base}")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel(f"change in per-class {_label(pm)} vs {base} (percentage points)")
    ax.set_title(f"fraction {fraction:g}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _curves(curves: List[Tuple[str, str, Dict[str, List[float]]]], keys: Tuple[str, str], title: str
            ) -> Optional[bytes]:
    """``curves``: (label, setting, history) triples; two panels: validation metric and training loss."""
    curves = [c for c in curves if any(k in c[2] for k in keys)]
    if not curves:
        return None
    from matplotlib.ticker import MaxNLocator

    Figure = _fig()
    fig = Figure(figsize=(9.0, 3.4))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, 2, i + 1)
        labelled = set()  # one legend entry per setting (left panel only)
        for _label_text, setting, hist in curves:
            if key not in hist:
                continue
            ep = hist.get("epoch") or list(range(1, len(hist[key]) + 1))
            legend = setting if i == 0 and setting not in labelled else None
            labelled.add(setting)
            ax.plot(ep, hist[key], marker="." if len(ep) < 30 else None, alpha=0.8,
                    color=SETTING_COLORS.get(setting), label=legend)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        if i == 0 and labelled and len(curves) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return _png(fig)


# ============================================================================ sample grid
def _synthetic_dir(run_dir: str, identity: Dict) -> Optional[str]:
    import glob

    cands = [os.path.join(run_dir, "synthetic"), identity.get("synthetic")]
    cands += sorted(glob.glob(os.path.join(run_dir, "subsets", "*", "synthetic")))  # per-subset sets (protocol)
    for cand in cands:
        if cand and os.path.isfile(os.path.join(cand, "manifest.jsonl")):
            return cand
    return None


def _manifest(syn_dir: str, n: int) -> List[Dict]:
    out = []
    with open(os.path.join(syn_dir, "manifest.jsonl"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


def _real_lookup(specs: Sequence[str]):
    """``source_id -> uint8 image`` from the first of ``specs`` that loads (None if none)."""
    from synthseg_tf.data.layouts import load

    for spec in specs:
        if not spec or not isinstance(spec, str) or spec.startswith(("tfrecord:", "train_val")):
            continue
        try:
            ds = load(spec)
        except Exception:  # noqa: BLE001 - a report should not fail because the source moved
            continue
        by_id = {s.source_id: s for s in ds.samples}

        def get(sid, ds=ds, by_id=by_id):
            s = by_id.get(sid)
            if s is None:
                return None
            try:
                return ds.read_image(s)[0]
            except Exception:  # noqa: BLE001
                return None

        return get
    return None


def _sample_grid(run_dir: str, identity: Dict, n: int = 4) -> Tuple[Optional[bytes], str]:
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.data.io import read_image, read_mask_raw

    syn_dir = _synthetic_dir(run_dir, identity)
    if syn_dir is None:
        return None, ""
    entries = [e for e in _manifest(syn_dir, n) if e.get("image") and e.get("mask")]
    if not entries:
        return None, ""
    table = None
    for cand in (syn_dir, run_dir):
        if os.path.isfile(os.path.join(cand, "classes.json")):
            table = ClassTable.load(cand)
            break
    specs = [identity.get("data")]
    gen = _read_json(os.path.join(syn_dir, "generation.json")) or {}
    if gen.get("generator"):
        specs.append((_read_json(os.path.join(gen["generator"], "config.json")) or {}).get("data"))
    lookup = _real_lookup(specs)
    rows = []
    for e in entries:
        try:
            mask = read_mask_raw(os.path.join(syn_dir, e["mask"]))[0]
            image = read_image(os.path.join(syn_dir, e["image"]))[0]
        except Exception:  # noqa: BLE001
            continue
        if mask.ndim == 3:
            mask = mask[..., 0]
        colored = table.colorize(mask) if table is not None else np.repeat(mask[..., None], 3, -1)
        sids = e.get("source_ids") or []
        real = lookup(sids[0]) if lookup is not None and sids else None
        rows.append((colored, real, image, e))
    if not rows:
        return None, ""
    has_real = any(r[1] is not None for r in rows)
    cols = ["label map", "real (photo of the source map)", "synthetic"] if has_real else ["label map", "synthetic"]
    Figure = _fig()
    fig = Figure(figsize=(2.6 * len(cols), 2.5 * len(rows)))
    for i, (colored, real, image, e) in enumerate(rows):
        panels = [colored, real, image] if has_real else [colored, image]
        for j, arr in enumerate(panels):
            ax = fig.add_subplot(len(rows), len(cols), i * len(cols) + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if arr is not None:
                ax.imshow(arr, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "not found", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"#{e.get('index', i)}", fontsize=8)
    note = (f"First {len(rows)} generated samples of {syn_dir}"
            + (". The real column shows the photo whose label map the sample was made from (for sampled or mixed "
               "maps, the first source map)." if has_real else
               "; the real photos of the source maps were not found, so that column is left out."))
    return _png(fig), note


# ============================================================================ experiment report
def _experiment_doc(run_dir: str, summary: Dict, results: Optional[Dict]) -> _Doc:
    task = summary.get("task", "segmentation")
    ident = summary.get("experiment", {})
    base = summary.get("baseline", "real")
    metric = summary["primary_metric"]
    settings = summary["settings"]
    fractions = summary["fractions"]
    rows = summary["rows"]
    row = {(r["fraction"], r["setting"]): r for r in rows}
    doc = _Doc(f"{task.capitalize()} experiment: does synthetic training data help?")

    doc.h2("Setup")
    setup = [f"Real data: {ident.get('data')}",
             f"Evaluated on: {summary.get('evaluated_on', 'held-out real data')}"]
    if ident.get("synthetic"):
        setup.append(f"Synthetic data: {ident['synthetic']}" + (f" (generated by {ident['generator']})"
                                                                 if ident.get("generator") else ""))
    setup += [f"Settings: {', '.join(settings)}; fractions of the real training data: "
              f"{', '.join(f'{f:g}' for f in fractions)}; seeds: {', '.join(map(str, summary['seeds']))}",
              f"Image size {'x'.join(map(str, ident.get('image_size', [])))}, batch size {ident.get('batch_size')}"]
    proto = summary.get("protocol") or {}
    if task == "segmentation":
        budget = (f"at most {ident['steps']} steps" if ident.get("steps") else
                  f"at most {ident.get('epochs') or 'default'} epochs of the fit images")
        stop = (f", early stopping after {ident['patience']} epochs without a better selection mIoU"
                if ident.get("patience") else "")
        setup.append(f"Training budget per run: {budget}{stop}; the same maximum for every setting (synthetic "
                     f"samples replace real ones in the batches at ratio {ident.get('synthetic_ratio')}; "
                     "'synthetic' uses synthetic samples only); the steps each run actually took are in the "
                     "budget table")
    else:
        from synthseg_tf.experiments.common import RATIO_MARK

        ratio = ident.get("synthetic_ratio")
        mixing = ("real+synthetic appends every synthetic image to the training split" if ratio is None else
                  f"real+synthetic mixes synthetic images into a fraction {ratio:g} of the batches' samples, "
                  "on average")
        if any(RATIO_MARK in s for s in settings):
            mixing += f"; real+synthetic{RATIO_MARK}R mixes them at ratio R"
        setup.append(f"Up to {ident.get('epochs')} epochs with early stopping on validation loss "
                     f"(patience {ident.get('patience')}); synthetic images are used for training only ({mixing})")
    for c in proto.get("cells", []):
        sub = c.get("subset", {})
        setup.append(f"Protocol, fraction {sub.get('fraction', 0):g} (subset seed {sub.get('seed')}): "
                     f"{sub.get('images')} training images, {c.get('fit_images')} fit and {c.get('selection_images')} "
                     f"selection ({c.get('selection')}); the generator was trained on "
                     f"{c.get('generator_trained_on') or 'n/a'}")
    if proto.get("cells"):
        setup.append("Rule: " + proto["cells"][0].get("rule", ""))
    if summary.get("verdict_rule"):
        setup.append("Verdicts: " + summary["verdict_rule"])
    sel = summary.get("selected_recipe")
    if sel:
        setup.append("Recipe: " + sel["rule"] + ". Chosen: " + "; ".join(
            f"fraction {c['fraction']:g} seed {c['seed']}: {c['setting']}" for c in sel["chosen"]))
    doc.items(setup)

    doc.h2("Findings")
    findings = []
    for f in fractions:
        b = row.get((f, base))
        n_real = f" ({b['train_samples']:g} real images)" if b and b.get("train_samples") else ""
        for s in settings:
            r = row.get((f, s))
            if s == base or r is None:
                continue
            d = (r.get(f"delta_vs_{base}") or {}).get("metrics", {}).get(metric)
            base_txt = f"{base} {_prose(b['metrics'][metric])}" if b else f"no {base} run"
            head = f"Fraction {f:g}{n_real}: {s} {_label(metric)} {_prose(r['metrics'][metric])} vs {base_txt}"
            if not d:
                findings.append(f"{head}; no paired {base} runs to compare.")
                continue
            dd = r.get(f"delta_vs_{base}") or {}
            verdict = f" Verdict: {dd['verdict']}." if dd.get("verdict") else ""
            findings.append(f"{head}; difference {_prose(d, signed=True, unit='points')} over {d['n']} "
                            f"seed(s): {_verdict(d, s)}.{verdict}")
            for key, other in r.items():
                if key.startswith("delta_vs_") and key != f"delta_vs_{base}" and other:
                    od = other["metrics"].get(metric)
                    findings.append(f"Fraction {f:g}: {s} vs {key[len('delta_vs_'):]}: "
                                    f"{_prose(od, signed=True, unit='points')} over {od['n']} seed(s); verdict: "
                                    f"{other.get('verdict', 'n/a')}.")
    if not findings:
        findings.append(f"Only the {base} setting was run; there is nothing to compare.")
    doc.items(findings)
    doc.p(f"Values are mean ± {summary.get('std', 'std over seeds')}. "
          f"Differences are {summary.get('delta', 'paired by seed')}.")

    doc.h2(f"{_label(metric)} by setting and fraction")
    header = ["fraction", "real images"] + [f"{s} (%)" for s in settings] + \
             [f"{s} - {base} (points)" for s in settings if s != base]
    trows = []
    for f in fractions:
        ref = next((row[(f, s)] for s in settings if (f, s) in row), None)
        n_real = ref.get("train_samples") if ref else None
        if ref and ref["setting"] == "synthetic":
            n_real = None
        cells = [f"{f:g}", "" if n_real is None else f"{n_real:g}"]
        cells += [_stat(row[(f, s)]["metrics"][metric]) if (f, s) in row else "—" for s in settings]
        for s in settings:
            if s == base:
                continue
            d = ((row.get((f, s)) or {}).get(f"delta_vs_{base}") or {}).get("metrics", {}).get(metric)
            cells.append(_stat(d, signed=True) if d else "—")
        trows.append(cells)
    doc.table(header, trows, f"{_label(metric)} (%), mean ± std over seeds")
    doc.figure("metric_vs_fraction.png", _metric_vs_fraction(summary),
               f"{_label(metric)} vs fraction of real training data (error bars: std over seeds)")

    others = [m for m in summary["metric_names"] if m != metric]
    if others:
        doc.h2("Other metrics")
        header = ["fraction", "setting", "runs"] + [f"{_label(m)} (%)" for m in summary["metric_names"]]
        doc.table(header, [[f"{r['fraction']:g}", r["setting"], r["n_runs"]]
                           + [_stat(r["metrics"][m]) for m in summary["metric_names"]] for r in rows],
                  "mean ± std over seeds")

    if any(r.get("budget") for r in rows):
        doc.h2("Training budget actually used")
        brows = []
        for r in rows:
            b = r.get("budget") or {}
            brows.append([f"{r['fraction']:g}", r["setting"], r["n_runs"]]
                         + [_num(b.get(k)) for k in ("epochs_run", "steps_run", "train_seconds")])
        doc.table(["fraction", "setting", "runs", "epochs", "optimizer steps", "training seconds"], brows,
                  "mean ± std over seeds; runs stop early on the selection split")

    pcm = summary["per_class_metrics"][0]
    doc.h2(f"Per-class {_label(pcm)}")
    for f in fractions:
        doc.h3(f"Fraction {f:g}")
        header = ["class"] + [f"{s} (%)" for s in settings if (f, s) in row] + \
                 [f"{s} - {base}" for s in settings if s != base and (row.get((f, s)) or {}).get(f"delta_vs_{base}")]
        syn_delta = (row.get((f, "real+synthetic")) or {}).get(f"delta_vs_{base}") or {}
        if syn_delta.get("verdicts"):
            header.append(f"verdict (real+synthetic vs {base})")
        prow = []
        for c in summary["class_names"]:
            cells = [c] + [_stat(row[(f, s)]["per_class"][pcm][c]) for s in settings if (f, s) in row]
            for s in settings:
                d = (row.get((f, s)) or {}).get(f"delta_vs_{base}")
                if s != base and d:
                    cells.append(_stat(d["per_class"][c], signed=True))
            if syn_delta.get("verdicts"):
                cells.append(syn_delta["verdicts"].get(c, ""))
            prow.append(cells)
        doc.table(header, prow, f"per-class {_label(pcm)} (%), fraction {f:g}; n/a: class absent from both the "
                                "ground truth and the predictions" if task == "segmentation" else
                  f"per-class {_label(pcm)} (%), fraction {f:g}")
        doc.figure(f"per_class_delta_frac{f:g}.png", _delta_bars(summary, f),
                   f"Per-class {_label(pcm)} change vs {base}, fraction {f:g} (mean ± std over seeds); "
                   "bars right of zero mean the setting did better than real-only")

    run_list = (results or {}).get("runs", [])
    keys = CURVE_KEYS.get(task, ("val_loss", "loss"))
    curve_figs = []
    for f in fractions:
        curves = [(f"{r['setting']} s{r['seed']}", r["setting"], _history(os.path.join(run_dir, r["run"])))
                  for r in run_list if r["fraction"] == f]
        curve_figs.append((f, _curves(curves, keys, f"fraction {f:g}")))
    if any(png for _, png in curve_figs):
        doc.h2("Training curves")
        doc.p(f"Left: {keys[0].replace('_', ' ')} per epoch (at the training image size); right: training loss. "
              "One line per run (setting and seed).")
        for f, png in curve_figs:
            doc.figure(f"curves_frac{f:g}.png", png, f"Training curves, fraction {f:g}")

    grid, note = _sample_grid(run_dir, ident)
    if grid:
        doc.h2("Samples")
        doc.figure("samples.png", grid, note)

    if run_list:
        doc.h2("All runs")
        header = ["fraction", "seed", "setting", "train images", "synthetic"] + \
                 [f"{_label(m)} (%)" for m in summary["metric_names"]] + ["run folder"]
        doc.table(header, [[f"{r['fraction']:g}", r["seed"], r["setting"], r.get("train_samples", ""),
                            r.get("synthetic_samples", "")] + [_pct(r["metrics"].get(m)) for m in summary["metric_names"]]
                           + [r["run"]] for r in run_list])
    return doc


# ============================================================================ single-run report
def _run_doc(run_dir: str, metrics: Dict, config: Dict) -> _Doc:
    task = config.get("task", "segmentation" if "val" in metrics and "mean_iou" in metrics["val"] else "classification")
    doc = _Doc(f"{task.capitalize()} training run: {os.path.basename(os.path.abspath(run_dir))}")
    doc.h2("Setup")
    if task == "segmentation":
        setup = [f"Training data: {config.get('train')} ({config.get('train_samples')} samples)",
                 f"Validation data: {config.get('val')} ({config.get('val_samples')} samples)"]
        if config.get("synthetic"):
            setup.append(f"Synthetic data: {config['synthetic']} ({config.get('synthetic_samples')} samples, "
                         f"ratio {config.get('synthetic_ratio')})")
        setup.append(f"{config.get('epochs')} epoch(s) x {config.get('steps_per_epoch')} steps, batch "
                     f"{config.get('batch_size')}, image size {'x'.join(map(str, config.get('image_size', [])))}, "
                     f"backbone {config.get('backbone')}, seed {config.get('seed')}; weights kept: "
                     f"{metrics.get('weights')} (epoch {metrics.get('best_epoch')})")
    else:
        sp = config.get("splits", {})
        setup = [f"Data: {config.get('data')} (train {sp.get('train')}, val {sp.get('val')}, test {sp.get('test')})"]
        if config.get("synthetic"):
            setup.append(f"Synthetic data: {config['synthetic']} ({config.get('synthetic_samples')} images, "
                         f"{config.get('synthetic_mode')})")
        setup.append(f"{metrics.get('epochs_run')} of up to {config.get('max_epochs')} epochs (best epoch "
                     f"{metrics.get('best_epoch')}), image size {'x'.join(map(str, config.get('image_size', [])))}, "
                     f"seed {config.get('seed')}")
    doc.items(setup)
    if task == "segmentation":
        v = metrics["val"]
        doc.h2("Validation metrics")
        doc.table(["metric", "value (%)"], [[_label(k), _pct(v.get(k))] for k in
                                           ("mean_iou", "mean_dice", "pixel_accuracy", "mean_class_accuracy")],
                  "full validation set at native resolution, void pixels skipped")
        doc.table(["class", "IoU (%)", "Dice (%)", "accuracy (%)", "pixels"],
                  [[c, _pct(d.get("iou")), _pct(d.get("dice")), _pct(d.get("accuracy")), d.get("support")]
                   for c, d in v["per_class"].items()], "per class")
    else:
        # a run without a test report (an experiment's filter classifier) shows its selection split
        split = "test" if "test" in metrics else "val"
        t = metrics[split]
        doc.h2("Test metrics" if split == "test" else "Validation (selection) metrics")
        doc.table(["metric", "value (%)"], [["accuracy", _pct(t["accuracy"])],
                                           ["macro precision", _pct(t["macro"]["precision"])],
                                           ["macro recall", _pct(t["macro"]["recall"])],
                                           ["macro F1", _pct(t["macro"]["f1"])],
                                           ["weighted F1", _pct(t["weighted"]["f1"])]],
                  f"{t['num_samples']} {'test' if split == 'test' else 'val'} images")
        doc.table(["class", "precision (%)", "recall (%)", "F1 (%)", "support"],
                  [[c, _pct(d["precision"]), _pct(d["recall"]), _pct(d["f1"]), d["support"]]
                   for c, d in t["per_class"].items()], "per class")
    keys = CURVE_KEYS.get(task, ("val_loss", "loss"))
    png = _curves([("run", "real", _history(run_dir))], keys, "training curves")
    if png:
        doc.h2("Training curves")
        doc.figure("curves.png", png, f"{keys[0].replace('_', ' ')} and training loss per epoch")
    return doc


# ============================================================================ entry point
def write_report(run_dir: str, out_dir: Optional[str] = None) -> Tuple[str, str]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ PNGs) for an experiment or a run.

    ``run_dir``: an experiment folder (with ``summary.json``) or a training run folder (with
    ``metrics.json``). ``out_dir`` defaults to ``run_dir/report``. Returns ``(html_path, md_path)``.
    """
    from synthseg_tf.utils import atomic_write_bytes, atomic_write_text

    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such folder")
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if summary is not None:
        if not summary.get("rows"):
            raise ValueError(f"{run_dir}/summary.json has no finished runs yet")
        doc = _experiment_doc(run_dir, summary, _read_json(os.path.join(run_dir, "results.json")))
    else:
        metrics = _read_json(os.path.join(run_dir, "metrics.json"))
        if metrics is None:
            raise FileNotFoundError(f"{run_dir}: neither summary.json (an experiment) nor metrics.json (a training "
                                    "run) found")
        doc = _run_doc(run_dir, metrics, _read_json(os.path.join(run_dir, "config.json")) or {})
    out_dir = os.path.abspath(out_dir or os.path.join(run_dir, REPORT_DIR))
    os.makedirs(out_dir, exist_ok=True)
    for name, png in doc.figures:
        atomic_write_bytes(os.path.join(out_dir, name), png)
    html_path, md_path = os.path.join(out_dir, "report.html"), os.path.join(out_dir, "report.md")
    atomic_write_text(html_path, doc.html())
    atomic_write_text(md_path, doc.markdown())
    return html_path, md_path


__all__ = ["write_report"]

"""Generator SavedModel export: signatures served in a fresh process, as TF Serving would."""
import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from synthseg_tf.data import ClassTable
from synthseg_tf.data.io import encode_png


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import tensorflow as tf

    from synthseg_tf.export.generator import export_generator, export_run
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    root = tmp_path_factory.mktemp("export")
    tf.keras.utils.set_random_seed(0)
    gen = build_generator(3, (32, 32), base_filters=8, norm="instance", upsample="transpose")  # as older runs
    run = root / "run"
    save_generator(gen, str(run / "generator"))
    (run / "config.json").write_text(json.dumps({"num_classes": 3, "image_size": [32, 32], "num_labels": None}))
    ClassTable(names=["a", "b", "c"]).save(str(run / "classes.json"))
    out = export_run(str(run), str(root / "export"))
    maps = np.random.default_rng(0).integers(0, 3, (2, 32, 32)).astype(np.uint8)
    expected = np.clip(np.round((gen(maps.astype(np.int32), training=False).numpy() + 1) * 127.5), 0, 255)
    cond = build_generator(3, (32, 32), base_filters=8, norm="instance", num_labels=5)  # resize + class FiLM
    export_generator(cond, str(root / "cond"), (32, 32), ClassTable(names=["a", "b", "c"]))
    return out, str(root / "cond"), maps, expected.astype(np.uint8), str(run)


def test_export_refuses_to_overwrite(exported):
    from synthseg_tf.export.generator import export_run

    with pytest.raises(FileExistsError):
        export_run(exported[4], exported[0])


def test_serving_in_fresh_process(exported, tmp_path):
    out, cond, maps, expected, _ = exported
    np.save(tmp_path / "maps.npy", maps)
    pngs = [base64.b64encode(encode_png(m)).decode() for m in maps]  # TF Serving REST: {"b64": ...}
    (tmp_path / "req.json").write_text(json.dumps({"instances": [{"b64": p} for p in pngs]}))
    script = f"""
import base64, json, numpy as np, tensorflow as tf
m = tf.saved_model.load({out!r})
maps = np.load({str(tmp_path / 'maps.npy')!r})
a = m.signatures["serving_default"](label_map=tf.constant(maps))["image"].numpy()
req = json.load(open({str(tmp_path / 'req.json')!r}))
raw = [base64.b64decode(i["b64"]) for i in req["instances"]]
b = m.signatures["serving_png"](label_map_png=tf.constant(raw))
big = m.signatures["serving_default"](label_map=tf.constant(np.repeat(np.repeat(maps, 2, 1), 2, 2)))["image"]
c = tf.saved_model.load({cond!r}).signatures["serving_default"](label_map=tf.constant(maps), class_id=tf.constant([1, 4]))
np.save({str(tmp_path / 'a.npy')!r}, a)
np.save({str(tmp_path / 'b.npy')!r}, b["image"].numpy())
print(a.dtype, a.shape, tf.io.decode_png(b["image_png"][0]).shape, big.shape, c["image"].shape)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "uint8 (2, 32, 32, 3) (32, 32, 3) (2, 64, 64, 3) (2, 32, 32, 3)" in res.stdout
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert np.abs(a.astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(a, b)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["image_size"] == [32, 32]
    # the run's config predates the quality options: the export records what such runs used
    assert (cfg["upsample"], cfg["label_conditioning"], cfg["ema_decay"], cfg["diffaugment"]) == (
        "transpose", None, None, None)


def test_saved_model_cli_lists_and_runs(exported, tmp_path):
    out, _, maps, _, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", out, "--all"], capture_output=True, text=True, timeout=300)
    assert show.returncode == 0 and "serving_default" in show.stdout and "serving_png" in show.stdout
    np.save(tmp_path / "m.npy", maps)
    run = subprocess.run([cli, "run", "--dir", out, "--tag_set", "serve", "--signature_def", "serving_default",
                          "--inputs", f"label_map={tmp_path / 'm.npy'}", "--outdir", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.load(tmp_path / "o" / "image.npy").shape == (2, 32, 32, 3)


def test_film_generator_run_and_export_render_alike(tmp_path):
    """A class-FiLM, resize-decoder generator survives save/load (Renderer) and export."""
    import tensorflow as tf

    from synthseg_tf.export.generator import export_run
    from synthseg_tf.generation.renderer import Renderer
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    tf.keras.utils.set_random_seed(0)
    gen = build_generator(3, (32, 32), base_filters=8, norm="instance", num_labels=4, upsample="resize",
                          label_conditioning="film")
    run = tmp_path / "run"
    save_generator(gen, str(run / "generator"))
    settings = {"upsample": "resize", "label_conditioning": "film", "diffaugment": "color,translation,cutout",
                "ema_decay": 0.999}
    (run / "config.json").write_text(json.dumps({"num_classes": 3, "image_size": [32, 32], "num_labels": 4,
                                                 "train_source_ids": ["a", "b"], **settings}))
    maps = np.random.default_rng(0).integers(0, 3, (2, 32, 32)).astype(np.uint8)
    maps[1] = maps[0]
    from_run = Renderer(str(run))
    assert from_run.conditional and {k: from_run.config[k] for k in settings} == settings
    assert from_run.fused  # resize decoder: rendered through the fused-upsampling twin, checked against gen below
    a = from_run.render(maps, np.array([0, 3]))
    assert np.abs(a[0].astype(int) - a[1].astype(int)).max() > 0  # same map, another class
    expected = np.clip(np.round((gen({"mask": maps.astype(np.int32), "label": tf.constant([0, 3])},
                                     training=False).numpy() + 1) * 127.5), 0, 255)
    assert np.abs(a.astype(int) - expected.astype(int)).max() <= 1

    out = export_run(str(run), str(tmp_path / "export"))
    from_export = Renderer(out)
    assert {k: from_export.config[k] for k in settings} == settings
    assert from_export.config["train_source_ids"] == ["a", "b"]  # provenance travels with the export
    b = from_export.render(maps, np.array([0, 3]))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1

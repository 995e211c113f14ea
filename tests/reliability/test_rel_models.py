"""Models and serving (issue 10): a folder that is not a model is named with what was expected,
Keras files load in safe mode, a generator refuses label maps with ids it was not trained for,
and the serving signatures answer bad requests with a clear error and keep serving."""
import json
import os
import shutil

import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.data.classes import ClassTable
from synthseg_tf.errors import EXIT_BAD_DATA, ModelLoadError
from synthseg_tf.models.loading import ModelNotFound, load_keras_model

SIZE, K = 32, 3


def _png(a):
    return tf.io.encode_png(np.asarray(a, np.uint8)[..., None]).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A finished-looking GAN run folder, its export, a class-conditional export and a segmenter export,
    all from untrained tiny networks (what is tested is the plumbing, not the weights)."""
    from synthseg_tf.export.generator import export_generator, export_run
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.models.unet import export_unet
    from synthseg_tf.training import gan

    root = tmp_path_factory.mktemp("models")
    run = str(root / "run")
    os.makedirs(run)
    tf.keras.utils.set_random_seed(0)
    generator = build_generator(K, SIZE, base_filters=8, norm="instance")
    gan.save_generator(generator, os.path.join(run, "generator"))
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"model": "pix2pix", "num_classes": K, "image_size": [SIZE, SIZE], "num_labels": None,
                   "upsample": "resize", "label_conditioning": None, "diffaugment": None, "ema_decay": None}, f)
    ClassTable(["background", "car", "tree"]).save(os.path.join(run, "classes.json"))
    export = export_run(run, str(root / "export"))
    cond = export_generator(build_generator(K, SIZE, base_filters=8, norm="instance", num_labels=2,
                                            label_conditioning="film"), str(root / "cond"), (SIZE, SIZE))
    inp = tf.keras.Input((None, None, 3))
    seg_model = tf.keras.Model(inp, tf.keras.layers.Conv2D(K, 1, activation="softmax")(inp))
    seg = export_unet(seg_model, str(root / "seg"), ["background", "car", "tree"], image_size=SIZE)
    return dict(root=str(root), run=run, export=export, cond=cond, seg=seg)


# --------------------------------------------------------------------------- not a model
def test_folders_that_are_not_models_are_named(models, tmp_path):
    from synthseg_tf.export.generator import export_run
    from synthseg_tf.models.classifier import load_classifier
    from synthseg_tf.models.unet import load_segmenter
    from synthseg_tf.training.gan import load_generator

    empty = tmp_path / "empty"
    empty.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(_png(np.zeros((4, 4))))
    cases = [
        (load_generator, str(empty), "not a `synthseg gan train` run folder (expected config.json and generator/)"),
        (load_generator, str(photos), "it holds a.png"),
        (load_segmenter, str(photos), "not a segmenter export: expected a TensorFlow SavedModel folder with "
                                      "saved_model.pb"),
        (load_classifier, str(empty), "an empty folder"),
        (lambda p: export_run(p, str(tmp_path / "out")), str(photos), "not a `synthseg gan train` run folder"),
    ]
    for loader, path, expected in cases:
        with pytest.raises(ModelLoadError) as e:
            loader(path)
        assert path in str(e.value) and expected in str(e.value), str(e.value)
    assert not os.path.exists(tmp_path / "out")  # nothing half-exported
    for loader in (load_generator, load_segmenter):
        with pytest.raises(ModelNotFound) as e:
            loader(str(tmp_path / "missing"))
        assert isinstance(e.value, FileNotFoundError) and str(tmp_path / "missing") in str(e.value)


def test_unfinished_gan_run_says_to_resume(models, tmp_path):
    from synthseg_tf.training.gan import load_generator

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(models["run"], "config.json"), run / "config.json")
    (run / "checkpoints" / "ckpt-40.index").write_bytes(b"")
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-40"\n')
    with pytest.raises(ModelLoadError, match=r"training did not finish \(last checkpoint ckpt-40\).*--resume"):
        load_generator(str(run))


def test_export_of_another_kind_or_damaged_is_refused(models, tmp_path):
    from synthseg_tf.models.classifier import load_classifier
    from synthseg_tf.models.unet import load_segmenter

    with pytest.raises(ModelLoadError, match=r"not a classifier export: config.json says format "
                                             r"'synthseg_tf.segmenter', not 'synthseg_tf.classifier'"):
        load_classifier(models["seg"])
    with pytest.raises(ModelLoadError, match="not a segmenter export: config.json says format "
                                             "'synthseg-generator-savedmodel'"):
        load_segmenter(models["export"])
    damaged = str(tmp_path / "seg")
    shutil.copytree(models["seg"], damaged)
    pb = os.path.join(damaged, "saved_model.pb")
    with open(pb, "r+b") as f:
        f.truncate(os.path.getsize(pb) // 3)
    with pytest.raises(ModelLoadError, match="cannot load the segmenter export") as e:
        load_segmenter(damaged)
    assert damaged in str(e.value)
    assert load_segmenter(models["seg"])(np.zeros((1, SIZE, SIZE, 3), np.uint8)).shape == (1, SIZE, SIZE)


# --------------------------------------------------------------------------- Keras safe mode
def test_keras_files_load_in_safe_mode(tmp_path):
    inp = tf.keras.Input((4,))
    model = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda x: x * 2.0)(inp))
    for name in ("m.keras", "m.h5"):  # Python bytecode inside: refused, with the way out named
        model.save(str(tmp_path / name))
        with pytest.raises(ModelLoadError, match="Lambda layer with Python code, which safe mode refuses") as e:
            load_keras_model(str(tmp_path / name))
        assert str(tmp_path / name) in str(e.value)
    model.save(str(tmp_path / "sm"), save_format="tf")
    loaded = load_keras_model(str(tmp_path / "sm"))  # revived from the saved graph; no bytecode is run
    assert not hasattr(loaded.layers[-1], "function")
    np.testing.assert_allclose(loaded(tf.ones((1, 4))).numpy(), 2.0)

    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ModelLoadError, match="bad.keras: cannot load the Keras model"):
        load_keras_model(str(tmp_path / "bad.keras"))
    tf.saved_model.save(tf.Module(), str(tmp_path / "plain"))
    with pytest.raises(ModelLoadError, match="without keras_metadata.pb"):
        load_keras_model(str(tmp_path / "plain"))


# --------------------------------------------------------------------------- label ids
def test_generator_refuses_label_ids_it_was_not_trained_for(models):
    from synthseg_tf.training.gan import load_generator

    good = np.zeros((1, SIZE, SIZE), np.uint8)
    good[0, :4] = 255  # void is fine
    good[0, 4:8] = K - 1
    bad = good.copy()
    bad[0, 10, 10], bad[0, 11, 11] = 7, 200
    generator, _ = load_generator(models["run"])
    assert generator(tf.constant(good, tf.int32)).shape == (1, SIZE, SIZE, 3)
    msg = (r"generator was not trained for: it has 3 classes \(ids 0\.\.2, 255 = void\); "
           r"ids found outside them:\W*7\W+200")
    with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
        generator(tf.constant(bad, tf.int32))  # the Keras model, eagerly
    loaded = tf.saved_model.load(models["export"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
        loaded.signatures["serving_default"](label_map=tf.constant(bad))
    with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
        loaded.signatures["serving_png"](label_map_png=tf.constant([_png(good[0]), _png(bad[0])]))
    out = loaded.signatures["serving_default"](label_map=tf.constant(good))["image"]
    assert out.shape == (1, SIZE, SIZE, 3) and out.dtype == tf.uint8  # still serving after the refusals


def test_class_conditional_export_refuses_unknown_class_ids(models):
    fn = tf.saved_model.load(models["cond"]).signatures["serving_default"]
    maps = tf.zeros((2, SIZE, SIZE), tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"class_id must be in 0\.\.1 .*got:.*\[0 5\]"):
        fn(label_map=maps, class_id=tf.constant([0, 5]))
    assert fn(label_map=maps, class_id=tf.constant([0, 1]))["image"].shape == (2, SIZE, SIZE, 3)


# --------------------------------------------------------------------------- bad requests
def test_serving_png_bad_requests_fail_clearly_and_keep_serving(models):
    fn = tf.saved_model.load(models["export"]).signatures["serving_png"]
    good = _png(np.ones((SIZE, SIZE)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not PNG data .* at request index\(es\):.*\[1 2\]"):
        fn(label_map_png=tf.constant([good, b"GIF89a, not a png", b""]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG"):  # a cut-off file: libpng's own message
        fn(label_map_png=tf.constant([good[: len(good) // 2]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must share a size; \(height, width\) per index:"):
        fn(label_map_png=tf.constant([good, _png(np.ones((16, 24)))]))
    out = fn(label_map_png=tf.constant([good, good]))
    assert out["image"].shape == (2, SIZE, SIZE, 3)
    assert tf.io.decode_png(out["image_png"][0]).shape == (SIZE, SIZE, 3)


def test_serving_wrong_shape_or_dtype_fails_clearly(models):
    gen = tf.saved_model.load(models["export"]).signatures["serving_default"]
    seg = tf.saved_model.load(models["seg"]).signatures["serving_default"]
    cases = ((gen, dict(label_map=tf.zeros((1, SIZE, SIZE, 1), tf.uint8)),  # an extra channel axis
              r"label_map \[1,32,32,1\] is not compatible with expected shape \[\?,\?,\?\]"),
             (gen, dict(label_map=tf.zeros((1, SIZE, SIZE), tf.float32)), "expected to be a uint8 tensor"),
             (seg, dict(images=tf.zeros((1, SIZE, SIZE, 4), tf.uint8)),  # RGBA
              r"images \[1,32,32,4\] is not compatible with expected shape \[\?,\?,\?,3\]"))
    for fn, kwargs, msg in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
            fn(**kwargs)
    assert seg(images=tf.zeros((1, SIZE, SIZE, 3), tf.uint8))["label_ids"].shape == (1, SIZE, SIZE)
    assert gen(label_map=tf.zeros((1, SIZE, SIZE), tf.uint8))["image"].shape == (1, SIZE, SIZE, 3)


def test_segmenter_serving_bytes_corrupt_image(models):
    fn = tf.saved_model.load(models["seg"]).signatures["serving_bytes"]
    rgb = tf.io.encode_png(np.zeros((SIZE, SIZE, 3), np.uint8)).numpy()
    for bad in (b"this is text", rgb[: len(rgb) // 2]):
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            fn(image_bytes=tf.constant([rgb, bad]))
        assert str(e.value).strip()
    assert fn(image_bytes=tf.constant([rgb]))["label_ids"].shape == (1, SIZE, SIZE)


def test_cli_gan_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    from synthseg_tf.cli import main

    (tmp_path / "notes.txt").write_text("hello")
    rc = main(["gan", "export", str(tmp_path), str(tmp_path / "exported")])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_DATA and f"{tmp_path}: not a `synthseg gan train` run folder" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "exported")

"""Edge conditioning of classification GANs: grey-level and per-channel Canny maps, the same map in
the GAN's input pipeline and in generation's map source."""
import json
import os

import cv2
import numpy as np
import pytest

from synthseg_tf.data import load
from synthseg_tf.data.conditioning import (EDGE_CLASSES, canny_edges, color_canny_edges, conditioning_classes,
                                           edge_map)

from conftest import save


def equal_grey_image(size=32):
    """A red square on a green background of the same grey level (cv2's RGB->GRAY weights)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = (0, 100, 0)  # grey 0.587 * 100 = 58.7
    red = int(round(58.7 / 0.299))  # 196: grey 58.6
    img[8:24, 8:24] = (red, 0, 0)
    return img


def test_color_edges_keep_an_outline_the_grey_level_map_loses():
    img = equal_grey_image()
    assert canny_edges(img).sum() == 0  # one grey level everywhere: no edge
    col = color_canny_edges(img)
    ring = np.zeros((32, 32), bool)
    ring[6:26, 6:26] = True
    ring[10:22, 10:22] = False
    assert col.dtype == np.uint8 and set(np.unique(col)) == {0, 1}
    assert col[ring].sum() >= 40 and col[~ring].sum() == 0  # the square's outline, nothing else
    # on a brightness edge both maps agree (every channel moves together)
    grey = np.repeat(np.where(np.arange(32)[None, :] < 16, 40, 200).astype(np.uint8)[..., None], 3, -1)
    grey = np.repeat(grey, 32, axis=0)
    np.testing.assert_array_equal(color_canny_edges(grey), canny_edges(grey))
    np.testing.assert_array_equal(edge_map(img, "color-edges"), col)
    np.testing.assert_array_equal(edge_map(img, "edges"), canny_edges(img))
    with pytest.raises(ValueError, match="not an edge conditioning"):
        edge_map(img, "class")
    assert conditioning_classes("color-edges") == EDGE_CLASSES


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(3):
            img = equal_grey_image()
            img = np.roll(img, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
            save(root / "cf" / c / f"{c}{i}.png", img if c == "a" else img[:, :, [1, 0, 2]])  # b: unequal greys
    return root


def test_gan_input_pipeline_draws_the_chosen_edge_maps(folders):
    from synthseg_tf.training.gan_data import gan_datasets

    ds = load(f"classfolders:{folders / 'cf'}")
    for conditioning, fn in (("color-edges", color_canny_edges), ("edges", canny_edges)):
        gd = gan_datasets(ds, (32, 32), 6, conditioning=conditioning, val=False)
        assert gd.conditioning == conditioning and gd.classes == EDGE_CLASSES
        batch = next(iter(gd.train))
        images = np.clip(np.round(batch["image"].numpy() * 255.0), 0, 255).astype(np.uint8)
        for image, mask in zip(images, batch["mask"].numpy()):
            np.testing.assert_array_equal(mask, fn(image))  # the map of the (augmented) image it comes with
        if conditioning == "color-edges":
            assert all(m.sum() > 0 for m in batch["mask"].numpy())
    with pytest.raises(ValueError):
        gan_datasets(ds, (32, 32), 2, conditioning="labelmap", val=False)


def test_generation_conditions_on_the_generators_own_edge_kind(folders, tmp_path):
    """A generator trained on color-edges gets colour edge maps of its source images (and may borrow)."""
    import tensorflow as tf

    from synthseg_tf.data import ClassTable
    from synthseg_tf.generation.pipeline import GenerationConfig, MapSource, plan_map_source
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    ds = load(f"classfolders:{folders / 'cf'}")
    run = tmp_path / "cegen"
    tf.keras.utils.set_random_seed(0)
    save_generator(build_generator(2, (32, 32), base_filters=8, norm="instance", num_labels=2),
                   str(run / "generator"))
    gc = {"num_classes": 2, "image_size": [32, 32], "num_labels": 2, "data": f"classfolders:{folders / 'cf'}",
          "conditioning": "color-edges", "train_source_ids": sorted(s.source_id for s in ds.samples)}
    (run / "config.json").write_text(json.dumps(gc))
    EDGE_CLASSES.save(str(run / "classes.json"))
    cfg = GenerationConfig(generator=str(run), out="x", n=1, labels="rare", seed=3, borrow_maps=0.5)
    src = MapSource(cfg, gc, 2, plan_map_source(cfg, gc))
    for s, m in zip(ds.samples, src.maps):
        image, _ = ds.read_image(s)
        np.testing.assert_array_equal(m, color_canny_edges(cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)))
        assert m.sum() > 0
        if s.source_id.startswith("a/"):  # class a: equal grey levels, no grey-level edge at all
            assert canny_edges(image).sum() == 0
    assert any(src.map_class_for(i, 0) == 1 for i in range(50))  # borrowing is allowed on colour edge maps
    assert isinstance(ClassTable.load(str(run)), ClassTable)
    assert os.path.isdir(run / "generator")


def test_demo_mask_is_the_object_and_edge_recall_script_measures_outlines(capsys):
    """render_class_image_and_mask: the same image as render_class_image and the object's mask;
    scripts/edge_recall.py: colour edges keep more of the outlines than grey-level ones."""
    import importlib.util

    from synthseg_tf.data.demo import render_class_image, render_class_image_and_mask

    img, mask = render_class_image_and_mask(0, 3, 5)
    np.testing.assert_array_equal(img, render_class_image(0, 3, 5))
    assert mask.dtype == bool and 0.05 < mask.mean() < 0.6  # one object, a fair part of the image
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("edge_recall", os.path.join(repo, "scripts", "edge_recall.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.outline_recall(per_class=2)
    assert r["edges"]["images"] == r["color-edges"]["images"] == 74
    assert 0.0 <= r["edges"]["mean_outline_recall"] < r["color-edges"]["mean_outline_recall"] <= 1.0
    assert r["color-edges"]["edge_density"] >= r["edges"]["edge_density"]
    assert mod.main(["--per-class", "1"]) == 0 and "outline recall" in capsys.readouterr().out

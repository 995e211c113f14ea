"""The built-in procedural datasets: street scenes and the 37-class classification set."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from synthseg_tf.data import demo
from synthseg_tf.data.classes import ClassTable

K = demo.SCENE_CLASSES.num_classes
NAMES = demo.SCENE_CLASS_NAMES


def cls(name):
    return demo.SCENE_CLASSES.index(name)


@pytest.fixture(scope="module")
def scenes100():
    return demo.render_scenes(0, range(100))


# ------------------------------------------------------------------ scenes
def test_scene_class_table():
    assert K >= 9
    for name in ("sky", "building", "road", "sidewalk", "vegetation", "car", "person", "pole", "sign"):
        assert name in demo.SCENE_CLASSES.names
    assert len(set(demo.SCENE_CLASSES.colors)) == K  # distinct display colours


@pytest.mark.parametrize("size", [(128, 128), (128, 160), (96, 64), (256, 256)])
def test_scene_shapes_and_dtypes(size):
    img, mask = demo.render_scene(0, 3, size)
    assert img.shape == size + (3,) and img.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert mask.max() < K
    # relative geometry: sky on top, road at the bottom, at any size
    assert (mask[0] == cls("sky")).any() or (mask[0] == cls("building")).any()
    assert (mask[-1] == cls("road")).mean() > 0.2


def test_scene_determinism_and_independence():
    a_img, a_mask = demo.render_scene(7, 11)
    demo.render_scene(7, 3)  # other calls in between change nothing
    demo.render_scene(8, 11)
    b_img, b_mask = demo.render_scene(7, 11)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    c_img, c_mask = demo.render_scene(8, 11)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_mask, c_mask)
    d_img, _ = demo.render_scene(7, 12)
    assert not np.array_equal(a_img, d_img)
    imgs, masks = demo.render_scenes(7, [12, 11])
    assert np.array_equal(imgs[1], a_img) and np.array_equal(masks[1], a_mask) and np.array_equal(imgs[0], d_img)


def test_scene_rejects_bad_arguments():
    with pytest.raises(ValueError):
        demo.render_scene(-1, 0)
    with pytest.raises(ValueError):
        demo.render_scene(0, -3)
    with pytest.raises(ValueError):
        demo.render_scene(0, 0, (8, 8))


def test_scene_class_statistics(scenes100):
    _, masks = scenes100
    assert masks.max() < K
    frac = np.bincount(masks.ravel(), minlength=K) / masks.size
    assert (frac > 0).all(), dict(zip(NAMES, frac))  # every class appears somewhere
    assert frac[cls("person")] < 0.03 and frac[cls("pole")] < 0.03 and frac[cls("sign")] < 0.03
    assert frac[cls("road")] > 0.10 and frac[cls("sky")] > 0.10
    present = np.array([[(m == k).any() for k in range(K)] for m in masks]).mean(0)
    assert 0.1 <= present[cls("person")] <= 0.6  # persons in roughly 30% of the scenes
    assert present[cls("road")] == 1.0 and present[cls("sky")] > 0.9


def test_scene_image_matches_mask(scenes100):
    imgs, masks = scenes100
    means = {}
    for name in ("sky", "road", "vegetation"):
        px = imgs[masks == cls(name)].astype(np.float64)
        means[name] = px.mean(0)
    sky, road, veg = means["sky"], means["road"], means["vegetation"]
    assert np.abs(sky - road).sum() > 60
    assert sky[2] > sky[0] + 20 and sky.mean() > road.mean() + 20  # sky blue-ish and bright, road grey and dark
    assert veg[1] > veg[0] and veg[1] > veg[2]  # vegetation green
    # per scene the label map follows the drawing: sky pixels brighter than road pixels in most scenes
    brighter = [imgs[i][masks[i] == cls("sky")].mean() > imgs[i][masks[i] == cls("road")].mean()
                for i in range(len(imgs)) if (masks[i] == cls("sky")).any()]
    assert np.mean(brighter) > 0.8


def test_scenes_are_textured_and_not_trivial(scenes100):
    imgs, masks = scenes100
    x = imgs[:60].reshape(-1, 3).astype(np.float32)
    y = masks[:60].ravel()
    centres = np.array([x[y == k].mean(0) for k in range(K)])
    xt = imgs[60:].reshape(-1, 3).astype(np.float32)
    yt = masks[60:].ravel()
    pred = ((xt[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() < 0.8  # colour alone does not solve the segmentation
    road = imgs[masks == cls("road")].astype(np.float32)
    assert road.std(0).mean() > 5  # noise / markings / shadows, not flat fills


# ------------------------------------------------------------------ classification set
def test_classification_names():
    names = demo.CLASSIFICATION_CLASSES
    assert len(names) == 37 == demo.NUM_CLASSIFICATION_CLASSES
    assert names == sorted(names) and len(set(names)) == 37  # sorted: class-folder ids match
    assert all(n.replace("_", "").isalnum() for n in names)
    assert demo.CLASSIFICATION_TABLE.names == names


def test_class_counts():
    c = demo.demo_class_counts(0)
    assert c.shape == (37,) and c.dtype.kind == "i"
    assert 1000 <= c.sum() <= 1200
    assert (c < 25).sum() >= 5 and (c > 40).sum() >= 3 and c.min() >= 5
    assert np.array_equal(c, demo.demo_class_counts(0))
    assert not np.array_equal(c, demo.demo_class_counts(1))


def test_class_images_deterministic():
    a = demo.render_class_image(0, 5, 3)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, demo.render_class_image(0, 5, 3))
    assert not np.array_equal(a, demo.render_class_image(0, 5, 4))
    assert not np.array_equal(a, demo.render_class_image(1, 5, 3))
    assert demo.render_class_image(0, 36, 0, (32, 48)).shape == (32, 48, 3)
    with pytest.raises(ValueError):
        demo.render_class_image(0, 37, 0)


def test_class_images_learnable_not_trivial():
    def feat(c, i):
        im = demo.render_class_image(0, c, i)
        return cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255

    train = np.array([[feat(c, i) for i in range(8)] for c in range(37)])
    test = np.array([feat(c, i) for c in range(37) for i in range(100, 104)])
    labels = np.repeat(np.arange(37), 4)
    centroids = train.mean(1)
    pred = ((test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    acc = (pred == labels).mean()
    assert 0.15 < acc < 0.95, acc  # chance is 0.027
    within = np.abs(train[:, 0] - train[:, 1]).mean(1)
    assert (within > 0.02).all()  # images of a class are not copies of each other


# ------------------------------------------------------------------ writers
def test_write_demo_scenes(tmp_path):
    out = tmp_path / "scenes"
    path = demo.write_demo_scenes(str(out), n=6, size=(48, 64), seed=3, val_fraction=0.34)
    assert path == str(out)
    assert sorted(os.listdir(out / "images")) == [f"scene_{i:05d}.png" for i in range(6)]
    assert sorted(os.listdir(out / "masks")) == [f"scene_{i:05d}.png" for i in range(6)]
    img = cv2.cvtColor(cv2.imread(str(out / "images" / "scene_00004.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(out / "masks" / "scene_00004.png"), cv2.IMREAD_UNCHANGED)
    ref_img, ref_mask = demo.render_scene(3, 4, (48, 64))
    assert mask.ndim == 2 and mask.dtype == np.uint8
    assert np.array_equal(img, ref_img) and np.array_equal(mask, ref_mask)  # RGB order kept
    assert ClassTable.load(str(out)).names == list(NAMES)
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 2 and len(split["train"]) == 4
    assert not set(split["val"]) & set(split["train"])
    assert [p for p in os.listdir(tmp_path) if p != "scenes"] == []  # no temp leftovers

    with pytest.raises(FileExistsError, match="overwrite"):
        demo.write_demo_scenes(str(out), n=2, size=(32, 32))
    assert len(os.listdir(out / "images")) == 6  # untouched
    demo.write_demo_scenes(str(out), n=2, size=(32, 32), overwrite=True)
    assert len(os.listdir(out / "images")) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    demo.write_demo_scenes(str(empty), n=1, size=(32, 32))  # an empty folder may be filled
    assert os.listdir(empty / "masks") == ["scene_00000.png"]


def test_write_demo_classes(tmp_path):
    out = tmp_path / "classes"
    counts = [2] * 36 + [3]
    demo.write_demo_classes(str(out), seed=1, size=(32, 32), counts=counts)
    names = demo.CLASSIFICATION_CLASSES
    assert sorted(d for d in os.listdir(out) if (out / d).is_dir()) == names
    assert sorted(os.listdir(out / names[-1])) == [f"{names[-1]}_{i:04d}.png" for i in range(3)]
    im = cv2.cvtColor(cv2.imread(str(out / names[0] / f"{names[0]}_0001.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(im, demo.render_class_image(1, 0, 1, (32, 32)))
    assert ClassTable.load(str(out)).names == names
    with pytest.raises(FileExistsError):
        demo.write_demo_classes(str(out), size=(32, 32), counts=counts)

    from synthseg_tf.data import load  # the class-folder loader agrees on the ids

    ds = load(f"classfolders:{out}")
    assert ds.classes.names == names and len(ds.samples) == 75


def test_no_tensorflow_import():
    code = "import sys, synthseg_tf.data.demo; print('tensorflow' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"

"""Tests of synthseg_tf.masks: new label maps from training label maps."""
import json

import numpy as np
import pytest

from synthseg_tf.masks import (
    LabelMapSampler,
    affine_matrix,
    class_balance_weights,
    class_pixel_frequencies,
    cutmix,
    elastic,
    extract_components,
    hflip,
    random_affine,
    resize_nearest,
    validate_label_map,
    warp_affine,
)

K = 5  # sky, building, road, car, pedestrian
SKY, BUILDING, ROAD, CAR, PED = range(K)


def street(rng, h=64, w=64, peds=True, void=False):
    """Sky on top, buildings, road below the horizon, a few cars and tiny pedestrians on the road."""
    m = np.full((h, w), SKY, np.uint8)
    hz = int(h * rng.uniform(0.35, 0.5))
    m[int(h * 0.15):hz] = BUILDING
    m[hz:] = ROAD
    for _ in range(rng.integers(1, 4)):
        cw, ch = int(rng.integers(w // 8, w // 5)), int(rng.integers(h // 12, h // 8))
        x, y = rng.integers(0, w - cw), rng.integers(hz, h - ch)
        m[y:y + ch, x:x + cw] = CAR
    if peds:
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, w - 3), rng.integers(hz, h - 5)
            m[y:y + 5, x:x + 2] = PED
    if void:
        m[:3, :] = 255  # e.g. an unlabelled ego-vehicle / frame band
    return m


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(123)
    return [street(rng) for _ in range(20)]


def _valid(m, k=K, ignore=255):
    return m.dtype == np.uint8 and m.ndim == 2 and np.all((m < k) | (m == ignore))


# ------------------------------------------------------------------------ validity / determinism
def test_outputs_only_hold_valid_ids_for_many_seeds(maps):
    rng = np.random.default_rng(0)
    for seed in range(12):
        # random configurations, property style
        kw = dict(
            class_balance=[None, "rare", "uniform", {PED: 1.0, CAR: 0.5}][seed % 4],
            border=["reflect", "replicate", "void", ROAD][seed % 4],
            probabilities={op: float(rng.uniform(0.3, 1.0)) for op in ("mix", "flip", "affine", "elastic", "copypaste")},
            scale=(0.6, 1.5), rotation=20, shear=0.2, paste_scale=(0.5, 3.0), paste_count=(0, 6),
            keep_vertical=bool(seed % 2), size=None if seed % 3 else (40, 56),
        )
        s = LabelMapSampler(maps, K, seed=seed, **kw)
        for out, info in s.take(15):
            assert _valid(out), (seed, np.unique(out))
            assert list(out.shape) == info["shape"]
            json.dumps(info)  # provenance is JSON-serialisable


def test_same_seed_same_sequence_different_seed_differs(maps):
    a = LabelMapSampler(maps, K, seed=7, class_balance="rare").take(20)
    b = LabelMapSampler(maps, K, seed=7, class_balance="rare").take(20)
    c = LabelMapSampler(maps, K, seed=8, class_balance="rare").take(20)
    for (ma, ia), (mb, ib) in zip(a, b):
        assert np.array_equal(ma, mb) and ia == ib
    assert any(not np.array_equal(ma, mc) for (ma, _), (mc, _) in zip(a, c))
    # output is not just a copy of its base map
    assert sum(not np.array_equal(m, maps[i["base_map"]]) for m, i in a) >= 18


def test_sample_at_is_independent_of_call_order_and_cache(maps):
    s1 = LabelMapSampler(maps, K, seed=3, class_balance="rare")
    s2 = LabelMapSampler(maps, K, seed=3, class_balance="rare").precompute()
    fwd = [s1.sample_at(i) for i in range(12)]
    rev = [s2.sample_at(i) for i in reversed(range(12))][::-1]
    for (ma, ia), (mb, ib) in zip(fwd, rev):
        assert np.array_equal(ma, mb) and ia == ib
    s3 = LabelMapSampler(maps, K, seed=3, class_balance="rare")
    stream = s3.take(12)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(stream, fwd))
    assert s3.position == 12 and s3.take(2, start=5)[0][1] == fwd[5][1] and s3.position == 12
    it = iter(LabelMapSampler(maps, K, seed=3, class_balance="rare"))
    assert next(it)[1] == fwd[0][1] and next(it)[1] == fwd[1][1]


def test_index_forces_base_map(maps):
    s = LabelMapSampler(maps, K, seed=0, ops=("flip",))
    out, info = s.sample(index=4)
    assert info["base_map"] == 4 and info["source_maps"] == [4]
    assert np.array_equal(out, maps[4][:, ::-1])
    cyc = LabelMapSampler(maps, K, base_order="cycle", ops=("flip",))
    assert [i["base_map"] for _, i in cyc.take(25)] == [k % 20 for k in range(25)]


# ------------------------------------------------------------------------ copy-paste balancing
def test_rare_balance_increases_rare_class_frequency(maps):
    kw = dict(ops=("copypaste",), probabilities={"copypaste": 1.0}, paste_count=(2, 4), seed=1)
    base = class_pixel_frequencies(maps, K)
    natural = LabelMapSampler(maps, K, class_balance=None, **kw)
    rare = LabelMapSampler(maps, K, class_balance="rare", **kw)
    f_nat = class_pixel_frequencies([m for m, _ in natural.take(200)], K)
    f_rare = class_pixel_frequencies([m for m, _ in rare.take(200)], K)
    assert f_rare[PED] > 2 * f_nat[PED], (base, f_nat, f_rare)
    assert f_rare[PED] > 2 * base[PED]
    # rare weights favour pedestrians over cars over the big classes
    w = rare.class_weights
    assert w[PED] > w[CAR] > w[ROAD]
    pasted = [p["class"] for _, i in rare.take(50, start=0) for o in i["ops"] for p in o["pastes"]]
    assert pasted.count(PED) > pasted.count(CAR)


def test_explicit_weights_choose_pasted_classes(maps):
    s = LabelMapSampler(maps, K, class_balance={CAR: 1.0}, ops=("copypaste",), probabilities={"copypaste": 1})
    classes = {p["class"] for _, i in s.take(30) for o in i["ops"] for p in o["pastes"]}
    assert classes == {CAR}
    arr = np.zeros(K)
    arr[PED] = 1
    s = LabelMapSampler(maps, K, class_balance=arr, ops=("copypaste",), probabilities={"copypaste": 1})
    assert {p["class"] for _, i in s.take(30) for o in i["ops"] for p in o["pastes"]} == {PED}


def test_keep_vertical_keeps_objects_on_the_road(maps):
    s = LabelMapSampler(maps, K, class_balance={PED: 1.0}, ops=("copypaste",), probabilities={"copypaste": 1},
                        keep_vertical=True, vertical_jitter=0.0, paste_scale=1.0, paste_flip=0.0)
    for _, info in s.take(20):
        for p in info["ops"][0]["pastes"]:
            x, y, w, h = p["src_bbox"]
            assert p["at"][1] + p["size"][0] == y + h  # same bottom row (same-size maps)


def test_paste_occludes_and_pixels_change(maps):
    s = LabelMapSampler(maps, K, class_balance={CAR: 1.0}, ops=("copypaste",), probabilities={"copypaste": 1},
                        paste_count=1)
    out, info = s.sample_at(0)
    p = info["ops"][0]["pastes"][0]
    x, y = p["at"]
    h, w = p["size"]
    box = out[max(y, 0):y + h, max(x, 0):x + w]
    assert np.count_nonzero(box == CAR) >= p["pixels"]


def test_extract_components_filters_by_area():
    m = np.full((32, 32), ROAD, np.uint8)
    m[5:10, 5:7] = PED  # 10 px
    m[20, 20] = PED  # 1 px: too small
    comps = extract_components(m, K, min_area=4, max_area=100)
    assert [c.area for c in comps.by_class[PED]] == [10]
    assert ROAD not in comps.by_class  # too large
    assert comps.by_class[PED][0].mask.shape == (5, 2)


# ------------------------------------------------------------------------ transforms
def test_transforms_preserve_shape_dtype_and_ids(maps):
    rng = np.random.default_rng(0)
    m = maps[0]
    ids = set(np.unique(m).tolist())
    f = hflip(m)
    assert f.shape == m.shape and f.dtype == np.uint8 and np.array_equal(f[:, ::-1], m)
    a, params = random_affine(m, rng, scale=(0.8, 1.3), rotation=10, translate=0.1, shear=0.1)
    assert a.shape == m.shape and a.dtype == np.uint8 and set(np.unique(a).tolist()) <= ids
    assert set(params) == {"scale", "angle", "shear", "tx", "ty"}
    e, ep = elastic(m, rng, alpha=(0.03, 0.03), sigma=(0.1, 0.1))
    assert e.shape == m.shape and e.dtype == np.uint8 and set(np.unique(e).tolist()) <= ids
    assert not np.array_equal(e, m)
    ident = warp_affine(m, affine_matrix(m.shape))
    assert np.array_equal(ident, m)
    rect = np.zeros((30, 50), np.uint8)
    assert random_affine(rect, rng)[0].shape == (30, 50) and elastic(rect, rng)[0].shape == (30, 50)


def test_void_border_only_when_configured(maps):
    rng = np.random.default_rng(1)
    m = maps[0]
    zoom_out = affine_matrix(m.shape, scale=0.7)
    assert not np.any(warp_affine(m, zoom_out, border="reflect") == 255)
    assert np.any(warp_affine(m, zoom_out, border="void") == 255)
    assert np.all(warp_affine(m, zoom_out, border=ROAD)[0] == ROAD)
    kw = dict(scale=(0.6, 0.8), rotation=15, probabilities={o: 1.0 for o in ("flip", "affine", "elastic", "copypaste", "mix")})
    s = LabelMapSampler(maps, K, seed=2, **kw)
    assert not any(np.any(o == 255) for o, _ in s.take(30))  # void-free inputs stay void-free
    s = LabelMapSampler(maps, K, seed=2, border="void", **kw)
    assert any(np.any(o == 255) for o, _ in s.take(10))
    del rng


def test_void_stays_void_with_preserve_void():
    rng = np.random.default_rng(5)
    vmaps = [street(rng, void=True) for _ in range(10)]
    kw = dict(ops=("copypaste", "mix"), probabilities={"copypaste": 1.0, "mix": 1.0}, paste_count=(4, 6),
              keep_vertical=False, mix_modes=("vertical",))
    s = LabelMapSampler(vmaps, K, seed=0, preserve_void=True, **kw)
    for out, info in s.take(30):
        assert np.all(out[:3] == 255)
        assert _valid(out)
    # without preserve_void, pastes may cover void, but never add void where the map had none
    s = LabelMapSampler(vmaps, K, seed=0, ops=("copypaste",), probabilities={"copypaste": 1.0})
    for out, info in s.take(20):
        assert not np.any(out[3:] == 255)


def test_cutmix_band():
    rng = np.random.default_rng(0)
    a, b = np.zeros((20, 30), np.uint8), np.ones((20, 30), np.uint8)
    out, rec = cutmix(a, b, rng, modes=("vertical",), fraction=(0.5, 0.5))
    y0, y1, x0, x1 = rec["region"]
    assert (y0, y1) == (0, 20) and x1 - x0 == 15
    assert out.sum() == 20 * 15 and np.all(out[:, x0:x1] == 1)
    with pytest.raises(ValueError):
        cutmix(a, b[:10], rng)


# ------------------------------------------------------------------------ sizes
def test_varying_input_sizes_with_size(maps):
    rng = np.random.default_rng(9)
    mixed = [street(rng, h, w) for h, w in [(64, 64), (48, 96), (120, 80), (33, 47)] * 3]
    s = LabelMapSampler(mixed, K, seed=0, size=(40, 60), class_balance="rare",
                        probabilities={"mix": 1.0, "copypaste": 1.0})
    for out, info in s.take(30):
        assert out.shape == (40, 60) and _valid(out)
    # without size: output takes the base map's shape, other maps are rescaled to it
    s = LabelMapSampler(mixed, K, seed=0, class_balance="rare", probabilities={"mix": 1.0, "copypaste": 1.0})
    for out, info in s.take(30):
        assert out.shape == mixed[info["base_map"]].shape and _valid(out)
    r = resize_nearest(mixed[1], (24, 48))
    assert r.shape == (24, 48) and set(np.unique(r)) <= set(np.unique(mixed[1]))


def test_accepts_other_int_dtypes_and_stacked_array(maps):
    stacked = np.stack(maps).astype(np.int64)
    s = LabelMapSampler(stacked, K)
    out, _ = s.sample()
    assert out.dtype == np.uint8
    assert validate_label_map(maps[0][..., None], K).shape == maps[0].shape


# ------------------------------------------------------------------------ errors
def test_bad_inputs_raise_informative_errors(maps):
    bad = [m.copy() for m in maps[:3]]
    bad[2][0, 0] = 7
    with pytest.raises(ValueError, match=r"map 2.*id 7"):
        LabelMapSampler(bad, K)
    with pytest.raises(ValueError, match=r"map 1.*dtype float"):
        LabelMapSampler([maps[0], maps[1].astype(np.float32)], K)
    with pytest.raises(ValueError, match=r"map 0.*shape"):
        LabelMapSampler([np.zeros((4, 4, 3), np.uint8)], K)
    with pytest.raises(ValueError, match=r"map 0.*-1"):
        LabelMapSampler([np.full((4, 4), -1, np.int32)], K)
    with pytest.raises(ValueError, match=r"map 0.*300"):
        LabelMapSampler([np.full((4, 4), 300, np.int32)], K)
    with pytest.raises(ValueError, match="empty"):
        LabelMapSampler([], K)
    with pytest.raises(ValueError, match="ops"):
        LabelMapSampler(maps, K, ops=("flip", "rotate"))
    with pytest.raises(ValueError, match="probabilities"):
        LabelMapSampler(maps, K, probabilities={"flip": 2.0})
    with pytest.raises(ValueError, match="class_balance"):
        LabelMapSampler(maps, K, class_balance="common")
    with pytest.raises(ValueError, match="class_balance"):
        LabelMapSampler(maps, K, class_balance={9: 1.0})
    with pytest.raises(ValueError, match="class_balance"):
        LabelMapSampler(maps, K, class_balance=[1.0, 2.0])
    with pytest.raises(ValueError, match="border"):
        LabelMapSampler(maps, K, border="wrap")
    with pytest.raises(ValueError, match="ignore_id"):
        LabelMapSampler(maps, 300)
    with pytest.raises(ValueError, match="index"):
        LabelMapSampler(maps, K).sample(index=99)
    with pytest.raises(ValueError, match="seed"):
        LabelMapSampler(maps, K, seed=-1)
    validate_label_map(np.array([[0, 255]], np.uint8), K)  # void is fine


def test_frequencies_and_weights():
    m1 = np.array([[0, 0, 1, 255]], np.uint8)
    m2 = np.array([[1, 1, 2, 2]], np.uint8)
    f = class_pixel_frequencies([m1, m2], 4)
    assert np.allclose(f, [2 / 7, 3 / 7, 2 / 7, 0])
    w = class_balance_weights(f, "rare")
    assert w[3] == 0 and w[0] == w[2] > w[1] and np.isclose(w.sum(), 1)
    assert class_balance_weights(f, None) is None
    assert np.allclose(class_balance_weights(f, "uniform")[:3], 1 / 3)
    with pytest.raises(ValueError):
        class_balance_weights(f, {3: 1.0})  # class 3 never occurs


def test_info_records_provenance(maps):
    s = LabelMapSampler(maps, K, seed=4, class_balance="rare",
                        probabilities={o: 1.0 for o in ("flip", "affine", "elastic", "copypaste", "mix")})
    out, info = s.sample_at(3)
    assert [o["op"] for o in info["ops"]] == ["mix", "flip", "affine", "elastic", "copypaste"]
    mix = info["ops"][0]
    assert mix["map"] in info["source_maps"] and info["base_map"] in info["source_maps"]
    assert all(p["map"] in info["source_maps"] for p in info["ops"][-1]["pastes"])
    assert info["sample"] == 3 and info["seed"] == 4
    cfg = s.config()
    json.dumps(cfg)
    assert cfg["maps_sha256"] == LabelMapSampler(maps, K).fingerprint()


# ------------------------------------------------------------------------ weighted base maps
def test_map_weights_bias_the_base_map_draw(maps):
    plain = LabelMapSampler(maps, K, seed=5)
    same = LabelMapSampler(maps, K, seed=5, map_weights=None)
    for i in range(10):  # the default is exactly the uniform draw
        a, ia = plain.sample_at(i)
        b, ib = same.sample_at(i)
        assert np.array_equal(a, b) and ia == ib
    w = np.zeros(len(maps))
    w[[2, 7]] = [3.0, 1.0]
    s = LabelMapSampler(maps, K, seed=5, ops=("flip",), map_weights=w)
    bases = np.array([s.sample_at(i)[1]["base_map"] for i in range(800)])
    assert set(np.unique(bases)) == {2, 7}  # zero-weight maps are never the base
    assert abs(np.mean(bases == 2) - 0.75) < 0.06
    assert s.config()["map_weights"][2] == pytest.approx(0.75)
    again = LabelMapSampler(maps, K, seed=5, ops=("flip",), map_weights=w)
    assert [again.sample_at(i)[1]["base_map"] for i in range(50)] == bases[:50].tolist()  # deterministic per i
    with pytest.raises(ValueError, match="one weight per map"):
        LabelMapSampler(maps, K, map_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="not all zero"):
        LabelMapSampler(maps, K, map_weights=np.zeros(len(maps)))
    with pytest.raises(ValueError, match="base_order"):
        LabelMapSampler(maps, K, base_order="cycle", map_weights=np.ones(len(maps)))

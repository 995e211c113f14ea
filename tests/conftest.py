"""Shared fixtures: small datasets written in each layout the package reads."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)

CAMVID = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid"))


def camvid_dir():
    """The shared CamVid folder, or skip the test cleanly when this machine lacks it."""
    if not os.path.isdir(os.path.join(CAMVID, "train")):
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID


SIGN_DIGITS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sign_digits"))


def sign_digits_dir():
    """The shared Sign Language Digits folder (10 class folders of real photos), or skip cleanly."""
    if not os.path.isdir(os.path.join(SIGN_DIGITS, "0")):
        pytest.skip(f"sign_digits not found at {SIGN_DIGITS}")
    return SIGN_DIGITS


def save(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def scene(rng, h=24, w=32, values=(0, 1, 2)):
    """A random image and a blocky mask whose values come from ``values``."""
    mask = np.full((h, w), values[0], dtype=np.uint8)
    mask[h // 2:, :] = values[1]
    y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
    mask[y:y + 5, x:x + 5] = values[2 % len(values)]
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return img, mask


@pytest.fixture
def pairs_dir(tmp_path):
    """pairs layout with 0/128/255 masks (non-contiguous values) and `_mask` suffixes."""
    rng = np.random.default_rng(0)
    for i in range(6):
        img, mask = scene(rng, values=(0, 255, 128))
        save(tmp_path / "images" / f"img{i}.jpg", img)
        save(tmp_path / "masks" / f"img{i}_mask.png", mask)
    return tmp_path


@pytest.fixture
def classfolders_dir(tmp_path):
    rng = np.random.default_rng(1)
    for c, n in (("cat", 4), ("dog", 3), ("fox", 2)):
        for i in range(n):
            save(tmp_path / "cf" / c / f"{c}{i}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    return tmp_path / "cf"

"""synthseg-tf: synthetic training data for image segmentation and classification.

Quick start::

    import synthseg_tf as ss
    ds = ss.data.load("camvid:../shared/data/camvid")       # or "pairs:IMG:MASK", "demo-scenes", ...
    train = ss.data.make_dataset(ds, image_size=(256, 256), batch_size=8, augment=True)
"""
from synthseg_tf import _env  # noqa: F401  (sets SM_FRAMEWORK before anything imports TensorFlow)
from synthseg_tf._env import quiet  # noqa: F401,E402  (opt-in: quiet TensorFlow's logs in a notebook)

__version__ = "0.1.0"

from synthseg_tf import data  # noqa: E402,F401

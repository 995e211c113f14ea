"""Input pipelines for GAN training from any dataset spec (label maps or classification data)."""
from __future__ import annotations

from typing import NamedTuple, Optional

from synthseg_tf.data import SEGMENTATION, ClassTable, Dataset, make_dataset
from synthseg_tf.data.conditioning import conditioning_classes, with_conditioning_masks


class GanData(NamedTuple):
    train: object  # repeating tf.data.Dataset of global batches
    val: Optional[object]
    classes: ClassTable  # classes of the conditioning maps
    num_labels: Optional[int]  # image classes for class-conditional training
    conditioning: str  # labelmap | edges | class
    train_size: int


def gan_datasets(ds: Dataset, image_size, batch_size: int, seed: int = 0, conditioning: str = "auto",
                 val: bool = True) -> GanData:
    """Segmentation data conditions on its label maps; classification data on Canny edge maps
    (default) or on the class alone, plus the class id."""
    if ds.task == SEGMENTATION:
        if conditioning not in ("auto", "labelmap"):
            raise ValueError(f"{ds.spec} has label maps: conditioning must be 'labelmap'")
        conditioning, table, num_labels, fn = "labelmap", ds.classes, None, None
    else:
        conditioning = "edges" if conditioning == "auto" else conditioning
        table, num_labels = conditioning_classes(conditioning), ds.num_classes
        fn = lambda d: with_conditioning_masks(d, conditioning)  # noqa: E731
    train, held = ds.train_val() if val else (ds, None)
    common = dict(image_size=image_size, batch_size=batch_size, seed=seed, element_fn=fn, drop_remainder=True)
    train_ds = make_dataset(train, augment=True, repeat=True, **common)
    val_ds = make_dataset(held, augment=False, repeat=True, shuffle=False, **common) if held is not None else None
    return GanData(train_ds, val_ds, table, num_labels, conditioning, len(train))

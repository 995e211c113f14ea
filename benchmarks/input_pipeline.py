"""Images/s of the tf.data input pipeline at 256x256 with augmentation.

    python benchmarks/input_pipeline.py [--spec camvid:DIR] [--batch-size 8] [--steps 40]
                                        [--sources files,tfrecord,cached]

Measures three sources: image files decoded by the dataset reader, the same data as
TFRecords, and the TFRecords with the decoded set cached in memory.
"""
import argparse
import os
import tempfile

from common import default_spec, report, throughput


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", default=default_spec())
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--sources", default="files,tfrecord,cached", help="comma-separated subset to measure")
    a = p.parse_args()
    sources = {v.strip() for v in a.sources.split(",") if v.strip()}

    from synthseg_tf.data import load, make_dataset, write_tfrecords

    ds = load(a.spec)
    size = (a.image_size, a.image_size)
    common = dict(image_size=size, batch_size=a.batch_size, augment=True, repeat=True, seed=0)
    if "files" in sources:
        it = iter(make_dataset(ds, **common))
        report("input_pipeline.files", throughput(it, a.batch_size, 5, a.steps), "images/s", spec=a.spec,
               size=a.image_size, batch=a.batch_size, steps=a.steps)
    if not sources & {"tfrecord", "cached"}:
        return
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "rec")
        write_tfrecords(ds, rec, shards=8)
        if "tfrecord" in sources:
            it = iter(make_dataset(rec, **common))
            report("input_pipeline.tfrecord", throughput(it, a.batch_size, 5, a.steps), "images/s", spec=a.spec,
                   size=a.image_size, batch=a.batch_size, steps=a.steps)
        if "cached" in sources:
            it = iter(make_dataset(rec, cache=True, **common))
            n_warm = max(5, len(ds) // a.batch_size + 2)  # fill the cache first
            report("input_pipeline.tfrecord_cached", throughput(it, a.batch_size, n_warm, a.steps), "images/s",
                   spec=a.spec, size=a.image_size, batch=a.batch_size, steps=a.steps)


if __name__ == "__main__":
    main()

"""Throughput of the keras_dib.datasets input pipelines.

For each data set (GTSRB and the CIFAR-10 JPEG copy in ../shared/data) this
measures, on the CPU:

1. decoding the zips into uint8 arrays (once, no `.npz` cache);
2. a training pipeline (shuffled, fixed-size batches, standardised), with
   and without augmentation (pad-4 crop, plus flips for CIFAR), through
   `tf.data` (all cores, and limited to one thread to give a per-core
   rate) and through the NumPy `keras.utils.PyDataset` (one thread).

Each pipeline is warmed up, then timed over `--epochs` full epochs; the
consumer only touches the batches (`for x, y in dataset`), so the numbers
are the rate the pipeline can feed a model. One JSON line per measurement
is printed and appended to `--output`.

Usage:

```
python benchmarks/data_pipeline.py
python benchmarks/data_pipeline.py --datasets=gtsrb --batch_size=256
```
"""

import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from absl import app
from absl import flags

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras_dib.datasets  # noqa: E402
from keras_dib.datasets import pipeline  # noqa: E402
from keras_dib.testing.test_case import shared_data_dir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["gtsrb", "cifar10"], "gtsrb and/or cifar10.")
flags.DEFINE_string(
    "data_dir", None, "Folder with gtsrb/ and cifar10/ (../shared/data)."
)
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("epochs", 2, "Timed epochs per pipeline.")
flags.DEFINE_integer("warmup_batches", 20, "Batches before timing.")
flags.DEFINE_string("device", "CPU (2 cores)", "Device label for the JSON.")
flags.DEFINE_string(
    "output",
    os.path.join(ROOT, "benchmarks", "results", "data_pipeline.jsonl"),
    "JSONL file the results are appended to ('' for none).",
)


def _report(record):
    record = {
        "benchmark": "data_pipeline",
        "device": FLAGS.device,
        "cpu_count": os.cpu_count(),
        "keras_backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **record,
    }
    line = json.dumps(record)
    print(line, flush=True)
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
        with open(FLAGS.output, "a") as f:
            f.write(line + "\n")


def _load(name, data_dir):
    start = time.perf_counter()
    if name == "gtsrb":
        (x, y, _), (x_test, _) = keras_dib.datasets.load_gtsrb(
            data_dir, cache=False
        )
    else:
        (x, y), (x_test, _) = keras_dib.datasets.load_cifar10(
            data_dir, cache=False
        )
    seconds = time.perf_counter() - start
    count = len(x) + len(x_test)
    _report(
        {
            "dataset": name if name == "gtsrb" else "cifar10 (JPEG copy)",
            "pipeline": "decode zips -> uint8 arrays",
            "num_images": count,
            "decode_s": round(seconds, 3),
            "images_per_s": round(count / seconds),
        }
    )
    return x, y, seconds


def _one_thread(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def _time_pipeline(dataset, is_tf, threads):
    def epoch():
        count = 0
        if is_tf:
            for _, labels in dataset:
                count += int(labels.shape[0])
        elif threads == 1:
            for i in range(len(dataset)):
                count += len(dataset[i][1])
            dataset.on_epoch_end()
        else:  # as `PyDataset(workers=threads)` does, in a thread pool
            with ThreadPoolExecutor(threads) as pool:
                for _, labels in pool.map(dataset.__getitem__, steps):
                    count += len(labels)
            dataset.on_epoch_end()
        return count

    steps = range(len(dataset)) if not is_tf else None

    # Warm-up: trace the tf.data functions, fill the prefetch buffers.
    for i, _ in enumerate(dataset):
        if i + 1 >= FLAGS.warmup_batches:
            break
    if not is_tf:
        dataset.on_epoch_end()
    start = time.perf_counter()
    count = sum(epoch() for _ in range(FLAGS.epochs))
    return count, time.perf_counter() - start


def main(argv):
    del argv
    root = FLAGS.data_dir or shared_data_dir()
    for name in FLAGS.datasets:
        x, y, decode_s = _load(name, os.path.join(root, name))
        mean, std = pipeline.channel_mean_std(x)
        flip_when_augmenting = name != "gtsrb"
        label = name if name == "gtsrb" else "cifar10 (JPEG copy)"
        for path, threads in (
            ("tensorflow", "all"),
            ("tensorflow", 1),
            ("numpy", 1),
            ("numpy", os.cpu_count()),
        ):
            for augment in (False, True):
                dataset = keras_dib.datasets.make_pipeline(
                    x,
                    y,
                    batch_size=FLAGS.batch_size,
                    augment=augment,
                    flip=augment and flip_when_augmenting,
                    mean=mean,
                    std=std,
                    backend=path,
                )
                if path == "tensorflow" and threads == 1:
                    dataset = _one_thread(dataset)
                count, seconds = _time_pipeline(
                    dataset, path == "tensorflow", threads
                )
                _report(
                    {
                        "dataset": label,
                        "pipeline": "tf.data"
                        if path == "tensorflow"
                        else "keras.utils.PyDataset (NumPy)",
                        "threads": threads,
                        "batch_size": FLAGS.batch_size,
                        "augment": augment,
                        "flip": augment and flip_when_augmenting,
                        "normalization": "standardize",
                        "num_images": count,
                        "seconds": round(seconds, 3),
                        "images_per_s": round(count / seconds),
                        "decode_s": round(decode_s, 3),
                    }
                )
        del x, y


if __name__ == "__main__":
    app.run(main)

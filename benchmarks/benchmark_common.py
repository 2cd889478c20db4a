"""Helpers shared by `benchmarks/memory.py` and `benchmarks/speed.py`.

Both benchmarks train the same network (VGG-11 with batch normalization,
one greedy block per convolution, the recipe of `benchmarks/accuracy.py`)
on fixed-size batches of real GTSRB images (or synthetic ones), one block
stage at a time, against end-to-end training. This module holds what they
share: the data, the model, the per-stage `fit` call, the process memory
readings and the JSON record.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import keras_dib  # noqa: E402
from keras_dib import recipes  # noqa: E402
from keras_dib.testing.test_case import shared_data_dir  # noqa: E402

NUM_CLASSES = 43


def default_data_dir(dataset):
    """The development copy of a data set (`shared/data/<dataset>`), or None.

    None lets the library resolve it (`$KERAS_DIB_DATA/<dataset>`, else the
    Keras cache, downloading if needed).
    """
    root = shared_data_dir()
    path = os.path.join(root, dataset) if root else None
    return path if path and os.path.isdir(path) else None


END_TO_END = "end_to_end"
# Every block at once, each on its own objective (`schedule="simultaneous"`).
SIMULTANEOUS = "simultaneous"
THREAD_ENV = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
)


# === Data ===


def load_images(data, num_images, data_dir=None, seed=0):
    """`num_images` standardised 32x32 images and labels.

    Args:
        data: `"gtsrb"` (real GTSRB training images, a seeded random subset
            read with `keras_dib.datasets.load_gtsrb`) or `"synthetic"`
            (standard normal pixels, uniform labels).
        num_images: number of images.
        data_dir: GTSRB folder. Default: `../shared/data/gtsrb`.
        seed: seed of the subset (or of the synthetic draws).

    Returns:
        `(x, y, description)`: float32 `(num_images, 32, 32, 3)` images
        standardised per channel, int32 labels, and a description of the
        data for the JSON record.
    """
    rng = np.random.default_rng(seed)
    if data == "synthetic":
        x = rng.standard_normal((num_images, 32, 32, 3), dtype="float32")
        y = rng.integers(0, NUM_CLASSES, num_images).astype("int32")
        return x, y, "synthetic (standard normal pixels, 43 classes)"
    data_dir = data_dir or default_data_dir("gtsrb")
    (x_train, y_train, _), _ = keras_dib.datasets.load_gtsrb(data_dir)
    if num_images > len(y_train):
        raise ValueError(
            f"`num_images` should be at most {len(y_train)} (the GTSRB "
            f"training set). Received: num_images={num_images}"
        )
    chosen = rng.choice(len(y_train), num_images, replace=False)
    x = x_train[chosen].astype("float32")
    mean = x.reshape(-1, 3).mean(0)
    std = x.reshape(-1, 3).std(0)
    x = ((x - mean) / std).astype("float32")
    description = f"GTSRB 32x32, {num_images} training images (random subset)"
    return x, y_train[chosen].astype("int32"), description


# === Model ===


def objective(name):
    """The compiled local objective: `"dib_1.01"`, `"dib_2"` or `"ce"`."""
    if name == "ce":
        return keras_dib.losses.LocalObjective()
    if not name.startswith("dib_"):
        raise ValueError(
            "An objective should be 'ce' or 'dib_<alpha>'. "
            f"Received: objective={name!r}"
        )
    return keras_dib.losses.DIB(alpha=float(name[4:]), beta=0.01)


def build_model(
    width,
    loss,
    depth=11,
    granularity="layer",
    seed=0,
    architecture="vgg",
    **builder_kwargs,
):
    """VGG-BN or ResNet as a compiled `GreedyLayerwiseModel` (SGD 0.9).

    `builder_kwargs` go to the builder (`head_downsample_size`, ...). The
    heads default to those of the recorded results (one 32-filter
    convolution, no downsampling), not to the builder's current defaults.
    """
    builder_kwargs.setdefault("head_conv_filters", 32)
    builder_kwargs.setdefault("head_downsample_size", None)
    keras.utils.set_random_seed(seed)
    model = recipes.build_model(
        NUM_CLASSES,
        depth=depth,
        width=width,
        granularity=granularity,
        architecture=architecture,
        head_grid_size=4,
        **builder_kwargs,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=loss,
        metrics=["accuracy"],
    )
    return model


def model_description(
    model, width, depth=11, granularity="layer", architecture="vgg"
):
    return recipes.model_name(
        architecture, depth, width, model.num_blocks, granularity
    )


def fit_stage(
    model,
    stage,
    x,
    y,
    batch_size,
    epochs,
    steps,
    callbacks=(),
    cache_prefix=False,
):
    """Trains one stage: block `stage` greedily, `END_TO_END` or
    `SIMULTANEOUS`.

    A greedy block is trained with `epochs=[0, ..., epochs, ..., 0]` (the
    other blocks are skipped), so its step is the real greedy one: the
    frozen blocks before it in inference mode under `stop_gradient` (or,
    with `cache_prefix=True`, their output computed once before the
    stage), the block and its auxiliary head trained on the compiled
    objective.
    """
    extra = {}
    schedule = stage_schedule(stage)
    if schedule != "sequential":
        stage_epochs = epochs
    else:
        stage_epochs = [0] * model.num_blocks
        stage_epochs[stage] = epochs
        if cache_prefix:
            extra["cache_prefix"] = True
    return model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=stage_epochs,
        steps_per_epoch=steps,
        schedule=schedule,
        shuffle=False,
        callbacks=list(callbacks),
        verbose=0,
        **extra,
    )


def parse_stages(blocks, num_blocks):
    """0-based block indices from `--blocks` (1-based; empty: all)."""
    if not blocks:
        return list(range(num_blocks))
    stages = [int(b) - 1 for b in blocks]
    for block, stage in zip(blocks, stages):
        if not 0 <= stage < num_blocks:
            raise ValueError(
                f"`--blocks` should be in 1..{num_blocks}. Received: {block}"
            )
    return stages


def stage_schedule(stage):
    """The `fit` schedule of a stage: a block index trains sequentially."""
    if stage in (END_TO_END, SIMULTANEOUS):
        return stage
    return "sequential"


def stage_label(stage):
    if stage_schedule(stage) != "sequential":
        return stage
    return f"block_{stage + 1}"


# === Process memory (Linux /proc) ===


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def resident_bytes():
    """Current resident set size (VmRSS), bytes."""
    kib = _status_kib("VmRSS")
    return None if kib is None else 1024 * kib


def peak_resident_bytes():
    """Peak resident set size since the last reset (VmHWM), bytes."""
    kib = _status_kib("VmHWM")
    return None if kib is None else 1024 * kib


def reset_peak_resident():
    """Resets VmHWM to the current RSS (`clear_refs` 5); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# === Records ===


def versions():
    result = {"keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    try:
        module = __import__(backend)
        result[backend] = module.__version__
    except ImportError:
        pass
    result["keras_dib"] = keras_dib.__version__
    result["python"] = platform.python_version()
    return result


def base_record(benchmark, setting):
    """Fields every JSON line starts with."""
    return {
        "benchmark": benchmark,
        "setting": setting,
        "device": recipes.device_description(),
        "backend": keras.backend.backend(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        # Threading settings (None: unset). OPENBLAS_NUM_THREADS matters on
        # JAX's CPU backend: its eigendecomposition (ops.eigh, the DIB's
        # alpha != 2..4) calls the LAPACK of SciPy's bundled OpenBLAS.
        "environment": {name: os.environ.get(name) for name in THREAD_ENV},
    }


def write_record(record, path):
    """Prints `record` as one JSON line and appends it to `path`."""
    record = {
        **record,
        "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    line = json.dumps(record)
    print(line, flush=True)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")
    return record

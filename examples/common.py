"""Shared flags and training logic of the image-classification examples.

`examples/gtsrb.py`, `examples/cifar10.py` and `examples/cifar100.py` are
thin wrappers around `main` below; `benchmarks/accuracy.py` reuses the data,
model and training helpers, so that the examples and the benchmark train
exactly the same way.

The recipe: VGG-11 with batch normalization,
inputs standardised per channel, SGD with momentum 0.9 and weight decay
5e-4, and a cosine learning-rate decay that restarts for every block of a
greedy run (the model rebuilds its optimizer from the compile config at the
start of each block, so a schedule whose `decay_steps` covers one block
decays to zero once per block).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# TensorFlow (imported by the data pipelines) prints its start-up (oneDNN,
# CUDA probes) through a native logger that ignores TF_CPP_MIN_LOG_LEVEL
# before it is initialised, then probes CUDA ("failed call to cuInit", an
# ERROR line) on CPU-only machines. Unless the user chose a level, a run
# stays quiet: native logs below FATAL are off and that import's native
# stderr is discarded (Python errors still propagate as exceptions).
_QUIET_TENSORFLOW = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if _QUIET_TENSORFLOW:
    _saved_stderr = os.dup(2)
    _devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(_devnull, 2)
    try:
        import tensorflow  # noqa: E402, F401
    finally:
        os.dup2(_saved_stderr, 2)
        os.close(_saved_stderr)
        os.close(_devnull)

import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

import keras_dib  # noqa: E402
from keras_dib import datasets  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `simultaneous_dib`: every block at once on its own DIB objective, the
# gradient stopped between blocks (`fit(schedule="simultaneous")`); its
# budget is `--epochs`, like end to end, since every step trains all blocks.
MODES = ("greedy_dib", "greedy_ce", "end_to_end", "simultaneous_dib")
GREEDY_MODES = ("greedy_dib", "greedy_ce")
ARCHITECTURES = ("vgg", "resnet")
# The last block's head: the network's own classifier (global pooling +
# Dense), or one built like the auxiliary heads (an ablation of greedy
# training's last-block drop).
FINAL_HEADS = ("classifier", "auxiliary")
# The local objective of the `*_dib` modes (`--objective`).
OBJECTIVES = (
    "dib",
    "relevance_dib",
    "information_bottleneck",
    "similarity",
)
# Depth of each architecture when `--depth` is not given.
DEFAULT_DEPTHS = {"vgg": 11, "resnet": 18}

# Display names, number of classes and whether a horizontal flip is a valid
# augmentation (not for traffic signs: a mirrored "turn left" is "turn
# right").
DATASETS = {
    "gtsrb": {"title": "GTSRB 32x32", "num_classes": 43, "flip": False},
    "cifar10": {
        "title": "CIFAR-10 (JPEG copy)",
        "num_classes": 10,
        "flip": True,
    },
    "cifar100": {"title": "CIFAR-100", "num_classes": 100, "flip": True},
}

# The `--quick` smoke-run settings.
QUICK = {
    "width": 8,
    "granularity": "stage",
    "train_size": 2000,
    "test_size": 1000,
    # One epoch per block barely moves the batch-norm statistics (5% test
    # accuracy measured on CPU, JAX); three gave 8% in 20 s of training.
    "epochs_per_block": 3,
    "epochs": 5,
    "batch_size": 128,
}

# Below this many training images the default batch size drops from 128 to
# 32, so that every greedy block still gets a few hundred optimizer steps
# (GTSRB, 4,000 images, 2 epochs a block: batch 128 gave 59% validation
# accuracy, batch 32 84%, against 87% end to end).
SMALL_TRAINING_SET = 10_000


def define_flags(dataset):
    """Defines the command-line flags shared by the examples."""
    flags.DEFINE_string(
        "data_dir",
        None,
        "Folder of the data set's archives (default: $KERAS_DIB_DATA/"
        f"{dataset} when that variable is set, else the Keras cache, "
        "downloading if needed).",
    )
    flags.DEFINE_enum(
        "architecture",
        "vgg",
        list(ARCHITECTURES),
        "VGG with batch normalization or CIFAR-style ResNet.",
    )
    flags.DEFINE_integer(
        "depth",
        None,
        "VGG: 11 (default), 13, 16 or 19; ResNet: 18 (default) or 34.",
    )
    flags.DEFINE_integer(
        "width",
        16,
        "Channels of the first layer (16: a CPU-sized network; 64: the "
        "standard one).",
    )
    flags.DEFINE_enum(
        "granularity",
        "layer",
        ["layer", "stage"],
        "One greedy block per convolution (VGG) or residual block (ResNet), "
        "or one per stage.",
    )
    flags.DEFINE_integer(
        "head_grid_size", 4, "Grid side of the auxiliary heads' pooling."
    )
    flags.DEFINE_string(
        "head_conv_filters",
        "32",
        "Auxiliary heads' 3x3 convolutions (each + batch norm + ReLU) "
        "before the pooling: filters of one ('32'), of several ('32,32'), "
        "'auglocal' (thinned copies of the following blocks) or '0' (none). "
        "The examples default to '32', the fastest on a CPU; build_vgg's "
        "default, chosen on a validation split, is 'auglocal'.",
    )
    flags.DEFINE_integer(
        "head_hidden_units",
        0,
        "Units of a hidden Dense layer in each auxiliary head (0: none).",
    )
    flags.DEFINE_integer(
        "head_downsample_size",
        8,
        "Auxiliary heads average-pool feature maps larger than about this "
        "side down to it before their convolutions (0: none). 8, as in "
        "build_vgg, makes block 1's head 4 times cheaper. With "
        "--pool_in_next_block: the memory-balanced split.",
    )
    flags.DEFINE_bool(
        "pool_in_next_block",
        False,
        "VGG: each stage's max pooling starts the next block instead of "
        "ending the stage's last one (the memory-balanced split, with "
        "--head_downsample_size 8: every block <= 50% of end to end's step "
        "memory).",
    )
    flags.DEFINE_enum(
        "final_head",
        "classifier",
        list(FINAL_HEADS),
        "The last block's head: the network's classifier (global pooling + "
        "Dense) or a head built like the auxiliary ones (also the "
        "classifier at inference).",
    )
    flags.DEFINE_bool(
        "cache_prefix",
        None,
        "Greedy modes: compute the frozen blocks' output once per block "
        "instead of once per epoch (`fit(cache_prefix=True)`). Default: on "
        "for the greedy modes without augmentation, off otherwise.",
    )
    flags.DEFINE_integer(
        "validation_size",
        0,
        "Hold out about this many training images (drawn with the seed; "
        "whole tracks for GTSRB) as a validation set for model selection "
        "(0: none).",
    )
    flags.DEFINE_string(
        "select_depth",
        None,
        "Greedy modes, with --validation_size: keep the network truncated "
        "at the block whose head scores best on this validation metric "
        "(`fit(select_depth=...)`, e.g. val_accuracy).",
    )
    flags.DEFINE_integer("epochs_per_block", 2, "Epochs per greedy block.")
    flags.DEFINE_integer("epochs", 30, "Epochs of end-to-end training.")
    flags.DEFINE_integer(
        "batch_size",
        None,
        "Training batch size. Default: 128, or 32 below "
        f"{SMALL_TRAINING_SET:,} training images (each greedy block needs a "
        "few hundred optimizer steps).",
    )
    flags.DEFINE_float("alpha", 1.01, "Order of the Renyi entropy (DIB).")
    flags.DEFINE_float("beta", 0.01, "Weight of the DIB compression term.")
    flags.DEFINE_enum(
        "objective",
        "dib",
        list(OBJECTIVES),
        "Local objective of the *_dib modes: DIB (CE + beta I(X;T)), "
        "relevance_dib (CE + beta I(X;T) - gamma I(T;Y)), "
        "information_bottleneck (-gamma I(T;Y) + beta I(X;T), no CE into "
        "the block) or similarity (PredSim, beta weights the similarity "
        "term).",
    )
    flags.DEFINE_float(
        "gamma",
        None,
        "Weight of the relevance term I(T;Y) (default: the objective's).",
    )
    flags.DEFINE_enum(
        "compression",
        "input",
        ["input", "block_input", "entropy"],
        "Compression target of the DIB term.",
    )
    flags.DEFINE_enum("mode", "greedy_dib", list(MODES), "Training mode.")
    flags.DEFINE_bool(
        "augment", False, "Pad-4 random crops (and flips for CIFAR)."
    )
    flags.DEFINE_float("learning_rate", 0.05, "Peak SGD learning rate.")
    flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "Optimizer.")
    flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay.")
    flags.DEFINE_integer(
        "train_size", 0, "Training images used (0: all of them)."
    )
    flags.DEFINE_integer("test_size", 0, "Test images used (0: all of them).")
    flags.DEFINE_string(
        "output_dir", None, f"Output folder. Default: runs/{dataset}."
    )
    flags.DEFINE_bool(
        "quick",
        False,
        "Smoke run: width 8, one block per stage, 2000 training and 1000 "
        "test images, 3 epochs per block (5 end to end); flags given "
        "explicitly take precedence. It checks that everything runs, in "
        "about a minute on 2 CPU cores; expect low accuracy (GTSRB: about "
        "28% test accuracy with JAX), not a result.",
    )
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity (0, 1 or 2).")


# === Data ===


def _subset(x, y, size, seed):
    """A random subset of `size` samples (all of them if `size` is 0)."""
    if not size or size >= len(x):
        return x, y
    index = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
    return x[index], y[index]


def _validation_split(x, y, groups, size, seed):
    """Splits about `size` samples off `(x, y)`, whole groups at a time.

    `groups` (GTSRB's track ids: the ~30 frames of one physical sign) keeps
    near-duplicate frames on one side of the split, so the validation
    accuracy is not inflated by frames of training tracks. Groups are drawn
    in a random order (`seed`) until at least `size` samples are held out.

    Returns:
        `((x_train, y_train), (x_validation, y_validation))`.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        held_out = rng.permutation(len(x))[:size]
    else:
        names, counts = np.unique(groups, return_counts=True)
        order = rng.permutation(len(names))
        taken = np.searchsorted(np.cumsum(counts[order]), size) + 1
        held_out = np.flatnonzero(np.isin(groups, names[order[:taken]]))
    mask = np.zeros(len(x), bool)
    mask[held_out] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def load_arrays(
    dataset, data_dir, train_size=0, test_size=0, seed=0, validation_size=0
):
    """Loads a data set as uint8 arrays, optionally subsampled.

    With `validation_size`, about that many training images (whole GTSRB
    tracks) are held out first, then `train_size` images are drawn from the
    rest.

    Returns:
        `(x_train, y_train), (x_test, y_test)`, plus `(x_val, y_val)` (None
        without `validation_size`) as a third element.
    """
    groups = None
    if dataset == "gtsrb":
        (x_train, y_train, groups), test = datasets.load_gtsrb(data_dir)
    elif dataset == "cifar10":
        (x_train, y_train), test = datasets.load_cifar10(data_dir)
    elif dataset == "cifar100":
        (x_train, y_train), test = datasets.load_cifar100(data_dir)
    else:
        raise ValueError(
            f"`dataset` should be one of {sorted(DATASETS)}. "
            f"Received: dataset={dataset!r}"
        )
    validation = None
    if validation_size:
        (x_train, y_train), validation = _validation_split(
            x_train, y_train, groups, validation_size, seed + 2
        )
    train = _subset(x_train, y_train, train_size, seed)
    test = _subset(test[0], test[1], test_size, seed + 1)
    return train, test, validation


def channel_statistics(images):
    """Per-channel `(mean, std)` of uint8 images, on the 0-255 scale."""
    pixels = images.reshape(-1, images.shape[-1]).astype("float64")
    return pixels.mean(axis=0), pixels.std(axis=0)


def make_pipelines(
    dataset,
    train,
    test,
    batch_size,
    augment,
    seed,
    validation=None,
    standardize=True,
):
    """Training and test pipelines, standardised with training statistics.

    With `standardize=False` the pipelines give raw 0-255 float32 images,
    for a model that normalises its inputs itself (`input_normalization`).

    Returns:
        `(train_pipeline, test_pipeline, steps_per_epoch)`, plus the
        validation pipeline (None without `validation`) as a fourth element.
    """
    x_train, y_train = train
    mean, std = channel_statistics(x_train) if standardize else (None, None)
    train_pipeline = datasets.make_pipeline(
        x_train,
        y_train,
        batch_size=batch_size,
        training=True,
        augment=augment,
        flip=augment and DATASETS[dataset]["flip"],
        seed=seed,
        mean=mean,
        std=std,
    )
    train_pipeline = _static_batch_size(train_pipeline, batch_size)

    def evaluation_pipeline(arrays):
        return datasets.make_pipeline(
            arrays[0],
            arrays[1],
            batch_size=batch_size,
            training=False,
            mean=mean,
            std=std,
        )

    test_pipeline = evaluation_pipeline(test)
    validation_pipeline = validation and evaluation_pipeline(validation)
    # The training pipeline drops the last partial batch.
    steps = len(x_train) // batch_size
    return train_pipeline, test_pipeline, steps, validation_pipeline


def _static_batch_size(pipeline, batch_size):
    """Gives a `tf.data` training pipeline a static batch dimension.

    The training batches all have `batch_size` samples (the last partial
    batch is dropped) but the `tf.data` pipeline declares the batch axis as
    `None`; on the TensorFlow backend the traced train step then sees a
    dynamic batch size, which the "knn" kernel width of the DIB term does
    not accept. The only TensorFlow-specific code of the examples, imported
    lazily, and only for a `tf.data` pipeline.
    """
    if not hasattr(pipeline, "element_spec"):
        return pipeline
    import tensorflow as tf

    def ensure(x, y):
        x = tf.ensure_shape(x, [batch_size] + list(x.shape[1:]))
        return x, tf.ensure_shape(y, [batch_size])

    return pipeline.map(ensure).prefetch(tf.data.AUTOTUNE)


# === Model ===


def parse_conv_filters(value):
    """`--head_conv_filters` as `build_vgg`'s `head_conv_filters`."""
    if value in (None, "", "0", 0):
        return None
    if isinstance(value, int) or value == "auglocal":
        return value
    filters = [int(part) for part in str(value).split(",")]
    return filters[0] if len(filters) == 1 else filters


def make_objective(mode, objective="dib", alpha=1.01, beta=0.01, gamma=None):
    """The compiled loss of a training mode."""
    if mode not in ("greedy_dib", "simultaneous_dib"):
        # Cross-entropy only: the greedy baseline, and the end-to-end loss.
        return keras_dib.LocalObjective()
    extra = {} if gamma is None else {"gamma": gamma}
    if objective == "dib":
        return keras_dib.DIB(alpha=alpha, beta=beta, compression="input")
    if objective == "relevance_dib":
        return keras_dib.losses.RelevanceDIB(alpha=alpha, beta=beta, **extra)
    if objective == "information_bottleneck":
        return keras_dib.losses.InformationBottleneck(
            alpha=alpha, beta=beta, **extra
        )
    if objective == "similarity":
        return keras_dib.losses.SimilarityMatching(beta=beta)
    raise ValueError(
        f"`objective` should be one of {OBJECTIVES}. Received: "
        f"objective={objective!r}"
    )


def build_model(
    num_classes,
    depth=11,
    width=64,
    granularity="layer",
    architecture="vgg",
    final_head="classifier",
    **kw,
):
    """A VGG-BN or a CIFAR-style ResNet, as a `GreedyLayerwiseModel`.

    `granularity="layer"` is the finest cut of each architecture: one block
    per convolution of a VGG, one per residual block of a ResNet.
    `final_head="auxiliary"` replaces the network's classifier (global
    pooling + Dense, through which greedy training trains the last block)
    by a head configured like the auxiliary heads (`head_*`); it is then
    also the network's classifier at inference. Other keyword arguments go
    to `keras_dib.build_vgg` / `keras_dib.build_resnet`.
    """
    if architecture == "resnet":
        builder = keras_dib.build_resnet
    elif architecture == "vgg":
        builder = keras_dib.build_vgg
    else:
        raise ValueError(
            f"`architecture` should be one of {ARCHITECTURES}. Received: "
            f"architecture={architecture!r}"
        )
    return builder(
        depth,
        num_classes=num_classes,
        width=width,
        granularity=granularity,
        final_head=final_head,
        **kw,
    )


def split_options(settings):
    """The builder's memory-balanced split options set in `settings`.

    `head_downsample_size` (0: none, absent: the builder's default) and,
    for a VGG, `pool_in_next_block`.
    """
    options = {}
    if "head_downsample_size" in settings:
        # Passed even when 0: the builder's default may downsample.
        options["head_downsample_size"] = (
            settings["head_downsample_size"] or None
        )
    if settings.get("pool_in_next_block"):
        if settings["architecture"] != "vgg":
            raise ValueError(
                "`pool_in_next_block` is a VGG option. Received: "
                f"architecture={settings['architecture']!r}"
            )
        options["pool_in_next_block"] = True
    return options


def model_family(architecture, depth):
    """ "VGG-11-BN", "ResNet-18", ...: how the reports name a network."""
    if architecture == "vgg":
        return f"VGG-{depth}-BN"
    return f"ResNet-{depth}"


def model_name(architecture, depth, width, num_blocks, granularity):
    """The model's description in the reports."""
    if architecture == "resnet" and granularity == "layer":
        granularity = "block"
    return (
        f"{model_family(architecture, depth)} width {width} ({num_blocks} "
        f"blocks, granularity {granularity})"
    )


def compile_model(
    model,
    mode,
    steps_per_stage,
    learning_rate=0.05,
    optimizer="sgd",
    weight_decay=5e-4,
    alpha=1.01,
    beta=0.01,
    compression="input",
    objective="dib",
    gamma=None,
):
    """Compiles `model` for one training mode.

    `steps_per_stage` is the number of steps of one greedy block (or of the
    whole end-to-end run): the cosine decay reaches 0 after that many steps
    and restarts with each block's fresh optimizer.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, steps_per_stage)
    )
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate=schedule, momentum=0.9, weight_decay=weight_decay
        )
    else:
        opt = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=weight_decay
        )
    if objective == "dib" and mode in ("greedy_dib", "simultaneous_dib"):
        loss = keras_dib.DIB(alpha=alpha, beta=beta, compression=compression)
    else:
        loss = make_objective(mode, objective, alpha, beta, gamma)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    return model


class TrainingClock(keras.callbacks.Callback):
    """Seconds of training at the end of every epoch, evaluation excluded.

    Counts from its creation (so a greedy block's prefix-cache pass counts
    as training) and leaves out the time spent in `on_test_begin` ..
    `on_test_end`, i.e. the per-epoch evaluation of `validation_data`.
    With `fit`'s per-epoch validation accuracies this gives the wall time
    to a given accuracy.
    """

    def __init__(self):
        super().__init__()
        self.start = time.perf_counter()
        self.evaluation_seconds = 0.0
        self.epoch_seconds = []
        self._test_start = None

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._test_start is not None:
            self.evaluation_seconds += time.perf_counter() - self._test_start
            self._test_start = None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(
            time.perf_counter() - self.start - self.evaluation_seconds
        )


def train(
    model,
    train_pipeline,
    mode,
    epochs_per_block,
    epochs,
    verbose=1,
    cache_prefix=False,
    validation_pipeline=None,
    callbacks=(),
    select_depth=None,
):
    """Fits `model` greedily, simultaneously or end to end.

    The greedy modes train `epochs_per_block` epochs per block; end to end
    and simultaneous training run `epochs` epochs of the whole network.

    `cache_prefix` (greedy modes only) computes the frozen blocks' output
    once per block; `validation_pipeline` is evaluated after every epoch
    (through the auxiliary head of the block being trained);
    `select_depth` (greedy modes) is `fit`'s.

    Returns:
        `(history, wall_time_seconds)`.
    """
    start = time.perf_counter()
    kwargs = {"callbacks": list(callbacks)}
    if validation_pipeline is not None:
        kwargs["validation_data"] = validation_pipeline
    if mode not in GREEDY_MODES:
        history = model.fit(
            train_pipeline,
            epochs=epochs,
            schedule="end_to_end" if mode == "end_to_end" else "simultaneous",
            verbose=verbose,
            **kwargs,
        )
    else:
        history = model.fit(
            train_pipeline,
            epochs=epochs_per_block,
            verbose=verbose,
            cache_prefix=cache_prefix,
            select_depth=select_depth,
            **kwargs,
        )
    return history, time.perf_counter() - start


def _output_shapes(layer, shape):
    """Output shapes of every leaf layer of `layer` run on `shape`."""
    children = getattr(layer, "layers", None) or getattr(
        layer, "head_layers", None
    )
    if not children:
        return [layer.compute_output_shape(shape)]
    shapes = []
    for child in children:
        shapes += _output_shapes(child, shape)
        shape = shapes[-1]
    return shapes


def activation_memory(model, batch_size):
    """Estimated activation bytes one training step keeps for backprop.

    The float32 outputs of every layer on the gradient path, from the
    layers' output shapes: the whole network for end to end; for greedy
    block `l`, its input (the frozen prefix's output, kept but not
    differentiated), its own layers and its head's. An estimate for
    blocks made of standard layers (VGG); `benchmarks/memory.py` measures
    the compiled step.

    Returns:
        `(end_to_end_bytes, [bytes of each greedy block])`.
    """

    def size(shapes):
        return sum(int(np.prod(s[1:])) for s in shapes) * batch_size * 4

    shape = (batch_size,) + tuple(model.get_config()["input_shape"])
    end_to_end, blocks = 0, []
    for block, head in zip(model.blocks, model.training_heads):
        outputs = _output_shapes(block, shape)
        head_outputs = _output_shapes(head, outputs[-1])
        blocks.append(size([shape] + outputs + head_outputs))
        end_to_end += size(outputs)
        shape = outputs[-1]
    end_to_end += size(_output_shapes(model.head, shape))
    return end_to_end, blocks


def resolve_cache_prefix(settings):
    """`settings["cache_prefix"]`, None meaning: greedy, no augmentation."""
    cache = settings.get("cache_prefix")
    if cache is None:
        cache = settings["mode"] in GREEDY_MODES and not settings["augment"]
    return bool(cache)


def block_history(history):
    """Per-block lists of the history's metrics (one dict per block)."""
    blocks = getattr(history, "block_histories", None) or [history.history]
    return [
        {key: [float(v) for v in values] for key, values in block.items()}
        for block in blocks
    ]


def device_description():
    """ "CPU (N cores)" or the accelerator's name, for the reports."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", gpus[0].name)
    return f"CPU ({len(os.sched_getaffinity(0))} cores)"


def default_batch_size(train_images):
    """128, or 32 for a training set below `SMALL_TRAINING_SET` images."""
    return 32 if train_images < SMALL_TRAINING_SET else 128


def check_settings(settings):
    """Raises a clear ValueError for settings that cannot train."""
    for name in ("epochs_per_block", "epochs", "batch_size", "width"):
        value = settings[name]
        if value is None and name == "batch_size":
            continue
        if value < 1:
            raise ValueError(
                f"`--{name}` should be a positive integer. Received: "
                f"--{name}={value}"
            )
    for name in ("train_size", "test_size", "validation_size"):
        if settings.get(name, 0) < 0:
            raise ValueError(
                f"`--{name}` should be >= 0 (0: all). Received: "
                f"--{name}={settings[name]}"
            )
    if settings.get("select_depth") and not settings.get("validation_size"):
        raise ValueError(
            "`--select_depth` chooses on a validation split: give "
            "`--validation_size` too. Received: "
            f"--select_depth={settings['select_depth']} without it."
        )


def settings_from_flags(flag_values):
    """The run settings as a dict, with `--quick` applied."""
    names = [
        "data_dir",
        "architecture",
        "depth",
        "width",
        "granularity",
        "head_grid_size",
        "head_conv_filters",
        "head_hidden_units",
        "head_downsample_size",
        "pool_in_next_block",
        "final_head",
        "cache_prefix",
        "validation_size",
        "select_depth",
        "epochs_per_block",
        "epochs",
        "batch_size",
        "alpha",
        "beta",
        "compression",
        "objective",
        "gamma",
        "mode",
        "augment",
        "learning_rate",
        "optimizer",
        "weight_decay",
        "train_size",
        "test_size",
        "seed",
    ]
    settings = {name: flag_values[name].value for name in names}
    if flag_values.quick:
        # `--quick` sets what was not given explicitly on the command line.
        settings.update(
            {k: v for k, v in QUICK.items() if not flag_values[k].present}
        )
    settings["quick"] = flag_values.quick
    check_settings(settings)
    return settings


def run(dataset, settings, output_dir=None, verbose=1, monitor_test=False):
    """Trains, evaluates and (optionally) saves one model.

    Args:
        dataset: "gtsrb", "cifar10" or "cifar100".
        settings: dict of the flags of `define_flags` (see
            `settings_from_flags`).
        output_dir: folder for `<dataset>_<backend>_<mode>.keras` and
            `<dataset>_<backend>_<mode>.json`; None saves nothing.
        verbose: Keras verbosity.
        monitor_test: without a validation split, evaluate the test set
            after every epoch (through the head of the block being
            trained; for reporting accuracy against training time, never
            for choosing anything). The accuracies are the history's
            `val_accuracy`; `summary["epoch_seconds"]` gives the training
            seconds (evaluations excluded) at the end of each epoch.

    Returns:
        `(model, summary, test_pipeline, validation_pipeline)`: the trained
        model, a JSON-able dict of the results, the test pipeline and the
        validation pipeline (None without `validation_size`).
    """
    s = dict(settings)
    s["cache_prefix"] = resolve_cache_prefix(s)
    s.setdefault("architecture", "vgg")
    if s.get("depth") is None:
        s["depth"] = DEFAULT_DEPTHS[s["architecture"]]
    if s["cache_prefix"] and s["mode"] not in GREEDY_MODES:
        raise ValueError(
            f"`cache_prefix` is for the greedy modes {GREEDY_MODES} only "
            f"(earlier blocks are not frozen otherwise). Received: "
            f"mode={s['mode']!r}"
        )
    if s["cache_prefix"] and s["augment"]:
        raise ValueError(
            "`cache_prefix` would freeze one draw of the augmentation; "
            "turn it off with `augment`."
        )
    keras.utils.set_random_seed(s["seed"])
    train_arrays, test_arrays, validation_arrays = load_arrays(
        dataset,
        s["data_dir"],
        s["train_size"],
        s["test_size"],
        s["seed"],
        validation_size=s.get("validation_size", 0),
    )
    if s.get("batch_size") is None:
        s["batch_size"] = default_batch_size(len(train_arrays[0]))
    # The model normalises its raw 0-255 inputs itself (a Normalization
    # layer with the training set's statistics), so its .keras file and
    # its SavedModel take raw images.
    train_pipeline, test_pipeline, steps, validation_pipeline = make_pipelines(
        dataset,
        train_arrays,
        test_arrays,
        s["batch_size"],
        s["augment"],
        s["seed"],
        validation=validation_arrays,
        standardize=False,
    )
    model = build_model(
        DATASETS[dataset]["num_classes"],
        depth=s["depth"],
        width=s["width"],
        granularity=s["granularity"],
        architecture=s["architecture"],
        final_head=s.get("final_head", "classifier"),
        head_grid_size=s["head_grid_size"],
        head_conv_filters=parse_conv_filters(s.get("head_conv_filters")),
        head_hidden_units=s.get("head_hidden_units") or None,
        input_normalization=channel_statistics(train_arrays[0]),
        **split_options(s),
    )
    stage_epochs = (
        s["epochs_per_block"] if s["mode"] in GREEDY_MODES else s["epochs"]
    )
    compile_model(
        model,
        s["mode"],
        steps * stage_epochs,
        learning_rate=s["learning_rate"],
        optimizer=s["optimizer"],
        weight_decay=s["weight_decay"],
        alpha=s["alpha"],
        beta=s["beta"],
        compression=s["compression"],
        objective=s.get("objective", "dib"),
        gamma=s.get("gamma"),
    )
    clock = TrainingClock()
    monitored = validation_pipeline
    if monitored is None and monitor_test:
        monitored = test_pipeline
    history, wall_time = train(
        model,
        train_pipeline,
        s["mode"],
        s["epochs_per_block"],
        s["epochs"],
        verbose=verbose,
        cache_prefix=s["cache_prefix"],
        validation_pipeline=monitored,
        callbacks=[clock],
        select_depth=s.get("select_depth")
        if s["mode"] in GREEDY_MODES
        else None,
    )
    # Per-epoch evaluations are not training time.
    wall_time -= clock.evaluation_seconds
    results = model.evaluate(test_pipeline, verbose=0, return_dict=True)
    validation_accuracy = None
    if validation_pipeline is not None:
        validation_accuracy = float(
            model.evaluate(validation_pipeline, verbose=0, return_dict=True)[
                "accuracy"
            ]
        )
    total_epochs = len(history.history.get("loss", []))
    summary = {
        "dataset": DATASETS[dataset]["title"],
        "mode": s["mode"],
        "model": model_name(
            s["architecture"],
            s["depth"],
            s["width"],
            model.num_blocks,
            s["granularity"],
        ),
        "test_accuracy": float(results["accuracy"]),
        "test_loss": float(results["loss"]),
        "train_images": int(len(train_arrays[0])),
        "test_images": int(len(test_arrays[0])),
        "validation_accuracy": validation_accuracy,
        "validation_images": 0
        if validation_arrays is None
        else int(len(validation_arrays[0])),
        "wall_time_s": round(wall_time, 2),
        "evaluation_seconds": round(clock.evaluation_seconds, 2),
        "epoch_seconds": [round(t, 2) for t in clock.epoch_seconds],
        "monitored": "validation"
        if validation_pipeline is not None
        else ("test" if monitor_test else None),
        "images_per_s": round(
            total_epochs * steps * s["batch_size"] / wall_time, 1
        ),
        "block_history": block_history(history),
        "inference_blocks": model.inference_blocks,
        "settings": dict(s),
        "backend": keras.backend.backend(),
        "device": device_description(),
        "keras_version": keras.__version__,
        "keras_dib_version": keras_dib.__version__,
    }
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = output_name(dataset, s["mode"])
        model.save(os.path.join(output_dir, f"{name}.keras"))
        with open(os.path.join(output_dir, f"{name}.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return model, summary, test_pipeline, validation_pipeline


def _print_memory_estimate(dataset, settings):
    """Prints the activation memory of each greedy block vs end to end."""
    depth = settings["depth"] or DEFAULT_DEPTHS[settings["architecture"]]
    model = build_model(
        DATASETS[dataset]["num_classes"],
        depth=depth,
        width=settings["width"],
        granularity=settings["granularity"],
        architecture=settings["architecture"],
        final_head=settings["final_head"],
        head_conv_filters=parse_conv_filters(settings["head_conv_filters"]),
        input_shape=(32, 32, 3),
    )
    # The batch size the run will use (its default needs the training set's
    # size: a full set, unless --train_size says otherwise).
    batch_size = settings["batch_size"] or default_batch_size(
        settings["train_size"] or SMALL_TRAINING_SET
    )
    end_to_end, blocks = activation_memory(model, batch_size)
    ratios = ", ".join(f"{b / end_to_end:.0%}" for b in blocks)
    print(
        f"Activation memory per training step (estimate from layer "
        f"shapes, batch {batch_size}): end to end "
        f"{end_to_end / 2**20:.0f} MiB; greedy blocks 1-{len(blocks)}: "
        f"{ratios} of it (the largest, {max(blocks) / 2**20:.0f} MiB, "
        f"saves {1 - max(blocks) / end_to_end:.0%}).",
        flush=True,
    )


def output_name(dataset, mode):
    """`<dataset>_<backend>_<mode>`: runs on other backends keep theirs."""
    return f"{dataset}_{keras.backend.backend()}_{mode}"


def start(main_function):
    """`absl.app.run(main_function)`: `--help` exits 0 (absl: 1), quiet logs."""
    import sys

    from absl import app
    from absl import logging

    if any(arg in ("--help", "-h", "-?") for arg in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)

    def quiet_main(argv):
        # absl logs INFO by default (e.g. JAX's "Unable to initialize
        # backend 'tpu'"); keep WARNING unless --verbosity was given.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return main_function(argv)

    app.run(quiet_main)


def main(dataset, flag_values):
    """The body of every example script: train, evaluate, save, report."""
    settings = settings_from_flags(flag_values)
    output_dir = flag_values.output_dir or os.path.join("runs", dataset)
    if (
        flag_values.verbose
        and settings["mode"] in GREEDY_MODES
        and settings["architecture"] == "vgg"
    ):
        _print_memory_estimate(dataset, settings)
    _, summary, _, _ = run(
        dataset, settings, output_dir, verbose=flag_values.verbose
    )
    print(
        f"{summary['dataset']}, {summary['mode']}: test accuracy "
        f"{summary['test_accuracy']:.2%} after {summary['wall_time_s']:.0f} s "
        f"of training on {summary['device']} ({summary['backend']}). "
        f"Saved to {output_dir}/{output_name(dataset, summary['mode'])}"
        ".{keras,json}."
    )
    return summary

"""The training recipe behind the examples and the benchmarks' results.

`examples/gtsrb.py` (and its CIFAR twins) and `benchmarks/accuracy.py`
train through `run`, so that the tutorials and the recorded results use
exactly the same data handling, model and optimizer:

- data: the official archives read by `keras_dib.datasets`, an optional
  validation split by whole groups (GTSRB tracks), inputs normalised by
  the model itself (`input_normalization`, so a saved model takes raw
  0-255 images);
- model: `keras_dib.build_vgg` / `keras_dib.build_resnet`;
- optimizer: SGD with momentum 0.9 and weight decay 5e-4, and a cosine
  learning-rate decay that restarts for every block of a greedy run (the
  model rebuilds its optimizer from the compile config at the start of
  each block, so a schedule whose `decay_steps` covers one block decays to
  zero once per block);
- objective: `keras_dib.DIB(alpha=1.01, beta=0.01)` for the `*_dib`
  modes, the auxiliary heads' cross-entropy for `greedy_ce` and end to
  end.

Example:

```python
from keras_dib import recipes

settings = recipes.default_settings(mode="greedy_dib", data_dir=None)
model, summary, _, _ = recipes.run("gtsrb", settings)
print(summary["test_accuracy"])
```
"""

import json
import os
import time

import keras
import numpy as np

import keras_dib
from keras_dib import datasets

__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "DEFAULT_DEPTHS",
    "DEFAULT_SETTINGS",
    "FINAL_HEADS",
    "GREEDY_MODES",
    "MODES",
    "OBJECTIVES",
    "SMALL_TRAINING_SET",
    "TrainingClock",
    "activation_memory",
    "block_history",
    "build_model",
    "channel_statistics",
    "check_settings",
    "compile_model",
    "default_batch_size",
    "default_settings",
    "device_description",
    "load_arrays",
    "make_objective",
    "make_pipelines",
    "model_family",
    "model_name",
    "output_name",
    "parse_conv_filters",
    "resolve_cache_prefix",
    "run",
    "split_options",
    "train",
]

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
    "information_preservation",
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

# The settings of `run` and their defaults: the examples' command-line
# flags (`examples/common.py` defines one flag per entry, with this
# default). `None` for `data_dir`: `$KERAS_DIB_DATA/<dataset>` when that
# variable is set, else the Keras cache; for `depth`: `DEFAULT_DEPTHS`;
# for `batch_size`: `default_batch_size`; for `cache_prefix`: on for the
# greedy modes without augmentation. `head_conv_filters` is a string as on
# the command line (`parse_conv_filters`); `head_downsample_size` 0 means
# none.
DEFAULT_SETTINGS = {
    "data_dir": None,
    "architecture": "vgg",
    "depth": None,
    "width": 16,
    "granularity": "layer",
    "head_grid_size": 4,
    "head_conv_filters": "32",
    "head_hidden_units": 0,
    "head_downsample_size": 8,
    "pool_in_next_block": False,
    "final_head": "classifier",
    "cache_prefix": None,
    "validation_size": 0,
    "select_depth": None,
    "depth_patience": None,
    "refit_selected_depth": False,
    "epochs_per_block": 2,
    "epochs": 30,
    "batch_size": None,
    "alpha": 1.01,
    "beta": 0.01,
    "objective": "dib",
    "gamma": None,
    "compression": "input",
    "mode": "greedy_dib",
    "augment": False,
    "learning_rate": 0.05,
    "optimizer": "sgd",
    "weight_decay": 5e-4,
    "train_size": 0,
    "test_size": 0,
    "seed": 0,
}

# Below this many training images the default batch size drops from 128 to
# 32, so that every greedy block still gets a few hundred optimizer steps
# (GTSRB, 4,000 images, 2 epochs a block: batch 128 gave 59% validation
# accuracy, batch 32 84%, against 87% end to end).
SMALL_TRAINING_SET = 10_000


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

    Args:
        dataset: `"gtsrb"`, `"cifar10"` or `"cifar100"`.
        data_dir: the data set's folder or archive (None: the library's
            default location, see `keras_dib.datasets`).
        train_size: training images drawn at random (0: all).
        test_size: test images drawn at random (0: all).
        seed: seed of the draws and of the validation split.
        validation_size: training images held out (0: none).

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
    """Per-channel `(mean, std)` of uint8 images, on the 0-255 scale.

    Args:
        images: array of shape `(n, height, width, channels)`.

    Returns:
        Two float64 arrays of one value per channel.
    """
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

    Args:
        dataset: the data set's name (its entry in `DATASETS` says whether
            horizontal flips are a valid augmentation).
        train: `(images, labels)` training arrays.
        test: `(images, labels)` test arrays.
        batch_size: batch size; the training pipeline drops the last
            partial batch and declares a static batch dimension.
        augment: random crops (and flips where valid) for training.
        seed: seed of the shuffling and augmentation.
        validation: optional `(images, labels)` validation arrays.
        standardize: whether the pipelines standardise the images.

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
    """The examples' `--head_conv_filters` as `build_vgg`'s argument.

    Args:
        value: `"0"`, `""` or None (no convolution), `"auglocal"`, an int,
            or comma-separated filters (`"16,32"`).

    Returns:
        None, `"auglocal"`, an int or a list of ints.
    """
    if value in (None, "", "0", 0):
        return None
    if isinstance(value, int) or value == "auglocal":
        return value
    filters = [int(part) for part in str(value).split(",")]
    return filters[0] if len(filters) == 1 else filters


def make_objective(mode, objective="dib", alpha=1.01, beta=0.01, gamma=None):
    """The compiled loss of a training mode.

    Args:
        mode: one of `MODES`; `greedy_ce` and `end_to_end` train on the
            cross-entropy only (`keras_dib.LocalObjective()`).
        objective: one of `OBJECTIVES`, for the `*_dib` modes.
        alpha: order of the Renyi entropy.
        beta: weight of the compression term (of the preserved
            information for `"information_preservation"`).
        gamma: weight of the relevance term (None: the objective's).

    Returns:
        A `keras_dib.losses.LocalObjective` instance.
    """
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
    if objective == "information_preservation":
        # `beta` weighs I(X; T), here a reward.
        return keras_dib.losses.InformationPreservation(
            alpha=alpha, weight=beta
        )
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
    also the network's classifier at inference.

    Args:
        num_classes: number of classes.
        depth: VGG 11/13/16/19 or ResNet 18/34.
        width: channels of the first layer.
        granularity: `"layer"` or `"stage"`.
        architecture: `"vgg"` or `"resnet"`.
        final_head: `"classifier"` or `"auxiliary"`.
        **kw: other arguments of `keras_dib.build_vgg` /
            `keras_dib.build_resnet`.

    Returns:
        An uncompiled `keras_dib.GreedyLayerwiseModel`.
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

    Args:
        settings: a dict of `run`'s settings: `head_downsample_size` (0:
            none, absent: the builder's default) and, for a VGG,
            `pool_in_next_block`.

    Returns:
        A dict of builder keyword arguments.
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
    """How the reports name a network: "VGG-11-BN", "ResNet-18", ...

    Args:
        architecture: `"vgg"` or `"resnet"`.
        depth: the network's depth.

    Returns:
        A string.
    """
    if architecture == "vgg":
        return f"VGG-{depth}-BN"
    return f"ResNet-{depth}"


def model_name(architecture, depth, width, num_blocks, granularity):
    """The model's description in the reports.

    Args:
        architecture: `"vgg"` or `"resnet"`.
        depth: the network's depth.
        width: channels of the first layer.
        num_blocks: the model's number of blocks.
        granularity: `"layer"` or `"stage"`.

    Returns:
        A string such as "VGG-11-BN width 16 (8 blocks, granularity
        layer)".
    """
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

    SGD with momentum 0.9 (or AdamW), weight decay, and a cosine decay that
    reaches 0 after `steps_per_stage` steps and restarts with each block's
    fresh optimizer.

    Args:
        model: a `keras_dib.GreedyLayerwiseModel`.
        mode: one of `MODES`.
        steps_per_stage: optimizer steps of one greedy block (or of the
            whole end-to-end or simultaneous run).
        learning_rate: the initial learning rate.
        optimizer: `"sgd"` or `"adamw"`.
        weight_decay: decoupled weight decay.
        alpha, beta, compression, objective, gamma: the local objective
            (see `make_objective`).

    Returns:
        `model`, compiled with the accuracy metric.
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

    Args:
        None.

    Example:

    ```python
    clock = TrainingClock()
    model.fit(x, y, callbacks=[clock])
    clock.epoch_seconds  # training seconds at each epoch's end
    ```
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
    depth_patience=None,
):
    """Fits `model` greedily, simultaneously or end to end.

    Args:
        model: a compiled `keras_dib.GreedyLayerwiseModel`.
        train_pipeline: the training data, as `fit` takes it.
        mode: one of `MODES`.
        epochs_per_block: epochs of each block in the greedy modes.
        epochs: epochs of the whole network (end to end, simultaneous).
        verbose: Keras verbosity.
        cache_prefix: greedy modes: compute the frozen blocks' output once
            per block (`fit(cache_prefix=True)`).
        validation_pipeline: optional data evaluated after every epoch
            (through the auxiliary head of the block being trained).
        callbacks: Keras callbacks.
        select_depth: greedy modes: `fit`'s `select_depth`.
        depth_patience: greedy modes: `fit`'s `depth_patience`.

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
            depth_patience=depth_patience,
            **kwargs,
        )
    return history, time.perf_counter() - start


def _output_shapes(layer, shape):
    """Output shapes of every leaf layer of `layer` run on `shape`.

    An auxiliary head's downsampling (`downsample_size`) counts as one
    output: the pooled map its first convolution keeps.
    """
    shapes = []
    if isinstance(layer, keras_dib.AuxiliaryHead):
        downsampled = layer.compute_downsampled_shape(shape)
        if downsampled != tuple(shape):
            shapes.append(downsampled)
            shape = downsampled
    children = getattr(layer, "layers", None) or getattr(
        layer, "head_layers", None
    )
    if not children:
        return shapes + [layer.compute_output_shape(shape)]
    for child in children:
        shapes += _output_shapes(child, shape)
        shape = shapes[-1]
    return shapes


def activation_memory(model, batch_size):
    """Estimated activation bytes one training step keeps for backprop.

    The float32 outputs of every layer on the gradient path, from the
    layers' output shapes: the whole network for end to end; for greedy
    block `l`, its input (the frozen prefix's output, kept but not
    differentiated), its own layers and its head's (with the head's
    downsampled map). An estimate for blocks made of standard layers
    (VGG); `benchmarks/memory.py` measures the compiled step.

    Args:
        model: a built `keras_dib.GreedyLayerwiseModel`.
        batch_size: samples per step.

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
    """Whether a run caches the frozen prefix.

    Args:
        settings: a dict of `run`'s settings; its `cache_prefix` None
            means: on for the greedy modes without augmentation.

    Returns:
        A bool.
    """
    cache = settings.get("cache_prefix")
    if cache is None:
        cache = settings["mode"] in GREEDY_MODES and not settings["augment"]
    return bool(cache)


def block_history(history):
    """Per-block lists of the history's metrics (one dict per block).

    Args:
        history: the `keras.callbacks.History` of a `fit`.

    Returns:
        A list of `{metric: [float per epoch]}` dicts, one per stage.
    """
    blocks = getattr(history, "block_histories", None) or [history.history]
    return [
        {key: [float(v) for v in values] for key, values in block.items()}
        for block in blocks
    ]


def device_description():
    """ "CPU (N cores)" or the accelerator's name, for the reports.

    Returns:
        A string.
    """
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
    """The examples' batch size: 128, or 32 below `SMALL_TRAINING_SET`.

    Every greedy block needs a few hundred optimizer steps (GTSRB, 4,000
    images, 2 epochs a block: batch 128 gave 59% validation accuracy,
    batch 32 84%).

    Args:
        train_images: number of training images.

    Returns:
        An int.
    """
    return 32 if train_images < SMALL_TRAINING_SET else 128


def check_settings(settings):
    """Raises a clear ValueError for settings that cannot train.

    Args:
        settings: a dict of `run`'s settings.

    Raises:
        ValueError: naming the setting and the value received.
    """
    for name in ("epochs_per_block", "epochs", "batch_size", "width"):
        value = settings[name]
        if value is None and name == "batch_size":
            continue
        if value < 1:
            raise ValueError(
                f"`{name}` should be a positive integer. Received: "
                f"{name}={value}"
            )
    for name in ("train_size", "test_size", "validation_size"):
        if settings.get(name, 0) < 0:
            raise ValueError(
                f"`{name}` should be >= 0 (0: all). Received: "
                f"{name}={settings[name]}"
            )
    if settings.get("refit_selected_depth") and not (
        settings.get("select_depth") and settings["mode"] in GREEDY_MODES
    ):
        raise ValueError(
            "`refit_selected_depth` refits a greedy mode to the depth that "
            "`select_depth` chose: give `select_depth` (and "
            "`validation_size`) with a greedy mode. Received: "
            f"select_depth={settings.get('select_depth')!r}, "
            f"mode={settings.get('mode')!r}"
        )
    patience = settings.get("depth_patience")
    if patience is not None and (
        not isinstance(patience, (int, np.integer))
        or isinstance(patience, bool)
        or patience < 1
        or not settings.get("select_depth")
    ):
        raise ValueError(
            "`depth_patience` should be None or a positive integer, with "
            "`select_depth`. Received: "
            f"depth_patience={patience!r}, "
            f"select_depth={settings.get('select_depth')!r}"
        )
    if settings.get("select_depth") and not settings.get("validation_size"):
        raise ValueError(
            "`select_depth` chooses on a validation split: give "
            "`validation_size` too. Received: "
            f"select_depth={settings['select_depth']!r} without it."
        )


def _fit(
    dataset,
    s,
    train_arrays,
    train_pipeline,
    steps,
    epochs_per_block,
    monitored,
    select_depth,
    verbose,
):
    """Builds, compiles and fits one model of `run`'s settings `s`.

    Returns:
        `(model, history, training_seconds, clock)`, evaluations excluded
        from the seconds.
    """
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
    history, wall_time = train(
        model,
        train_pipeline,
        s["mode"],
        epochs_per_block,
        s["epochs"],
        verbose=verbose,
        cache_prefix=s["cache_prefix"],
        validation_pipeline=monitored,
        callbacks=[clock],
        select_depth=select_depth,
        depth_patience=s.get("depth_patience") if select_depth else None,
    )
    # Per-epoch evaluations are not training time.
    return model, history, wall_time - clock.evaluation_seconds, clock


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
    check_settings(s)
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
    monitored = validation_pipeline
    if monitored is None and monitor_test:
        monitored = test_pipeline
    model, history, wall_time, clock = _fit(
        dataset,
        s,
        train_arrays,
        train_pipeline,
        steps,
        s["epochs_per_block"],
        monitored,
        s.get("select_depth") if s["mode"] in GREEDY_MODES else None,
        verbose,
    )
    selection = None
    if s.get("refit_selected_depth"):
        # Depth chosen on the validation split: train a fresh network on
        # every training image (the validation split included), only up
        # to that depth, and keep that depth.
        depth = model.inference_blocks
        selection = {
            "inference_blocks": depth,
            "validation_accuracy": float(
                model.evaluate(
                    validation_pipeline, verbose=0, return_dict=True
                )["accuracy"]
            ),
            "validation_images": int(len(validation_arrays[0])),
            "train_images": int(len(train_arrays[0])),
            "wall_time_s": round(wall_time, 2),
            "trained_blocks": history.params.get("trained_blocks"),
        }
        train_arrays, test_arrays, _ = load_arrays(
            dataset, s["data_dir"], s["train_size"], s["test_size"], s["seed"]
        )
        train_pipeline, test_pipeline, steps, _ = make_pipelines(
            dataset,
            train_arrays,
            test_arrays,
            s["batch_size"],
            s["augment"],
            s["seed"],
            standardize=False,
        )
        num_blocks = model.num_blocks
        epochs = [s["epochs_per_block"]] * depth + [0] * (num_blocks - depth)
        validation_pipeline = validation_arrays = None
        keras.utils.set_random_seed(s["seed"])
        model, history, refit_time, clock = _fit(
            dataset,
            s,
            train_arrays,
            train_pipeline,
            steps,
            epochs,
            test_pipeline if monitor_test else None,
            None,
            verbose,
        )
        model.inference_blocks = depth
        wall_time += refit_time
    results = model.evaluate(test_pipeline, verbose=0, return_dict=True)
    validation_accuracy = None
    if validation_pipeline is not None:
        validation_accuracy = float(
            model.evaluate(validation_pipeline, verbose=0, return_dict=True)[
                "accuracy"
            ]
        )
    total_epochs = len(history.history.get("loss", []))
    if selection is not None:
        validation_accuracy = selection["validation_accuracy"]
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
        "validation_images": selection["validation_images"]
        if selection
        else (0 if validation_arrays is None else len(validation_arrays[0])),
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
        # With `depth_patience`: the blocks trained before the stop.
        "trained_blocks": history.params.get("trained_blocks"),
        # With `refit_selected_depth`: the depth-selection run.
        "selection": selection,
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


def output_name(dataset, mode):
    """`<dataset>_<backend>_<mode>`: runs on other backends keep theirs.

    Args:
        dataset: the data set's name.
        mode: the training mode.

    Returns:
        A file name stem.
    """
    return f"{dataset}_{keras.backend.backend()}_{mode}"


def default_settings(**overrides):
    """The settings of `run`, at the examples' defaults.

    Args:
        **overrides: settings to change, by name (see `DEFAULT_SETTINGS`).

    Returns:
        A new dict: `DEFAULT_SETTINGS` updated with `overrides`.

    Example:

    ```python
    settings = default_settings(mode="greedy_ce", epochs_per_block=1)
    ```
    """
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(
            f"Unknown settings {unknown}; expected names among "
            f"{sorted(DEFAULT_SETTINGS)}."
        )
    settings = dict(DEFAULT_SETTINGS)
    settings.update(overrides)
    return settings

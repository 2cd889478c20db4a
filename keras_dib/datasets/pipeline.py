"""Input pipelines: `tf.data` when TensorFlow is installed, else a PyDataset.

Both pipelines are driven by one NumPy plan, so that they give the same
batches for the same seed:

- epoch `e` of a training pipeline draws, from
  `numpy.random.default_rng([seed, e])`, first the permutation of the
  samples (if shuffling), then one crop offset `(dy, dx)` in `[0, 8]` per
  sample (if augmenting), then one flip bit per sample (if flipping);
- a batch is gathered from the uint8 images, zero-padded by 4 pixels and
  cropped back to its size at its offsets (then mirrored where its bit is
  set) with one vectorised gather per batch, cast to float32 and
  normalised as `(x - mean) / std`, in this order, in both paths.

For a `tf.data` pipeline, the epoch is the number of iterations started
over the dataset (each `model.fit` epoch starts one); for the PyDataset it
is the number of `on_epoch_end()` calls.
"""

import itertools
import math
import threading

import keras
import numpy as np

NORMALIZATIONS = ("standardize", "unit", None)
BACKENDS = ("auto", "tensorflow", "numpy")
PADDING = 4


# === Arguments and backends ===


def require_tensorflow():
    """Imports TensorFlow for `tf.data`, with an actionable error if absent.

    When the Keras backend is not TensorFlow, TensorFlow is kept off the
    GPUs (if it has not touched them yet), so that `tf.data` does not take
    the accelerator memory that JAX or torch needs.

    Returns:
        The `tensorflow` module.

    Raises:
        ImportError: if TensorFlow is not installed.
    """
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "This `tf.data` pipeline needs TensorFlow, which is not "
            "installed. Install it with `pip install tensorflow`, or pass "
            "`backend='numpy'` (or 'auto') to get a `keras.utils.PyDataset` "
            "that works on every Keras backend."
        ) from e
    if keras.backend.backend() != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass  # already initialised: leave it as it is
    return tf


def resolve_backend(backend):
    """Maps `backend` ("auto", "tensorflow", "numpy") to the path to use.

    "auto" is "tensorflow" if TensorFlow can be imported, else "numpy".
    """
    _check_backend(backend)
    if backend == "auto":
        try:
            require_tensorflow()
        except ImportError:
            return "numpy"
        return "tensorflow"
    return backend


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(
            f"`backend` should be one of {BACKENDS}. Received: "
            f"backend={backend!r}"
        )


def check_pipeline_args(
    batch_size, validation_split, seed, normalization, backend
):
    """Validates the arguments shared by the data set pipelines."""
    _check_batch_size(batch_size)
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float))
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            "`validation_split` should be a float in [0, 1). Received: "
            f"validation_split={validation_split!r}"
        )
    _check_seed(seed)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` should be one of {NORMALIZATIONS}. Received: "
            f"normalization={normalization!r}"
        )
    _check_backend(backend)


def _check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size <= 0
    ):
        raise ValueError(
            "`batch_size` should be a positive integer. Received: "
            f"batch_size={batch_size!r}"
        )


def _check_seed(seed):
    if (
        isinstance(seed, bool)
        or not isinstance(seed, (int, np.integer))
        or seed < 0
    ):
        raise ValueError(
            f"`seed` should be a non-negative integer. Received: seed={seed!r}"
        )


# === Statistics and splits ===


def channel_mean_std(x):
    """Exact per-channel mean and standard deviation of uint8 images.

    Computed from per-channel histograms (exact, fast, little memory).

    Args:
        x: uint8 array `(N, height, width, channels)`.

    Returns:
        `(mean, std)`, float32 arrays of shape `(channels,)`, in the
        0..255 pixel scale; a zero std is replaced by 1.
    """
    x = np.asarray(x)
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for channel in range(x.shape[-1]):
        counts = np.bincount(x[..., channel].ravel(), minlength=256)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(mean)
        stds.append(math.sqrt(var) if var > 0 else 1.0)
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def normalization_stats(x, normalization):
    """`(mean, std)` for `normalization` ("standardize", "unit", None)."""
    if normalization == "standardize":
        return channel_mean_std(x)
    if normalization == "unit":
        channels = x.shape[-1]
        return np.zeros(channels, np.float32), np.full(
            channels, 255.0, np.float32
        )
    return None, None


def stratified_split(y, validation_split, seed):
    """Seeded stratified random split of samples (by image).

    In each class, `round(validation_split * n_class)` samples, at least 1
    while the class keeps at least 1 for training, go to validation.

    Returns:
        `(train_indices, validation_indices)`, sorted int arrays.
    """
    return group_split(y, np.arange(len(y)), validation_split, seed)


def group_split(y, groups, validation_split, seed):
    """Seeded split by group (e.g. GTSRB tracks): no group on both sides.

    The groups of each class are shuffled with
    `numpy.random.default_rng(seed)`, and `round(validation_split *
    n_groups)` of them (at least 1 while one stays for training) go to
    validation, so the split is stratified by class and track-disjoint.

    Args:
        y: int labels `(N,)`.
        groups: int group ids `(N,)` (each group within one class).
        validation_split: fraction in (0, 1).
        seed: int seed.

    Returns:
        `(train_indices, validation_indices)`, sorted int arrays.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    unique_groups, first = np.unique(groups, return_index=True)
    group_labels = y[first]
    validation_groups = []
    for label in np.unique(group_labels):
        members = unique_groups[group_labels == label]
        members = members[rng.permutation(len(members))]
        count = int(round(validation_split * len(members)))
        count = min(max(count, 1), len(members) - 1)
        validation_groups.append(members[:count])
    in_validation = np.isin(groups, np.concatenate(validation_groups))
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)


# === The shared batch plan ===


class BatchPlan:
    """Per-epoch sample order, crop offsets and flips, drawn with NumPy.

    Args:
        num_samples: number of samples.
        batch_size: samples per batch.
        seed: base seed; epoch `e` uses `default_rng([seed, e])`.
        shuffle: whether to permute samples each epoch.
        drop_remainder: whether to drop the last partial batch.
        augment: whether to draw crop offsets.
        flip: whether to draw horizontal flips.
    """

    def __init__(
        self,
        num_samples,
        batch_size,
        seed=0,
        shuffle=False,
        drop_remainder=False,
        augment=False,
        flip=False,
    ):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.augment = augment
        self.flip = flip
        if drop_remainder:
            self.steps = num_samples // batch_size
        else:
            self.steps = math.ceil(num_samples / batch_size)
        self._lock = threading.Lock()
        self._epochs = {}

    def epoch(self, epoch):
        """`(indices, offsets, flips)` for all samples of epoch `epoch`."""
        with self._lock:
            if epoch not in self._epochs:
                if len(self._epochs) >= 2:
                    self._epochs.pop(min(self._epochs))
                self._epochs[epoch] = self._draw(epoch)
            return self._epochs[epoch]

    def _draw(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        n = self.num_samples
        if self.shuffle:
            indices = rng.permutation(n).astype(np.int64)
        else:
            indices = np.arange(n, dtype=np.int64)
        if self.augment:
            offsets = rng.integers(0, 2 * PADDING + 1, (n, 2), dtype=np.int32)
        else:
            offsets = np.full((n, 2), PADDING, np.int32)
        if self.flip:
            flips = rng.random(n) < 0.5
        else:
            flips = np.zeros(n, bool)
        return indices, offsets, flips

    def batch(self, epoch, step):
        """`(indices, offsets, flips)` of batch `step` of epoch `epoch`."""
        indices, offsets, flips = self.epoch(epoch)
        part = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return indices[part], offsets[part], flips[part]


def augment_numpy(images, offsets, flips):
    """Pads by 4 with zeros, crops at `offsets`, mirrors where `flips`.

    One vectorised gather for the whole batch.

    Args:
        images: uint8 `(B, H, W, C)`.
        offsets: int `(B, 2)` crop corners `(dy, dx)` in `[0, 8]` in the
            padded image (4 is the identity).
        flips: bool `(B,)`.

    Returns:
        uint8 `(B, H, W, C)`.
    """
    batch, height, width, channels = images.shape
    padded = np.zeros(
        (batch, height + 2 * PADDING, width + 2 * PADDING, channels),
        images.dtype,
    )
    padded[:, PADDING : PADDING + height, PADDING : PADDING + width] = images
    rows = offsets[:, :1] + np.arange(height)
    cols = offsets[:, 1:] + np.arange(width)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    return padded[
        np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]
    ]


def _augment_tensorflow(tf, images, offsets, flips):
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(
        images, [[0, 0], [PADDING, PADDING], [PADDING, PADDING], [0, 0]]
    )
    rows = offsets[:, :1] + tf.range(height, dtype=tf.int32)
    cols = offsets[:, 1:] + tf.range(width, dtype=tf.int32)
    cols = tf.where(flips[:, None], tf.reverse(cols, axis=[1]), cols)
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def _normalize_numpy(images, mean, std):
    images = images.astype(np.float32)
    if mean is not None:  # in place: same rounding as `(x - mean) / std`
        images -= mean
        images /= std
    return images


# === PyDataset ===


class ArrayBatches(keras.utils.PyDataset):
    """Backend-agnostic batches of in-memory images for `model.fit`.

    The NumPy twin of the `tf.data` pipeline (same plan, same batches for
    the same seed). Built by `make_pipeline(..., backend="numpy")`.

    Batches are built in the calling thread by default (`workers=1`). NumPy
    releases the GIL while gathering and normalising, so on a many-core
    machine set `dataset.workers = 4` (threads; before `fit`) to build
    batches in parallel: the batches stay the same, Keras' `fit` may only
    reorder them within an epoch (as it does with `shuffle=True`).

    Args:
        x: uint8 images `(N, H, W, C)`.
        y: int labels `(N,)`.
        plan: a `BatchPlan`.
        mean: float32 `(C,)` or None.
        std: float32 `(C,)` or None.
        **kwargs: forwarded to `keras.utils.PyDataset` (`workers`, ...).
    """

    def __init__(self, x, y, plan, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        self.x = x
        self.y = y
        self.plan = plan
        self.mean = mean
        self.std = std
        self.epoch = 0

    def __len__(self):
        return self.plan.steps

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(
                f"Batch index out of range [0, {len(self)}). Received: {index}"
            )
        indices, offsets, flips = self.plan.batch(self.epoch, index)
        if self.plan.shuffle:
            images, labels = self.x[indices], self.y[indices]
        else:  # contiguous: a slice is cheaper than a gather
            part = slice(int(indices[0]), int(indices[-1]) + 1)
            images, labels = self.x[part], self.y[part]
        if self.plan.augment or self.plan.flip:
            images = augment_numpy(images, offsets, flips)
        return _normalize_numpy(images, self.mean, self.std), labels

    def on_epoch_end(self):
        self.epoch += 1


# === tf.data ===


def _tensorflow_pipeline(x, y, plan, mean, std):
    tf = require_tensorflow()
    batch_size = plan.batch_size
    with tf.device("/CPU:0"):  # keep the arrays in host memory
        x_all = tf.convert_to_tensor(x)
        y_all = tf.convert_to_tensor(y)
        mean_t = None if mean is None else tf.constant(mean, tf.float32)
        std_t = None if std is None else tf.constant(std, tf.float32)

    def normalize(images):
        images = tf.cast(images, tf.float32)
        if mean_t is not None:
            images = (images - mean_t) / std_t
        return images

    if not (plan.shuffle or plan.augment or plan.flip):
        num_samples = plan.num_samples

        def contiguous_batch(step):
            start = step * batch_size
            stop = tf.minimum(start + batch_size, num_samples)
            return normalize(x_all[start:stop]), y_all[start:stop]

        dataset = tf.data.Dataset.range(plan.steps).map(
            contiguous_batch, num_parallel_calls=tf.data.AUTOTUNE
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    epochs = itertools.count()

    def batch_plans():
        epoch = next(epochs)
        for step in range(plan.steps):
            yield plan.batch(epoch, step)

    signature = (
        tf.TensorSpec((None,), tf.int64),
        tf.TensorSpec((None, 2), tf.int32),
        tf.TensorSpec((None,), tf.bool),
    )
    dataset = tf.data.Dataset.from_generator(
        batch_plans, output_signature=signature
    )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(plan.steps))

    def gathered_batch(indices, offsets, flips):
        images = tf.gather(x_all, indices)
        if plan.augment or plan.flip:
            images = _augment_tensorflow(tf, images, offsets, flips)
        return normalize(images), tf.gather(y_all, indices)

    dataset = dataset.map(
        gathered_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# === Public builders ===


def build_pipeline(
    x,
    y,
    batch_size=128,
    training=True,
    augment=False,
    flip=False,
    seed=0,
    mean=None,
    std=None,
    backend="auto",
    shuffle=True,
):
    """`make_pipeline` with a `shuffle` switch for training pipelines."""
    _check_batch_size(batch_size)
    _check_seed(seed)
    path = resolve_backend(backend)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(
            "`x` should be uint8 images of shape (N, height, width, "
            f"channels). Received: dtype={x.dtype}, shape={x.shape}"
        )
    if y.shape != (len(x),):
        raise ValueError(
            f"`y` should hold one label per image, shape ({len(x)},). "
            f"Received: shape={y.shape}"
        )
    y = y.astype(np.int32, copy=False)
    if (mean is None) != (std is None):
        mean = np.zeros(x.shape[-1], np.float32) if mean is None else mean
        std = np.ones(x.shape[-1], np.float32) if std is None else std
    if mean is not None:
        mean = np.broadcast_to(np.asarray(mean, np.float32), x.shape[-1:])
        std = np.broadcast_to(np.asarray(std, np.float32), x.shape[-1:])
        if np.any(std <= 0):
            raise ValueError(
                f"`std` should be > 0 in every channel. Received: std={std}"
            )
    plan = BatchPlan(
        len(x),
        batch_size,
        seed=seed,
        shuffle=bool(training and shuffle),
        drop_remainder=bool(training),
        augment=bool(training and augment),
        flip=bool(training and flip),
    )
    if plan.steps == 0:
        raise ValueError(
            "`batch_size` should be at most the number of training samples "
            "(training batches are fixed-size, the remainder is dropped). "
            f"Received: batch_size={batch_size}, samples={len(x)}"
        )
    if path == "tensorflow":
        return _tensorflow_pipeline(x, y, plan, mean, std)
    return ArrayBatches(x, y, plan, mean, std)


def make_pipeline(
    x,
    y,
    batch_size=128,
    training=True,
    augment=False,
    flip=False,
    seed=0,
    mean=None,
    std=None,
    backend="auto",
):
    """Builds a batched input pipeline over in-memory uint8 images.

    A training pipeline (`training=True`) reshuffles every epoch (seeded),
    drops the last partial batch so that every batch has exactly
    `batch_size` samples, and optionally augments: zero-pad by 4 pixels and
    crop back at a random offset (`augment`), and mirror left-right with
    probability 1/2 (`flip`), vectorised per batch. An evaluation pipeline
    (`training=False`) keeps the order, does not augment and keeps every
    sample. Images come out as float32 `(x - mean) / std` (per channel),
    labels as int32 `(batch,)`.

    Args:
        x: uint8 images `(N, height, width, channels)`.
        y: int labels `(N,)`.
        batch_size: samples per batch. Default 128.
        training: training (True) or evaluation (False) pipeline.
        augment: random pad-4 crops (training only). Default False.
        flip: random horizontal flips (training only). Default False.
        seed: non-negative int; epoch `e` draws its order, crops and flips
            from `numpy.random.default_rng([seed, e])`. Default 0.
        mean: per-channel mean (0..255 scale), or None for no shift.
        std: per-channel std (0..255 scale), or None for no scaling.
        backend: "auto" (`tf.data` if TensorFlow is installed, else a
            `keras.utils.PyDataset`), "tensorflow" or "numpy". Both give
            the same batches for the same seed.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches (prefetched), or
        a `keras.utils.PyDataset` yielding the same NumPy batches.

    Example:

    ```python
    train = keras_dib.datasets.make_pipeline(
        x_train, y_train, batch_size=128, augment=True, flip=True,
        mean=[125.3, 123.0, 113.9], std=[63.0, 62.1, 66.7],
    )
    model.fit(train, epochs=10)
    ```
    """
    return build_pipeline(
        x,
        y,
        batch_size=batch_size,
        training=training,
        augment=augment,
        flip=flip,
        seed=seed,
        mean=mean,
        std=std,
        backend=backend,
    )


def dataset_pipelines(
    load,
    batch_size,
    augment,
    flip,
    validation_split,
    seed,
    normalization,
    shuffle,
    backend,
):
    """Checks the arguments, loads a data set and builds its pipelines.

    The shared body of the data set pipelines (`cifar10`, `cifar100`,
    `gtsrb`): the arguments are checked before `load` reads any data; the
    validation split is held out of the training split, and the
    normalization statistics come from what is left for training.

    Args:
        load: function of no arguments returning `(train, test)`, where
            `test` is `(x, y)` and `train` is `(x, y)`, split by sample
            (`stratified_split`), or `(x, y, groups)`, split by group
            (`group_split`, e.g. GTSRB tracks).
        batch_size, augment, flip, seed, shuffle, backend: as in
            `build_pipeline` (`augment` and `flip` for training only).
        validation_split: fraction in [0, 1) of the training samples (or
            groups) held out as a validation split.
        normalization: "standardize", "unit" or None (`normalization_stats`).

    Returns:
        `(train, test)`, or `(train, validation, test)` when
        `validation_split > 0`.
    """
    check_pipeline_args(
        batch_size, validation_split, seed, normalization, backend
    )
    train, test = load()
    x_train, y_train = train[0], train[1]
    validation = None
    if validation_split > 0:
        if len(train) > 2:
            train_idx, val_idx = group_split(
                y_train, train[2], validation_split, seed
            )
        else:
            train_idx, val_idx = stratified_split(
                y_train, validation_split, seed
            )
        validation = (x_train[val_idx], y_train[val_idx])
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    mean, std = normalization_stats(x_train, normalization)
    common = dict(batch_size=batch_size, mean=mean, std=std, backend=backend)
    pipelines = [
        build_pipeline(
            x_train,
            y_train,
            training=True,
            augment=augment,
            flip=flip,
            seed=seed,
            shuffle=shuffle,
            **common,
        )
    ]
    if validation is not None:
        pipelines.append(build_pipeline(*validation, training=False, **common))
    pipelines.append(build_pipeline(*test, training=False, **common))
    return tuple(pipelines)

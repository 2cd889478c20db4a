"""Auxiliary classifier heads for greedy block training."""

import random

import keras
from keras import ops

POOLING_MODES = ("average", "max", "global_average")


@keras.saving.register_keras_serializable(package="keras_dib")
class AuxiliaryHead(keras.layers.Layer):
    """Auxiliary classifier that trains one block on its own.

    Pools the block's feature map down to a small `grid_size x grid_size`
    grid, flattens it and maps it to class logits with a Dense layer, as in
    Decoupled Greedy Learning. A convolution (`conv_filters`) before the
    pooling and a hidden Dense layer (`hidden_units`) give the auxiliary
    problem more capacity, which is what closes the gap to end-to-end
    training in the literature. Rank-2 inputs skip the pooling.

    `downsample_size` average-pools large feature maps first, so that the
    convolutions run at a low resolution: on the full-resolution maps of a
    network's first blocks, a head's convolution can hold more activations
    than the block itself (the memory-balanced split of docs/training.md).

    Pooling to a grid keeps spatial information: measured on a 43-class
    GTSRB slice, a tiny greedy VGG reached about 45% with a 2x2 grid but
    only about 12% with global average pooling.

    Args:
        num_classes: int, number of classes (output logits).
        grid_size: int, side of the pooled grid. Feature maps smaller than
            the grid are not pooled. Defaults to 2.
        pooling: `"average"` (default), `"max"`, or `"global_average"`
            (ignores `grid_size`).
        conv_filters: optional int, or list of 1 to 3 ints: the filters of
            one or several 3x3 convolutions, each followed by batch
            normalization and ReLU, applied before the pooling. Defaults to
            None (no convolution).
        hidden_units: optional int, units of a hidden ReLU Dense layer
            before the classifier. Defaults to None.
        downsample_size: optional int, at least `grid_size`: feature maps
            larger than `downsample_size` on a side are average-pooled
            first, by `height // downsample_size` x `width //
            downsample_size`, before the convolutions and the grid
            pooling. Defaults to None (no downsampling).
        dropout: float in [0, 1), dropout before the classifier.
            Defaults to 0.
        seed: optional int, seed of the dropout mask. By default one is
            drawn from Python's `random` (seeded by
            `keras.utils.set_random_seed`), so the dropout state lives in
            a variable on every backend and a checkpointed fit resumes
            exactly (an unseeded Keras `Dropout` on the torch backend
            draws from torch's global generator instead).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Returns:
        Logits of shape `(batch, num_classes)` when called.

    Example:

    >>> head = keras_dib.models.AuxiliaryHead(num_classes=10, grid_size=2)
    >>> logits = head(np.zeros((8, 16, 16, 32)))
    >>> tuple(logits.shape)
    (8, 10)
    >>> head = keras_dib.models.AuxiliaryHead(
    ...     num_classes=10, grid_size=4, conv_filters=32, downsample_size=8
    ... )
    >>> logits = head(np.zeros((8, 32, 32, 16)))  # convolved at 8x8
    >>> tuple(logits.shape)
    (8, 10)

    References:
        - Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of
          CNNs", ICML 2020. https://arxiv.org/abs/1901.08164
    """

    def __init__(
        self,
        num_classes,
        grid_size=2,
        pooling="average",
        conv_filters=None,
        hidden_units=None,
        dropout=0.0,
        seed=None,
        downsample_size=None,
        **kwargs,
    ):
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("grid_size", grid_size)
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"`pooling` should be one of {POOLING_MODES}. "
                f"Received: pooling={pooling!r}"
            )
        if conv_filters is not None:
            _check_conv_filters(conv_filters)
        if hidden_units is not None:
            _check_positive_int("hidden_units", hidden_units)
        if downsample_size is not None:
            _check_positive_int("downsample_size", downsample_size)
            if pooling != "global_average" and downsample_size < grid_size:
                raise ValueError(
                    "`downsample_size` should be at least `grid_size` "
                    f"({grid_size}). Received: "
                    f"downsample_size={downsample_size}"
                )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise ValueError(
                "`dropout` should be a number in [0, 1). "
                f"Received: dropout={dropout!r}"
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int)
        ):
            raise ValueError(
                f"`seed` should be an integer or None. Received: seed={seed!r}"
            )
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.grid_size = grid_size
        self.pooling = pooling
        self.conv_filters = conv_filters
        self.hidden_units = hidden_units
        self.dropout = dropout
        if seed is None:
            seed = random.randint(1, 2**31 - 1)
        self.seed = seed
        self.downsample_size = downsample_size
        self.head_layers = []
        self._downsample = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        layers = []
        if len(input_shape) == 4:
            self._downsample = self._downsample_pool(input_shape)
            input_shape = self.compute_downsampled_shape(input_shape)
            for index, filters in enumerate(self._conv_filter_list()):
                # The first convolution keeps the names of the one-layer
                # head, so weights saved before deeper heads existed load.
                suffix = "" if index == 0 else f"_{index + 1}"
                layers += [
                    keras.layers.Conv2D(
                        filters,
                        3,
                        padding="same",
                        use_bias=False,
                        dtype=self.dtype_policy,
                        name=f"conv{suffix}",
                    ),
                    keras.layers.BatchNormalization(
                        dtype=self.dtype_policy, name=f"batch_norm{suffix}"
                    ),
                    keras.layers.ReLU(
                        dtype=self.dtype_policy, name=f"relu{suffix}"
                    ),
                ]
            if self.pooling == "global_average":
                layers.append(
                    keras.layers.GlobalAveragePooling2D(
                        dtype=self.dtype_policy, name="pool"
                    )
                )
            else:
                pool = _pool_size(input_shape, self.grid_size, "grid pooling")
                if pool is not None:
                    pool_class = (
                        keras.layers.AveragePooling2D
                        if self.pooling == "average"
                        else keras.layers.MaxPooling2D
                    )
                    layers.append(
                        pool_class(pool, dtype=self.dtype_policy, name="pool")
                    )
                layers.append(
                    keras.layers.Flatten(dtype=self.dtype_policy, name="flat")
                )
        elif len(input_shape) != 2:
            raise ValueError(
                "AuxiliaryHead expects feature maps of rank 4 "
                "(batch, height, width, channels) or features of rank 2. "
                f"Received: input_shape={input_shape}"
            )
        if self.hidden_units is not None:
            layers.append(
                keras.layers.Dense(
                    self.hidden_units,
                    activation="relu",
                    dtype=self.dtype_policy,
                    name="hidden",
                )
            )
        if self.dropout:
            layers.append(
                keras.layers.Dropout(
                    self.dropout, seed=self.seed, dtype=self.dtype_policy
                )
            )
        layers.append(
            keras.layers.Dense(
                self.num_classes, dtype=self.dtype_policy, name="logits"
            )
        )
        shape = input_shape
        for layer in layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.head_layers = layers

    def compute_downsampled_shape(self, input_shape):
        """Shape of the map the head's layers see, after `downsample_size`.

        Args:
            input_shape: the head's input shape, `(batch, height, width,
                channels)` (or rank 2, which is not downsampled).

        Returns:
            The shape after the average pooling of `downsample_size`, or
            `input_shape` itself when the head does not downsample it.
        """
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            return input_shape
        pool = self._downsample_pool(input_shape)
        if pool is None:
            return input_shape
        return (
            input_shape[0],
            input_shape[1] // pool[0],
            input_shape[2] // pool[1],
            input_shape[3],
        )

    def _downsample_pool(self, input_shape):
        """Pool size of the downsampling, or None when there is none."""
        if self.downsample_size is None:
            return None
        return _pool_size(
            input_shape, self.downsample_size, "`downsample_size`"
        )

    def _conv_filter_list(self):
        if self.conv_filters is None:
            return []
        if isinstance(self.conv_filters, int):
            return [self.conv_filters]
        return list(self.conv_filters)

    def call(self, inputs, training=None):
        x = inputs
        if self._downsample is not None:
            x = _average_pool(x, self._downsample)
        for layer in self.head_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "grid_size": self.grid_size,
                "pooling": self.pooling,
                "conv_filters": self.conv_filters
                if not isinstance(self.conv_filters, tuple)
                else list(self.conv_filters),
                "hidden_units": self.hidden_units,
                "dropout": self.dropout,
                "seed": self.seed,
                "downsample_size": self.downsample_size,
            }
        )
        return config


def _average_pool(x, pool_size):
    """Average pooling with strides equal to `pool_size` ("valid" padding).

    Written as a reshape and a mean rather than a pooling layer: its
    gradient is then a broadcast that XLA fuses into its consumer, where a
    pooling layer's gradient is one more full-resolution buffer.
    """
    pool_height, pool_width = pool_size
    height = x.shape[1] // pool_height
    width = x.shape[2] // pool_width
    x = x[:, : height * pool_height, : width * pool_width, :]
    x = ops.reshape(x, (-1, height, pool_height, width, pool_width, x.shape[3]))
    return ops.mean(x, axis=(2, 4))


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` should be a positive integer. Received: {name}={value!r}"
        )


def _pool_size(input_shape, size, purpose):
    """The pool that brings `input_shape`'s maps down to about `size`, or
    None when they are not larger (no pooling)."""
    height, width = input_shape[1], input_shape[2]
    if height is None or width is None:
        raise ValueError(
            f"AuxiliaryHead needs static spatial dimensions for {purpose}. "
            f"Received: input_shape={input_shape}"
        )
    pool = (max(height // size, 1), max(width // size, 1))
    return None if pool == (1, 1) else pool


def _check_conv_filters(conv_filters):
    if isinstance(conv_filters, (list, tuple)):
        if 1 <= len(conv_filters) <= 3 and all(
            isinstance(f, int) and not isinstance(f, bool) and f >= 1
            for f in conv_filters
        ):
            return
    elif isinstance(conv_filters, int) and not isinstance(conv_filters, bool):
        if conv_filters >= 1:
            return
    raise ValueError(
        "`conv_filters` should be a positive integer or a list of 1 to 3 "
        f"positive integers. Received: conv_filters={conv_filters!r}"
    )

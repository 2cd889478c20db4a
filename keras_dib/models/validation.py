"""Checks of training inputs and a NaN guard for greedy fits."""

import math

import keras
import numpy as np


def _num_classes(model):
    if model.num_classes is not None:
        return model.num_classes
    return None


def _check_batch(model, x, y, name):
    x = np.asarray(x)
    expected = getattr(model, "_expected_input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"`{name}` images should have shape (batch,) + {tuple(expected)} "
            f"(the model's input shape). Received: {name}.shape={x.shape}"
        )
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(
            f"`{name}` contains {bad} NaN or Inf values; clean or "
            "normalise the inputs before training."
        )
    if y is None:
        return
    y = np.asarray(y)
    num_classes = _num_classes(model)
    label_name = "y" if name == "x" else f"labels of {name}"
    if y.ndim == 2 and y.shape[-1] > 1:
        if num_classes is not None and y.shape[-1] != num_classes:
            raise ValueError(
                f"One-hot `{label_name}` should have num_classes="
                f"{num_classes} columns. Received: shape={y.shape}"
            )
        return
    if y.ndim > 2 or (y.ndim == 2 and y.shape[-1] != 1):
        raise ValueError(
            f"`{label_name}` should be class indices of shape (batch,) or "
            f"(batch, 1), or one-hot of shape (batch, num_classes). "
            f"Received: shape={y.shape}"
        )
    if len(y) != len(x):
        raise ValueError(
            f"`{name}` and `{label_name}` should have the same number of "
            f"samples. Received: {len(x)} images and {len(y)} labels"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(
                f"`{label_name}` should be integer class indices (or "
                f"one-hot). Received: dtype={y.dtype} with non-integer values"
            )
    if y.size and num_classes is not None:
        low, high = int(np.min(y)), int(np.max(y))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"`{label_name}` should be class indices in [0, "
                f"{num_classes - 1}] (num_classes={num_classes}). "
                f"Received: labels from {low} to {high}"
            )


def validate_fit_inputs(model, x, y, batch_size, validation_data):
    """Raises a clear ValueError for bad training data, before training.

    Arrays are checked whole; a `tf.data.Dataset` or `keras.utils.PyDataset`
    is checked on its first batch. Checked: image shape against the model's
    input shape, NaN/Inf in float images, label shape and range against
    `num_classes`, integer-vs-one-hot mismatch, and a data set smaller than
    one batch.
    """
    if isinstance(x, np.ndarray) or (
        hasattr(x, "shape")
        and hasattr(x, "dtype")
        and not hasattr(x, "element_spec")
    ):
        x = np.asarray(x)
        batch = batch_size or 32
        if len(x) < batch:
            raise ValueError(
                f"The training set has {len(x)} samples, fewer than one "
                f"batch (batch_size={batch}): the entropy estimator needs "
                "full batches of a fixed size."
            )
        _check_batch(model, x, y, "x")
    else:
        first = _first_batch(x)
        if first is not None:
            _check_batch(model, first[0], first[1], "x")
    if validation_data is not None and isinstance(
        validation_data, (tuple, list)
    ):
        if len(validation_data) >= 2:
            _check_batch(
                model,
                validation_data[0],
                validation_data[1],
                "validation_data",
            )


def _first_batch(data):
    try:
        if hasattr(data, "element_spec"):
            for element in data.take(1):
                element = keras.tree.map_structure(np.asarray, element)
                if isinstance(element, (tuple, list)) and len(element) >= 2:
                    return element[0], element[1]
                return None
        if isinstance(data, keras.utils.PyDataset):
            element = data[0]
            if isinstance(element, (tuple, list)) and len(element) >= 2:
                return np.asarray(element[0]), np.asarray(element[1])
    except (TypeError, IndexError):
        return None
    return None


class NaNGuard(keras.callbacks.Callback):
    """Stops a block whose loss becomes NaN or Inf, naming block and term.

    Added by `GreedyLayerwiseModel.fit`: raises `FloatingPointError` with the
    block, epoch, batch and the value of each reported term, instead of
    letting training continue into a NaN model.
    """

    def __init__(self, block_label):
        super().__init__()
        self.block_label = block_label
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        terms = {
            key: float(value)
            for key, value in logs.items()
            if key != "loss" and np.ndim(value) == 0
        }
        culprits = [k for k, v in terms.items() if not math.isfinite(v)]
        raise FloatingPointError(
            f"{self.block_label}: the loss became {loss} at epoch "
            f"{self.epoch + 1}, batch {batch + 1}. Reported terms: {terms}. "
            + (
                f"Non-finite term(s): {culprits}. "
                if culprits
                else "Every reported term is finite: the non-finite value "
                "comes from another loss (e.g. a regularizer). "
            )
            + "Lower the learning rate, check the inputs for NaN/Inf, or "
            "use a larger kernel width (`sigma`)."
        )


def check_model_arguments(blocks, head, auxiliary_heads, num_classes):
    """Raises a clear ValueError for bad `GreedyLayerwiseModel` arguments."""
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(
            "`blocks` should be a non-empty list of Keras layers. "
            f"Received: blocks={blocks!r}"
        )
    for index, block in enumerate(blocks):
        if not isinstance(block, keras.layers.Layer):
            raise ValueError(
                "Every block should be a Keras layer or model. Received: "
                f"blocks[{index}]={block!r}"
            )
    if not isinstance(head, keras.layers.Layer):
        raise ValueError(
            f"`head` should be a Keras layer. Received: head={head!r}"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 2
    ):
        raise ValueError(
            "`num_classes` should be an integer >= 2. "
            f"Received: num_classes={num_classes!r}"
        )
    if auxiliary_heads is None:
        if num_classes is None:
            raise ValueError(
                "Pass `num_classes` (to create the default auxiliary "
                "heads) or `auxiliary_heads` (a list of "
                f"{len(blocks) - 1} layers). Received neither."
            )
        return
    if (
        not isinstance(auxiliary_heads, (list, tuple))
        or len(auxiliary_heads) != len(blocks) - 1
        or not all(isinstance(h, keras.layers.Layer) for h in auxiliary_heads)
    ):
        raise ValueError(
            "`auxiliary_heads` should be a list of one Keras layer per "
            f"block but the last ({len(blocks) - 1} layers for "
            f"{len(blocks)} blocks). Received: "
            f"auxiliary_heads={auxiliary_heads!r}"
        )

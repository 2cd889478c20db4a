"""Checks of training inputs, and guards of a greedy fit while it trains.

Before training: `validate_fit_inputs` (data, labels, batch size) and
`check_save_path`. While training: `check_labels_in_step` (labels of every
batch, in the compiled step), `NaNGuard` (a non-finite loss) and
`WeightGuard` (non-finite weights at an epoch's end).
"""

import math
import os

import keras
import numpy as np
from keras import ops

from keras_dib.losses.local_objective import _is_integer_labels

# The smallest batch an objective with batch-level terms (any term beyond
# `cross_entropy`, e.g. DIB's compression) trains on: the matrix-based
# entropy of a batch of n samples is at most log(n), and exactly 0 for one.
MIN_BATCH_SIZE = 8

# Name of the (hidden) metric counting out-of-range labels in the step.
LABEL_ERRORS = "label_errors"


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


def min_batch_size(model, schedule):
    """The smallest batch `fit` accepts: `MIN_BATCH_SIZE` or 1.

    `MIN_BATCH_SIZE` when the schedule trains on the local objective and
    the objective has a batch-level term (any term beyond
    `cross_entropy`); 1 otherwise.
    """
    if not schedule.trains_locally:
        return 1
    terms = set(model.objective.term_weights) - {"cross_entropy"}
    return MIN_BATCH_SIZE if terms else 1


def is_array(x):
    """Whether `x` is array-like data (not a dataset)."""
    return isinstance(x, np.ndarray) or (
        hasattr(x, "shape")
        and hasattr(x, "dtype")
        and not hasattr(x, "element_spec")
    )


def _check_batch_size(size, floor, name):
    if size < floor:
        raise ValueError(
            f"{name} should hold at least {floor} samples with an "
            "objective that has batch-level terms (beyond cross_entropy): "
            "the entropy estimator measures the batch, and a batch of one "
            "sample has zero entropy. Use a larger batch or an objective "
            f"without batch-level terms. Received: {size} samples a batch"
        )


def _refuse_dicts(element, name):
    if isinstance(element, dict) or (
        isinstance(element, (tuple, list))
        and element
        and isinstance(element[0], dict)
    ):
        raise ValueError(
            f"`{name}` yields dicts: dict inputs are not supported. Pass "
            "the images as one array or tensor, as `(images, labels)` "
            "batches."
        )


def validate_fit_inputs(model, x, y, batch_size, kwargs, floor=1):
    """Raises a clear ValueError for bad training data, before training.

    Arrays are checked whole; a `tf.data.Dataset` or `keras.utils.PyDataset`
    (training or validation) is checked on its first batch. Checked: image
    shape against the model's input shape, NaN/Inf in float images, label
    shape and range against `num_classes`, integer-vs-one-hot mismatch,
    missing labels, dict inputs (not supported), a training set smaller
    than one batch (also after `validation_split`), and batches smaller
    than `floor` (see `min_batch_size`).

    Args:
        model: the `GreedyLayerwiseModel`.
        x, y, batch_size: the arguments of `fit`.
        kwargs: the other `fit` keyword arguments (`validation_data`,
            `validation_split`).
        floor: the smallest batch size allowed.
    """
    _refuse_dicts(x, "x")
    if is_array(x):
        if y is None:
            raise ValueError(
                "`y` is missing: with images given as an array, pass the "
                "labels as `y` (class indices or one-hot). Received: "
                "y=None"
            )
        x = np.asarray(x)
        batch = batch_size or 32
        _check_batch_size(batch, floor, "`batch_size`")
        if len(x) < batch:
            raise ValueError(
                f"The training set has {len(x)} samples, fewer than one "
                f"batch (batch_size={batch}): the entropy estimator needs "
                "full batches of a fixed size."
            )
        kept = training_samples(len(x), kwargs)
        if kept < batch:
            raise ValueError(
                f"validation_split={kwargs['validation_split']} leaves "
                f"{kept} training samples of {len(x)}, fewer than one "
                f"batch (batch_size={batch}). Use a smaller split or batch."
            )
        _check_batch(model, x, y, "x")
    else:
        first = _first_batch(x, "x")
        if first is not None:
            _check_batch_size(len(first[0]), floor, "The first batch of `x`")
            _check_batch(model, first[0], first[1], "x")
    validation_data = kwargs.get("validation_data")
    if validation_data is None:
        return
    if isinstance(validation_data, (tuple, list)):
        _refuse_dicts(validation_data, "validation_data")
        if len(validation_data) >= 2:
            _check_batch(
                model,
                validation_data[0],
                validation_data[1],
                "validation_data",
            )
        return
    first = _first_batch(validation_data, "validation_data")
    if first is not None:
        _check_batch(model, first[0], first[1], "validation_data")


def training_samples(num_samples, kwargs):
    """How many of `num_samples` array samples `fit` trains on.

    All but the last `validation_split` fraction, as in Keras (a given
    `validation_data` overrides the split).
    """
    split = kwargs.get("validation_split")
    if split and kwargs.get("validation_data") is None:
        return int(num_samples * (1.0 - split))
    return num_samples


def _first_batch(data, name):
    """`(images, labels)` of a dataset's first batch, or None."""
    element = None
    try:
        if hasattr(data, "element_spec"):
            for element in data.take(1):
                element = keras.tree.map_structure(np.asarray, element)
        elif isinstance(data, keras.utils.PyDataset):
            element = data[0]
    except (TypeError, IndexError):
        return None
    _refuse_dicts(element, name)
    if isinstance(element, (tuple, list)) and len(element) >= 2:
        return np.asarray(element[0]), np.asarray(element[1])
    return None


def check_labels_in_step(y, logits, counter):
    """In the compiled step: labels in range, else a NaN loss and a count.

    The first batch of a dataset is checked before training; this checks
    every batch, in the step (a comparison and a sum over the labels). An
    out-of-range class index would train silently on JAX and raise a raw
    backend error on TensorFlow and torch; here it is replaced by 0 (so
    the loss is computable everywhere), counted in `counter` (a
    `keras.metrics.Sum` named `LABEL_ERRORS`) and turns the loss to NaN,
    which `NaNGuard` reports as out-of-range labels.

    Args:
        y: the batch's labels (class indices, or one-hot: not checked).
        logits: the logits the labels are compared with.
        counter: the `keras.metrics.Sum` of out-of-range labels.

    Returns:
        `(labels, penalty)`: the labels with out-of-range ones replaced by
        0, and a float32 scalar to add to the loss (0, or NaN).
    """
    zero = ops.zeros((), dtype="float32")
    if y is None or not _is_integer_labels(y, logits):
        return y, zero
    num_classes = logits.shape[-1]
    wrong = ops.logical_or(ops.less(y, 0), ops.greater_equal(y, num_classes))
    count = ops.sum(ops.cast(wrong, "float32"))
    counter.update_state(count)
    labels = ops.where(wrong, ops.zeros_like(y), y)
    penalty = ops.where(ops.greater(count, 0), float("nan"), zero)
    return labels, penalty


def check_save_path(filepath):
    """Refuses the legacy HDF5 format, which cannot load the model back."""
    path = str(filepath) if isinstance(filepath, (str, os.PathLike)) else ""
    if path.lower().endswith((".h5", ".hdf5")):
        raise ValueError(
            "A GreedyLayerwiseModel cannot be saved in the legacy HDF5 "
            "format: the file is written but no backend can load it back. "
            "Save to a `.keras` file (`model.save('model.keras')`), or "
            "only the weights (`model.save_weights('model.weights.h5')`). "
            f"Received: filepath={filepath!r}"
        )


class NaNGuard(keras.callbacks.Callback):
    """Stops a block whose loss becomes NaN or Inf, naming block and term.

    Added by `GreedyLayerwiseModel.fit`: raises `FloatingPointError` with the
    block, epoch, batch and the value of each reported term, instead of
    letting training continue into a NaN model. When the step counted
    out-of-range labels (`check_labels_in_step`), raises a ValueError
    saying so instead.

    Args:
        block_label: the stage's name in messages (`"Block 2/5 (...)"`).
        label_errors: optional `keras.metrics.Sum` of the out-of-range
            labels counted in the step.
        num_classes: the number of classes, for the label message.
    """

    def __init__(self, block_label, label_errors=None, num_classes=None):
        super().__init__()
        self.block_label = block_label
        self.label_errors = label_errors
        self.num_classes = num_classes
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check_labels(self, batch, which):
        if self.label_errors is None:
            return
        self.model  # noqa: B018 (on JAX, syncs the metrics' state)
        count = int(float(self.label_errors.result()))
        if count:
            top = self.num_classes - 1 if self.num_classes else "num_classes-1"
            raise ValueError(
                f"{self.block_label}: {which} labels out of range "
                f"[0, {top}] at epoch {self.epoch + 1}, batch {batch + 1} "
                f"({count} label(s) since the epoch began). Only the first "
                "batch of a dataset is checked before training: check "
                "the labels of every batch."
            )

    def on_test_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._check_labels(batch, "validation")

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        self._check_labels(batch, "training")
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


def stage_layers(model):
    """`(name, layer)` of the blocks and heads the current stage trains."""
    layers = []
    for index, block in enumerate(model.blocks):
        if block.trainable:
            layers.append((f"block {index + 1}", block))
    for index, head in enumerate(model.training_heads):
        if head.trainable:
            name = (
                "head"
                if index == model.num_blocks - 1
                else f"auxiliary_heads[{index}]"
            )
            layers.append((name, head))
    return layers


class WeightGuard(keras.callbacks.Callback):
    """Stops a stage whose trained layers end an epoch with non-finite values.

    A step can overflow the weights while the loss it logs (computed before
    the update) is still finite, which `NaNGuard` cannot see: the next
    block would then train on dead features. At every epoch's end this
    checks every variable (weights and batch-normalization statistics) of
    the blocks and heads being trained, and raises `FloatingPointError`
    naming the block and the variable's path. `GreedyLayerwiseModel.fit`
    runs it before the checkpoint callback, so the checkpoint of the last
    good epoch is kept.

    Args:
        block_label: the stage's name in messages.
        layers: list of `(name, layer)`, the layers to check (see
            `stage_layers`).
    """

    def __init__(self, block_label, layers):
        super().__init__()
        self.block_label = block_label
        self.layers = list(layers)

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018 (on JAX, syncs the model's state)
        self.check(epoch)

    def check(self, epoch=None):
        """Raises `FloatingPointError` at the first non-finite variable."""
        for name, layer in self.layers:
            for variable in layer.variables:
                if "float" not in keras.backend.standardize_dtype(
                    variable.dtype
                ):
                    continue
                value = np.asarray(keras.ops.convert_to_numpy(variable))
                finite = np.isfinite(value)
                if finite.all():
                    continue
                when = f" after epoch {epoch + 1}" if epoch is not None else ""
                raise FloatingPointError(
                    f"{self.block_label}: {name}'s variable "
                    f"`{variable.path}` holds {value.size - finite.sum()} "
                    f"non-finite value(s) (of {value.size}){when}, though "
                    "every logged loss was finite: a step overflowed the "
                    "weights. The stage is stopped (a checkpoint keeps the "
                    "last good epoch). Lower the learning rate or clip "
                    "the gradients (`clipnorm`)."
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

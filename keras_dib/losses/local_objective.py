"""The local-objective protocol: an objective returns its named terms."""

import keras
from keras import ops

from keras_dib import _compat
from keras_dib.losses import _common


def _is_integer_labels(y_true, logits):
    """True for class indices, False for one-hot labels."""
    dtype = keras.backend.standardize_dtype(y_true.dtype)
    if (
        len(y_true.shape) == len(logits.shape)
        and y_true.shape[-1] == (logits.shape[-1])
    ):
        if y_true.shape[-1] != 1 or "int" not in dtype:
            return False
    return True


def cross_entropy_from_logits(y_true, logits, label_smoothing=0.0):
    """Per-sample cross-entropy for integer or one-hot labels, in float32."""
    logits = ops.cast(logits, "float32")
    if _is_integer_labels(y_true, logits):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        if label_smoothing:
            y_true = ops.one_hot(y_true, logits.shape[-1])
        else:
            return ops.sparse_categorical_crossentropy(
                y_true, logits, from_logits=True
            )
    y_true = ops.cast(y_true, "float32")
    if label_smoothing:
        num_classes = logits.shape[-1]
        y_true = y_true * (1.0 - label_smoothing) + (
            label_smoothing / num_classes
        )
    return ops.categorical_crossentropy(y_true, logits, from_logits=True)


@keras.saving.register_keras_serializable(package="keras_dib")
class LocalObjective(keras.losses.Loss):
    """Base class of the local objectives used to train one block.

    A local objective names its terms. For one block, `compute_terms`
    returns a dict of float32 scalars (for example `{"cross_entropy": ...,
    "compression": ...}`) and `term_weights` the coefficient of each in
    the total that is minimised, `sum_k term_weights[k] * terms[k]`.
    `keras_dib.GreedyLayerwiseModel.compute_loss` sums the weighted terms
    over the trained blocks and reports each term as a metric of its
    name; it knows no term by name, so an objective with a new term is
    one subclass and touches no other file.

    This base class alone is the cross-entropy-only objective (`beta=0`):
    the auxiliary head's cross-entropy (`call(y_true, y_pred)` is the
    per-sample cross-entropy, so it also works as a plain Keras loss),
    plus `beta` times an optional batch-level regulariser of the block's
    representation, `regularization(...)`, reported as
    `regularization_name`. Subclasses override either `regularization`
    (one extra term) or `compute_terms` and `term_weights` (any terms),
    and `get_config`.

    With `stop_head_gradient = True` (a class or instance attribute) the
    auxiliary head reads the block's output under `stop_gradient`: the
    cross-entropy then trains the head only, and the other terms train the
    block.

    Args:
        beta: float >= 0, weight of the regulariser. Defaults to 0.
        label_smoothing: float in [0, 1), applied to the cross-entropy.
            Defaults to 0.
        name: name of the loss.
        reduction: Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        dtype: dtype of the loss computations. Defaults to float32.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.LocalObjective(),  # greedy cross-entropy
    ...     metrics=["accuracy"],
    ... )

    An objective with a term of its own:

    >>> @keras.saving.register_keras_serializable(package="my_package")
    ... class FeatureNorm(keras_dib.losses.LocalObjective):
    ...     def compute_terms(self, y_true, logits, **block):
    ...         terms = super().compute_terms(y_true, logits, **block)
    ...         features = ops.cast(block["features"], "float32")
    ...         terms["feature_norm"] = ops.mean(ops.square(features))
    ...         return terms
    ...     @property
    ...     def term_weights(self):
    ...         return {**super().term_weights, "feature_norm": 1e-3}
    """

    # The auxiliary head reads the block's output without gradient when
    # True (the cross-entropy trains the head alone).
    stop_head_gradient = False

    def __init__(
        self,
        beta=0.0,
        label_smoothing=0.0,
        name="local_objective",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        _common.check_non_negative("beta", beta)
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, (int, float))
            or not 0 <= label_smoothing < 1
        ):
            raise ValueError(
                "`label_smoothing` should be a number in [0, 1). "
                f"Received: label_smoothing={label_smoothing!r}"
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)

    @property
    def uses_regularization(self):
        """Whether `regularization` contributes (`beta > 0`)."""
        return self.beta > 0

    @property
    def regularization_name(self):
        """Name under which the regulariser is reported as a metric."""
        return "regularization"

    @property
    def term_weights(self):
        """The coefficient of each term of `compute_terms` in the total.

        Returns:
            A dict `{term_name: float}` with the same keys as the dict
            that `compute_terms` returns.
        """
        weights = {"cross_entropy": 1.0}
        if self.uses_regularization:
            weights[self.regularization_name] = self.beta
        return weights

    def compute_terms(
        self,
        y_true,
        logits,
        features=None,
        block_inputs=None,
        inputs=None,
        sample_weight=None,
    ):
        """The objective's named terms for one block's batch.

        Args:
            y_true: the labels of the batch (class indices or one-hot).
            logits: the block's auxiliary head's logits.
            features: the block's output batch `T_l`.
            block_inputs: the block's input batch `T_{l-1}` (no gradient).
            inputs: the network's input batch `X`.
            sample_weight: optional per-sample weights (cross-entropy).

        Returns:
            A dict `{term_name: float32 scalar}` with the keys of
            `term_weights`. Values are per-replica batch values: the model
            scales the weighted total for `tf.distribute` once.
        """
        terms = {
            "cross_entropy": self.cross_entropy(y_true, logits, sample_weight)
        }
        if self.uses_regularization:
            terms[self.regularization_name] = ops.cast(
                self.regularization(inputs, block_inputs, features, y_true),
                "float32",
            )
        return terms

    def cross_entropy(self, y_true, logits, sample_weight=None):
        """The reduced cross-entropy of `logits`, float32, not scaled.

        Keras divides a loss by the number of `tf.distribute` replicas;
        this value is the replica's own batch mean.
        """
        value = ops.cast(
            self(y_true, logits, sample_weight=sample_weight), "float32"
        )
        return _compat.unscale_loss_for_distribution(value)

    def call(self, y_true, y_pred):
        return cross_entropy_from_logits(
            y_true, y_pred, label_smoothing=self.label_smoothing
        )

    def regularization(self, inputs, block_inputs, features, y_true):
        """Batch-level regulariser of one block's representation.

        Args:
            inputs: the network's input batch `X`.
            block_inputs: the block's input batch `T_{l-1}` (no gradient).
            features: the block's output batch `T_l`.
            y_true: the labels of the batch.

        Returns:
            A float32 scalar tensor (before multiplication by `beta`).
        """
        return ops.zeros((), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta": self.beta, "label_smoothing": self.label_smoothing}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_dib")
class KerasLossObjective(LocalObjective):
    """A plain Keras loss on logits, as a one-term local objective.

    `GreedyLayerwiseModel` wraps a compiled `keras.losses.Loss` that is
    not a `LocalObjective` in this class; its single term is reported as
    `cross_entropy`.

    Args:
        loss: a `keras.losses.Loss` that takes logits.
    """

    def __init__(self, loss):
        if isinstance(loss, LocalObjective) or not isinstance(
            loss, keras.losses.Loss
        ):
            raise ValueError(
                "`loss` should be a keras.losses.Loss that is not a "
                f"LocalObjective. Received: loss={loss!r}"
            )
        if loss.get_config().get("from_logits") is False:
            raise ValueError(
                "GreedyLayerwiseModel's heads output logits, but the "
                f"compiled loss {type(loss).__name__} expects "
                "probabilities (from_logits=False): it would train on "
                "logits as if they were probabilities. Pass "
                f"{type(loss).__name__}(from_logits=True), or a "
                "keras_dib.losses.LocalObjective such as "
                "keras_dib.losses.DIB(). Received: "
                f"loss={loss!r} with from_logits=False"
            )
        super().__init__(name=loss.name, reduction=loss.reduction)
        self.loss = loss

    def cross_entropy(self, y_true, logits, sample_weight=None):
        value = ops.cast(
            self.loss(y_true, logits, sample_weight=sample_weight), "float32"
        )
        return _compat.unscale_loss_for_distribution(value)

    def call(self, y_true, y_pred):
        return self.loss.call(y_true, y_pred)

    def get_config(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["loss"]))


def get(loss):
    """The compiled loss as a `LocalObjective`.

    A `LocalObjective` is returned as it is; any other `keras.losses.Loss`
    is wrapped in a `KerasLossObjective` (which refuses losses on
    probabilities).

    Raises:
        ValueError: for anything that is not a `keras.losses.Loss`.
    """
    if isinstance(loss, LocalObjective):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return KerasLossObjective(loss)
    raise ValueError(
        "GreedyLayerwiseModel trains blocks on logits and needs a loss "
        "object in `compile()`: a keras_dib.losses.LocalObjective such "
        "as keras_dib.losses.DIB(alpha=1.01, beta=0.01), or a "
        "keras.losses.Loss that takes logits (from_logits=True). "
        f"Received: loss={loss!r}"
    )

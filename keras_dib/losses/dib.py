"""Local objectives for greedy layer-wise training."""

import keras
from keras import ops

from keras_dib.losses import _common
from keras_dib.ops import kernels
from keras_dib.ops import renyi

COMPRESSION_TARGETS = ("input", "block_input", "entropy")


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

    A local objective is a Keras loss on the auxiliary head's logits
    (`call(y_true, y_pred)`: per-sample cross-entropy, so it also works as a
    plain Keras loss) plus an optional batch-level regulariser on the block's
    representation, `regularization(...)`, weighted by `beta`. The
    `keras_dib.GreedyLayerwiseModel` calls both from `compute_loss`.

    Subclasses override `regularization` (and `get_config`). This base class
    alone is the cross-entropy-only objective (`beta=0`).

    Args:
        beta: float >= 0, weight of the regulariser. Defaults to 0.
        label_smoothing: float in [0, 1), applied to the cross-entropy.
            Defaults to 0.
        name: name of the loss.
        reduction: Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        dtype: dtype of the loss computations. Defaults to float32.

    Example:

    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.LocalObjective(),  # greedy cross-entropy
    ...     metrics=["accuracy"],
    ... )
    """

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
class DIB(LocalObjective):
    """Deterministic information bottleneck objective for one block.

    `L = CE(y, aux(T_l)) + beta * I_alpha(C; T_l)`, where `CE` is the
    cross-entropy of the block's auxiliary head, `I_alpha` the matrix-based
    Renyi mutual information of order `alpha` (Gaussian Gram matrices over
    the batch), and the compression target `C` is selectable:

    - `"input"` (default, Deep DIB): the network input `X`;
    - `"block_input"`: the block's own input `T_{l-1}`;
    - `"entropy"`: no target; the term is the entropy `H_alpha(T_l)`.

    The Gram matrix of the target carries no gradient. With `beta=0` this is
    the plain greedy cross-entropy objective (Decoupled Greedy Learning
    style). The entropy maths run in float32, also under mixed precision.
    For `alpha=2` (and integer orders up to 4) no eigendecomposition is used.

    Args:
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01 (Deep DIB).
        beta: weight of the compression term, >= 0. Defaults to 0.01.
        compression: `"input"`, `"block_input"` or `"entropy"`.
            Defaults to `"input"`.
        sigma: kernel width of the representation's Gram matrix: a positive
            number, or a rule name for `keras_dib.ops.kernel_width`
            (`"knn"`, default, or `"silverman"`), applied per batch.
        target_sigma: kernel width of the target's Gram matrix, same
            choices. Defaults to `"knn"`.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        label_smoothing: float in [0, 1). Defaults to 0.
        name: name of the loss. Defaults to `"dib"`.
        reduction: Keras loss reduction of the cross-entropy.
        dtype: dtype of the loss. Defaults to float32.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=16)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.DIB(alpha=1.01, beta=0.01),
    ...     metrics=["accuracy"],
    ... )

    References:
        - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
          Matrix-based Entropy Functional", ICASSP 2021.
          https://arxiv.org/abs/2102.00533
        - Sanchez Giraldo, Rao & Principe, "Measures of Entropy From Data
          Using Infinitely Divisible Kernels", 2015.
          https://arxiv.org/abs/1211.2459
        - Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of
          CNNs", ICML 2020. https://arxiv.org/abs/1901.08164
    """

    def __init__(
        self,
        alpha=1.01,
        beta=0.01,
        compression="input",
        sigma="knn",
        target_sigma="knn",
        num_neighbors=10,
        label_smoothing=0.0,
        name="dib",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        renyi._check_alpha(alpha)
        _common.check_compression(compression, COMPRESSION_TARGETS)
        _common.check_kernel_arguments(sigma, target_sigma, num_neighbors)
        super().__init__(
            beta=beta,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )
        self.alpha = float(alpha)
        self.compression = compression
        self.sigma = sigma
        self.target_sigma = target_sigma
        self.num_neighbors = num_neighbors

    @property
    def regularization_name(self):
        if self.compression == "entropy":
            return "entropy"
        return "compression"

    def regularization(self, inputs, block_inputs, features, y_true):
        gram_t = kernels.gaussian_gram(
            features, sigma=self.sigma, num_neighbors=self.num_neighbors
        )
        if self.compression == "entropy":
            return renyi.renyi_entropy(gram_t, alpha=self.alpha)
        gram_c = _common.target_gram(
            inputs if self.compression == "input" else block_inputs,
            self.target_sigma,
            self.num_neighbors,
        )
        # H(C) has no gradient: it is computed for the reported value only.
        entropy_c = ops.stop_gradient(
            renyi.renyi_entropy(gram_c, alpha=self.alpha)
        )
        entropy_t = renyi.renyi_entropy(gram_t, alpha=self.alpha)
        joint = renyi.joint_renyi_entropy([gram_c, gram_t], alpha=self.alpha)
        return entropy_c + entropy_t - joint

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "compression": self.compression,
                "sigma": self.sigma,
                "target_sigma": self.target_sigma,
                "num_neighbors": self.num_neighbors,
            }
        )
        return config

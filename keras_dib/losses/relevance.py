"""Relevance objectives: matrix-based `I_alpha(T; Y)`, and PredSim.

`InformationBottleneck` trains a block on information quantities alone,
`RelevanceDIB` adds the label relevance to the DIB objective, and
`SimilarityMatching` is the PredSim baseline of Nokland & Eidnes (2019).
"""

import math
import numbers

import keras
from keras import ops

from keras_dib.losses import _common
from keras_dib.losses.local_objective import LocalObjective
from keras_dib.losses.local_objective import _is_integer_labels
from keras_dib.ops import kernels
from keras_dib.ops import renyi

LABEL_KERNELS = ("class_equality", "gaussian")
COMPRESSION_TARGETS = ("input", "block_input")
# PredSim's similarity matrix: the authors' epsilon added to the norm of
# each centred row, and a floor under its squared norm (a constant row, a
# dead ReLU sample, say, would give sqrt(0), whose derivative is infinite).
_NORM_EPSILON = 1e-8
_SQUARED_NORM_FLOOR = 1e-24
_VARIANCE_FLOOR = 1e-12


def _check_positive(name, value):
    """Raises unless `value` is a finite real number > 0; returns a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` should be a finite number > 0. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def one_hot_labels(y_true, logits):
    """Float32 one-hot labels of a batch, without gradient.

    Args:
        y_true: integer class indices of shape `(n,)` or `(n, 1)`, or
            one-hot (or soft) labels of shape `(n, num_classes)`.
        logits: the logits of the batch, whose last dimension is the
            number of classes.

    Returns:
        A float32 tensor of shape `(n, num_classes)`.
    """
    y_true = ops.convert_to_tensor(y_true)
    if _is_integer_labels(y_true, logits):
        indices = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        labels = ops.one_hot(indices, logits.shape[-1], dtype="float32")
    else:
        labels = ops.cast(y_true, "float32")
    return ops.stop_gradient(labels)


def similarity_matrix(x, feature_map_std=False):
    """PredSim's adjusted cosine similarity matrix of a batch, in float32.

    Every axis after the first is flattened; each sample's vector is
    centred on its own mean over the features and scaled to unit norm
    (`x_c / (1e-8 + |x_c|)`), and `S_ij` is the dot product of samples `i`
    and `j`, clipped to `[-1, 1]`: the correlation between the two
    samples' feature vectors, as `similarity_matrix` in the authors' code.

    Args:
        x: tensor of shape `(n, ...)`.
        feature_map_std: whether a feature map (rank 4, in
            `keras.config.image_data_format()`) with more than 3 channels
            and a height above 1 is first reduced to the standard deviation
            of each channel over the spatial positions, as the authors' code
            does by default (`--no-similarity-std` turns it off). Defaults
            to False: the feature map is flattened.

    Returns:
        A float32 tensor of shape `(n, n)`.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if feature_map_std and len(x.shape) == 4:
        if keras.config.image_data_format() == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        height, width, channels = x.shape[1:]
        if channels > 3 and height > 1:
            positions = height * width
            x = ops.reshape(x, (-1, positions, channels))
            deviations = x - ops.mean(x, axis=1, keepdims=True)
            # The unbiased variance, as torch.std.
            variance = ops.sum(ops.square(deviations), axis=1) / (positions - 1)
            x = ops.sqrt(ops.maximum(variance, _VARIANCE_FLOOR))
    x = kernels._flatten_batch(x)
    centred = x - ops.mean(x, axis=1, keepdims=True)
    squared_norm = ops.sum(ops.square(centred), axis=1, keepdims=True)
    norm = ops.sqrt(ops.maximum(squared_norm, _SQUARED_NORM_FLOOR))
    normalized = centred / (_NORM_EPSILON + norm)
    return ops.clip(
        ops.matmul(normalized, ops.transpose(normalized)), -1.0, 1.0
    )


class _RenyiRelevanceObjective(LocalObjective):
    """Shared maths of the objectives with a matrix-based `I_alpha(T; Y)`.

    Subclasses set `_relevance_required` and the defaults, and list their
    terms in `term_weights`.
    """

    # Whether `gamma` must be > 0 (the relevance is the block's only
    # label signal).
    _relevance_required = False

    def __init__(
        self,
        alpha,
        beta,
        gamma,
        compression,
        sigma,
        target_sigma,
        label_kernel,
        label_sigma,
        num_neighbors,
        label_smoothing,
        name,
        reduction,
        dtype,
    ):
        renyi._check_alpha(alpha)
        gamma = _common.check_non_negative("gamma", gamma)
        if self._relevance_required and gamma == 0:
            raise ValueError(
                f"`gamma` should be a finite number > 0: with gamma=0 "
                f"{type(self).__name__} gives the block no label signal "
                f"(its cross-entropy trains the head only). "
                f"Received: gamma={gamma!r}"
            )
        _common.check_compression(compression, COMPRESSION_TARGETS)
        _common.check_kernel_arguments(sigma, target_sigma, num_neighbors)
        if label_kernel not in LABEL_KERNELS:
            raise ValueError(
                f"`label_kernel` should be one of {LABEL_KERNELS}. "
                f"Received: label_kernel={label_kernel!r}"
            )
        label_sigma = _check_positive("label_sigma", label_sigma)
        super().__init__(
            beta=beta,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )
        self.alpha = float(alpha)
        self.gamma = gamma
        self.compression = compression
        self.sigma = sigma
        self.target_sigma = target_sigma
        self.label_kernel = label_kernel
        self.label_sigma = label_sigma
        self.num_neighbors = num_neighbors

    def label_gram(self, y_true, logits):
        """The Gram matrix `K_Y` of the batch's labels, without gradient.

        `"class_equality"`: `K_Y[i, j] = 1` if `y_i == y_j`, else 0 (the
        linear kernel of one-hot labels, `keras_dib.ops.label_gram`);
        `"gaussian"`: `exp(-|y_i - y_j|^2 / (2 label_sigma^2))` on one-hot
        labels, i.e. `c + (1 - c) K_Y[i, j]` with `c = exp(-1 /
        label_sigma^2)`.
        """
        labels = one_hot_labels(y_true, logits)
        if self.label_kernel == "gaussian":
            gram = kernels.gaussian_gram(labels, sigma=self.label_sigma)
        else:
            gram = kernels.label_gram(labels)
        return ops.stop_gradient(gram)

    def information_terms(self, y_true, logits, features, block_inputs, inputs):
        """`{"relevance": I(T; Y), "compression": I(C; T)}` in bits.

        Only the terms this objective uses are computed; `H_alpha(T)` is
        computed once for both.
        """
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs the block's output "
                "`features`. Received: features=None"
            )
        gram_t = kernels.gaussian_gram(
            features, sigma=self.sigma, num_neighbors=self.num_neighbors
        )
        entropy_t = renyi.renyi_entropy(gram_t, alpha=self.alpha)
        terms = {}
        if self.gamma > 0:
            gram_y = self.label_gram(y_true, logits)
            # H(Y) has no gradient: it is computed for the reported value.
            entropy_y = ops.stop_gradient(
                renyi.renyi_entropy(gram_y, alpha=self.alpha)
            )
            joint = renyi.joint_renyi_entropy(
                [gram_y, gram_t], alpha=self.alpha
            )
            terms["relevance"] = entropy_t + entropy_y - joint
        if self.beta > 0:
            name = "inputs" if self.compression == "input" else "block_inputs"
            target = inputs if name == "inputs" else block_inputs
            if target is None:
                raise ValueError(
                    f"{type(self).__name__}(compression="
                    f"{self.compression!r}) needs `{name}` for its "
                    f"compression term. Received: {name}=None"
                )
            gram_c = _common.target_gram(
                target, self.target_sigma, self.num_neighbors
            )
            entropy_c = ops.stop_gradient(
                renyi.renyi_entropy(gram_c, alpha=self.alpha)
            )
            joint = renyi.joint_renyi_entropy(
                [gram_c, gram_t], alpha=self.alpha
            )
            terms["compression"] = entropy_c + entropy_t - joint
        return terms

    def compute_terms(
        self,
        y_true,
        logits,
        features=None,
        block_inputs=None,
        inputs=None,
        sample_weight=None,
    ):
        terms = {
            "cross_entropy": self.cross_entropy(y_true, logits, sample_weight)
        }
        terms.update(
            self.information_terms(
                y_true, logits, features, block_inputs, inputs
            )
        )
        # In the order of `term_weights` (the order of the metrics).
        return {
            name: ops.cast(terms[name], "float32") for name in self.term_weights
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "gamma": self.gamma,
                "compression": self.compression,
                "sigma": self.sigma,
                "target_sigma": self.target_sigma,
                "label_kernel": self.label_kernel,
                "label_sigma": self.label_sigma,
                "num_neighbors": self.num_neighbors,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_dib")
class InformationBottleneck(_RenyiRelevanceObjective):
    """Information-only bottleneck objective: no cross-entropy in the block.

    The block is trained on

    `L_block = -gamma * I_alpha(T_l; Y) + beta * I_alpha(C; T_l)`,

    the information-only reading of Deep DIB (Yu, Yu & Principe 2021),
    where the paper's cross-entropy, a variational surrogate of
    `-I(T; Y)`, is replaced by the matrix-based Renyi mutual information
    itself. `I_alpha(A; B) = S_alpha(A) + S_alpha(B) - S_alpha(A, B)` is
    estimated over the batch from trace-normalised Gram matrices (joint
    entropy of the Hadamard product; Sanchez Giraldo et al. 2015), in bits
    and in float32: a Gaussian kernel on `T_l`, a label kernel `K_Y` on
    `Y` and a Gaussian kernel on the compression target `C` (the network
    input `X` by default). `K_Y` and the Gram matrix of `C` carry no
    gradient.

    The block's auxiliary classifier is still trained, by its
    cross-entropy on the block's output under `stop_gradient`
    (`stop_head_gradient = True`): no cross-entropy gradient reaches the
    block, and the head exists for inference and per-block accuracy. The
    minimised total is therefore `CE + L_block`, where each part trains
    its own variables.

    Terms (`compute_terms`, reported as metrics): `cross_entropy`
    (weight 1, trains the head only), `relevance` (`I_alpha(T_l; Y)` in
    bits, weight `-gamma`) and `compression` (`I_alpha(C; T_l)` in bits,
    weight `beta`; omitted when `beta == 0`).

    Args:
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01 (Deep DIB).
        beta: weight of the compression term, >= 0. Defaults to 0.01.
        gamma: weight of the relevance term, > 0 (it is the block's only
            label signal). Defaults to 1.
        compression: the target `C`: `"input"` (default, the network input
            `X`, as Deep DIB) or `"block_input"` (the block's input
            `T_{l-1}`).
        sigma: kernel width of the representation's Gram matrix: a positive
            number, or a rule name for `keras_dib.ops.kernel_width`
            (`"knn"`, default, or `"silverman"`), applied per batch.
        target_sigma: kernel width of the target's Gram matrix, same
            choices. Defaults to `"knn"`.
        label_kernel: `"class_equality"` (default: `K_Y[i, j] = 1` if
            `y_i == y_j`, else 0, the linear kernel of one-hot labels, as
            `keras_dib.ops.label_gram`) or `"gaussian"` (a Gaussian kernel
            of width `label_sigma` on one-hot labels).
        label_sigma: width of the Gaussian label kernel, a number > 0.
            Defaults to 1. Used with `label_kernel="gaussian"` only.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        label_smoothing: float in [0, 1), for the head's cross-entropy.
            Defaults to 0.
        name: name of the loss. Defaults to `"information_bottleneck"`.
        reduction: Keras loss reduction of the cross-entropy.
        dtype: dtype of the loss. Defaults to float32.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.InformationBottleneck(
    ...         alpha=1.01, beta=0.01, gamma=1.0
    ...     ),
    ...     metrics=["accuracy"],
    ... )

    References:
        - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
          Matrix-based Entropy Functional", ICASSP 2021.
          https://arxiv.org/abs/2102.00533
        - Sanchez Giraldo, Rao & Principe, "Measures of Entropy From Data
          Using Infinitely Divisible Kernels", 2015.
          https://arxiv.org/abs/1211.2459
    """

    stop_head_gradient = True
    _relevance_required = True

    def __init__(
        self,
        alpha=1.01,
        beta=0.01,
        gamma=1.0,
        compression="input",
        sigma="knn",
        target_sigma="knn",
        label_kernel="class_equality",
        label_sigma=1.0,
        num_neighbors=10,
        label_smoothing=0.0,
        name="information_bottleneck",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        super().__init__(
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            compression=compression,
            sigma=sigma,
            target_sigma=target_sigma,
            label_kernel=label_kernel,
            label_sigma=label_sigma,
            num_neighbors=num_neighbors,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    @property
    def term_weights(self):
        weights = {"cross_entropy": 1.0, "relevance": -self.gamma}
        if self.beta > 0:
            weights["compression"] = self.beta
        return weights


@keras.saving.register_keras_serializable(package="keras_dib")
class RelevanceDIB(_RenyiRelevanceObjective):
    """DIB objective with an explicit relevance term `I_alpha(T; Y)`.

    `L = CE(y, aux(T_l)) + beta * I_alpha(C; T_l) - gamma * I_alpha(T_l; Y)`

    a mix of `keras_dib.losses.DIB` (the cross-entropy of the block's
    auxiliary head plus the compression term) and
    `keras_dib.losses.InformationBottleneck` (the matrix-based relevance):
    the cross-entropy trains the block and its head, as in DIB, and the
    relevance term pulls the Gram matrix of `T_l` towards the label
    structure. `I_alpha` is the matrix-based Renyi mutual information of
    order `alpha`, in bits and in float32 (trace-normalised Gram matrices,
    joint entropy of their Hadamard product), with a Gaussian kernel on
    `T_l`, a label kernel `K_Y` on `Y` and a Gaussian kernel on the
    compression target `C` (the network input `X` by default); `K_Y` and
    the Gram matrix of `C` carry no gradient.

    Terms (`compute_terms`, reported as metrics): `cross_entropy`
    (weight 1), `compression` (weight `beta`, omitted when `beta == 0`)
    and `relevance` (weight `-gamma`, omitted when `gamma == 0`). With
    `gamma=0` this is `keras_dib.losses.DIB`.

    The defaults (`alpha=1.01`, `beta=0.01` as Deep DIB, `gamma=0.1`) are
    starting points, not tuned values: `I_alpha(T; Y)` lies in
    `[0, log2(num_classes)]` bits while the cross-entropy starts near
    `ln(num_classes)` nats, and `gamma=0.1` keeps the relevance a fraction
    of the total. Screen `beta` and `gamma` for your data.

    Args:
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01 (Deep DIB).
        beta: weight of the compression term, >= 0. Defaults to 0.01.
        gamma: weight of the relevance term, >= 0. Defaults to 0.1.
        compression: the target `C`: `"input"` (default, the network input
            `X`) or `"block_input"` (the block's input `T_{l-1}`).
        sigma: kernel width of the representation's Gram matrix: a positive
            number, or a rule name for `keras_dib.ops.kernel_width`
            (`"knn"`, default, or `"silverman"`), applied per batch.
        target_sigma: kernel width of the target's Gram matrix, same
            choices. Defaults to `"knn"`.
        label_kernel: `"class_equality"` (default: `K_Y[i, j] = 1` if
            `y_i == y_j`, else 0, as `keras_dib.ops.label_gram`) or
            `"gaussian"` (a Gaussian kernel of width `label_sigma` on
            one-hot labels).
        label_sigma: width of the Gaussian label kernel, a number > 0.
            Defaults to 1. Used with `label_kernel="gaussian"` only.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.
        label_smoothing: float in [0, 1), for the cross-entropy. Defaults
            to 0.
        name: name of the loss. Defaults to `"relevance_dib"`.
        reduction: Keras loss reduction of the cross-entropy.
        dtype: dtype of the loss. Defaults to float32.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.RelevanceDIB(beta=0.01, gamma=0.1),
    ...     metrics=["accuracy"],
    ... )

    References:
        - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
          Matrix-based Entropy Functional", ICASSP 2021.
          https://arxiv.org/abs/2102.00533
        - Sanchez Giraldo, Rao & Principe, "Measures of Entropy From Data
          Using Infinitely Divisible Kernels", 2015.
          https://arxiv.org/abs/1211.2459
    """

    def __init__(
        self,
        alpha=1.01,
        beta=0.01,
        gamma=0.1,
        compression="input",
        sigma="knn",
        target_sigma="knn",
        label_kernel="class_equality",
        label_sigma=1.0,
        num_neighbors=10,
        label_smoothing=0.0,
        name="relevance_dib",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        super().__init__(
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            compression=compression,
            sigma=sigma,
            target_sigma=target_sigma,
            label_kernel=label_kernel,
            label_sigma=label_sigma,
            num_neighbors=num_neighbors,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    @property
    def term_weights(self):
        weights = {"cross_entropy": 1.0}
        if self.beta > 0:
            weights["compression"] = self.beta
        if self.gamma > 0:
            weights["relevance"] = -self.gamma
        return weights


@keras.saving.register_keras_serializable(package="keras_dib")
class SimilarityMatching(LocalObjective):
    """PredSim local objective (Nokland & Eidnes, 2019).

    `L = (1 - beta) * CE(y, aux(T_l)) + beta * mean((S(T_l) - S(Y))^2)`

    where `CE` is the cross-entropy of the block's auxiliary head (the
    paper's "pred" loss), `S(T_l)` the adjusted cosine similarity matrix of
    the block's output batch and `S(Y)` that of the one-hot labels (the
    "sim" loss, a mean over the `n x n` entries). As in the authors'
    `similarity_matrix` (github.com/anokland/local-loss), each sample's
    flattened vector is centred on its own mean over the features, not
    per feature over the batch, and scaled to unit norm, so `S` is the
    matrix of correlations between samples, clipped to `[-1, 1]` (see
    `similarity_matrix` in this module). `S(Y)` carries no gradient. Both
    terms train the block.

    Differences from the paper: the "sim" loss is computed on the block's
    output itself, whereas the paper feeds it through an extra trained
    3x3 convolution first (its back-propagation-free variant drops that
    convolution too); the "pred" head is the block's auxiliary head of
    `keras_dib.GreedyLayerwiseModel`. The authors' code reduces feature
    maps with more than 3 channels to the per-channel standard deviation
    over spatial positions before `S`; that is `feature_map_std=True`
    here, off by default (the feature map is flattened).

    Terms (`compute_terms`, reported as metrics): `cross_entropy`
    (weight `1 - beta`) and `similarity` (weight `beta`, omitted when
    `beta == 0`).

    Args:
        beta: weight of the similarity-matching loss, in `[0, 1)` (at 1
            no cross-entropy would train the heads). Defaults to 0.99, the
            paper's value.
        feature_map_std: whether rank-4 feature maps are reduced to the
            per-channel standard deviation over spatial positions before
            the similarity matrix, as the authors' code does. Defaults to
            False.
        label_smoothing: float in [0, 1), for the cross-entropy. Defaults
            to 0.
        name: name of the loss. Defaults to `"similarity_matching"`.
        reduction: Keras loss reduction of the cross-entropy.
        dtype: dtype of the loss. Defaults to float32.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.SimilarityMatching(beta=0.99),
    ...     metrics=["accuracy"],
    ... )

    References:
        - Nokland & Eidnes, "Training Neural Networks with Local Error
          Signals", ICML 2019. https://arxiv.org/abs/1901.06656
    """

    def __init__(
        self,
        beta=0.99,
        feature_map_std=False,
        label_smoothing=0.0,
        name="similarity_matching",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        beta = _common.check_non_negative("beta", beta)
        if beta >= 1:
            raise ValueError(
                "`beta` should be a number in [0, 1): with beta=1 no "
                "cross-entropy trains the auxiliary heads or the "
                f"classifier. Received: beta={beta!r}"
            )
        if not isinstance(feature_map_std, bool):
            raise ValueError(
                "`feature_map_std` should be a boolean. "
                f"Received: feature_map_std={feature_map_std!r}"
            )
        super().__init__(
            beta=beta,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )
        self.feature_map_std = feature_map_std

    @property
    def term_weights(self):
        weights = {"cross_entropy": 1.0 - self.beta}
        if self.beta > 0:
            weights["similarity"] = self.beta
        return weights

    def similarity(self, y_true, logits, features):
        """`mean((S(T) - S(Y))^2)` over the batch's `n x n` entries."""
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs the block's output "
                "`features`. Received: features=None"
            )
        similarity_t = similarity_matrix(
            features, feature_map_std=self.feature_map_std
        )
        similarity_y = ops.stop_gradient(
            similarity_matrix(one_hot_labels(y_true, logits))
        )
        return ops.mean(ops.square(similarity_t - similarity_y))

    def compute_terms(
        self,
        y_true,
        logits,
        features=None,
        block_inputs=None,
        inputs=None,
        sample_weight=None,
    ):
        terms = {
            "cross_entropy": self.cross_entropy(y_true, logits, sample_weight)
        }
        if self.beta > 0:
            terms["similarity"] = ops.cast(
                self.similarity(y_true, logits, features), "float32"
            )
        return terms

    def get_config(self):
        config = super().get_config()
        config["feature_map_std"] = self.feature_map_std
        return config

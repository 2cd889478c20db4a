"""Local objectives for greedy layer-wise training."""

import keras
from keras import ops

from keras_dib.losses import _common
from keras_dib.losses.local_objective import LocalObjective
from keras_dib.ops import kernels
from keras_dib.ops import renyi

COMPRESSION_TARGETS = ("input", "block_input", "entropy")


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

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
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


@keras.saving.register_keras_serializable(package="keras_dib")
class InformationPreservation(DIB):
    """Cross-entropy plus a reward for what the block keeps of its input.

    `L = CE(y, aux(T_l)) - weight * I_alpha(C; T_l)`: DIB's estimate of
    the mutual information with the target `C` (the network input by
    default), with the opposite sign. Greedy training tends to discard,
    in the early blocks, input information that only later blocks would
    have used (InfoPro's "information collapse", which it counters with a
    reconstruction loss); maximising `I_alpha(X; T_l)` is the same idea
    (InfoMax) with the matrix-based Renyi estimator, and no decoder.

    The term is reported as the metric `preservation` (the mutual
    information itself, a positive number that training increases); it
    enters the total with the weight `-weight`.

    Args:
        alpha: Renyi order, > 0 and != 1. Defaults to 1.01.
        weight: float >= 0, weight of `I_alpha(C; T_l)` in the reward.
            Defaults to 0.01.
        target: `"input"` (the network input `X`, default),
            `"block_input"` (the block's input) or `"entropy"` (no
            target: the term is the entropy `H_alpha(T_l)`).
        sigma, target_sigma, num_neighbors, label_smoothing, reduction,
            dtype: as in `DIB`.
        name: name of the loss. Defaults to `"information_preservation"`.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
    >>> model.compile(
    ...     optimizer="sgd",
    ...     loss=keras_dib.losses.InformationPreservation(weight=0.01),
    ...     metrics=["accuracy"],
    ... )

    References:
        - Wang, Ni, Song, Yang & Huang, "Revisiting Locally Supervised
          Learning: an Alternative to End-to-end Training", ICLR 2021.
          https://arxiv.org/abs/2101.10832
        - Linsker, "Self-organization in a perceptual network", Computer
          1988 (the InfoMax principle).
    """

    def __init__(
        self,
        alpha=1.01,
        weight=0.01,
        target="input",
        sigma="knn",
        target_sigma="knn",
        num_neighbors=10,
        label_smoothing=0.0,
        name="information_preservation",
        reduction="sum_over_batch_size",
        dtype="float32",
    ):
        _common.check_non_negative("weight", weight)
        _common.check_compression(target, COMPRESSION_TARGETS, name="target")
        super().__init__(
            alpha=alpha,
            beta=weight,
            compression=target,
            sigma=sigma,
            target_sigma=target_sigma,
            num_neighbors=num_neighbors,
            label_smoothing=label_smoothing,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    @property
    def weight(self):
        """The weight of the mutual information in the reward."""
        return self.beta

    @property
    def target(self):
        """What the block's information is measured against."""
        return self.compression

    @property
    def regularization_name(self):
        return "preservation"

    @property
    def term_weights(self):
        weights = {"cross_entropy": 1.0}
        if self.uses_regularization:
            weights["preservation"] = -self.beta
        return weights

    def get_config(self):
        config = super().get_config()
        config["weight"] = config.pop("beta")
        config["target"] = config.pop("compression")
        return config

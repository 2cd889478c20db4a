"""Hilbert-Schmidt independence criterion (HSIC) of Gram matrices.

Every function takes Gram matrices (for example from
`keras_dib.ops.gaussian_gram` or `keras_dib.ops.label_gram`), like the
matrix-based Renyi functionals, and computes in float32 with `keras.ops`.

References:
    - Gretton, Bousquet, Smola & Schoelkopf, "Measuring Statistical
      Dependence with Hilbert-Schmidt Norms", ALT 2005.
      https://doi.org/10.1007/11564089_7
    - Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network
      Representations Revisited", ICML 2019.
      https://arxiv.org/abs/1905.00414
    - Ma, Lewis & Kleijn, "The HSIC Bottleneck: Deep Learning without
      Back-Propagation", AAAI 2020. https://arxiv.org/abs/1908.01580
"""

from keras import ops

# A centred Gram matrix whose squared norm is below this fraction of the
# Gram matrix's own is treated as zero (a constant kernel, up to float32
# rounding: no dependence can be measured), and the normalized HSIC is 0.
_RELATIVE_VARIANCE_FLOOR = 1e-10


def _as_gram(gram, name):
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    shape = gram.shape
    if len(shape) != 2 or (
        shape[0] is not None and shape[1] is not None and shape[0] != shape[1]
    ):
        raise ValueError(
            f"`{name}` should be a square matrix of shape (n, n). "
            f"Received: {name}.shape={shape}"
        )
    if shape[0] is not None and shape[0] < 2:
        raise ValueError(
            f"`{name}` should hold at least 2 samples. "
            f"Received: {name}.shape={shape}"
        )
    return gram


def _as_gram_pair(gram_x, gram_y):
    gram_x = _as_gram(gram_x, "gram_x")
    gram_y = _as_gram(gram_y, "gram_y")
    n_x, n_y = gram_x.shape[0], gram_y.shape[0]
    if n_x is not None and n_y is not None and n_x != n_y:
        raise ValueError(
            "`gram_x` and `gram_y` should have the same number of samples. "
            f"Received: gram_x.shape={gram_x.shape}, "
            f"gram_y.shape={gram_y.shape}"
        )
    return gram_x, gram_y


def center_gram(gram):
    """Double-centres a Gram matrix: `H K H`, with `H = I - 11^T / n`.

    Computed as `K - row means - column means + grand mean`, without the
    two `(n, n)` matrix products. The centred matrix is the Gram matrix of
    the features minus their mean in the kernel's feature space.

    Args:
        gram: tensor of shape `(n, n)`.

    Returns:
        A float32 tensor of shape `(n, n)` whose rows and columns sum to 0.

    Example:

    >>> gram = keras_dib.ops.center_gram(np.ones((3, 3)))
    >>> ops.convert_to_numpy(gram).tolist()  # a constant kernel centres to 0
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    gram = _as_gram(gram, "gram")
    return (
        gram
        - ops.mean(gram, axis=0, keepdims=True)
        - ops.mean(gram, axis=1, keepdims=True)
        + ops.mean(gram)
    )


def _hsic(gram_x, gram_y):
    n = ops.cast(ops.shape(gram_x)[0], "float32")
    # tr(K_X H K_Y H) = tr((H K_X H) K_Y) = sum((H K_X H) * K_Y^T).
    return ops.sum(center_gram(gram_x) * ops.transpose(gram_y)) / ops.square(
        n - 1.0
    )


def hsic(gram_x, gram_y):
    """Biased empirical HSIC of two Gram matrices over the same batch.

    `HSIC(X, Y) = (n - 1)^-2 tr(K_X H K_Y H)`, with `H = I - 11^T / n` the
    centring matrix (Gretton et al. 2005). It is the squared
    Hilbert-Schmidt norm of the empirical cross-covariance operator: 0 when
    either kernel is constant, larger the more the two batches' similarity
    structures agree, and (with characteristic kernels such as the Gaussian)
    0 in the population limit if and only if X and Y are independent.

    Args:
        gram_x: tensor of shape `(n, n)`, the Gram matrix of X.
        gram_y: tensor of shape `(n, n)`, the Gram matrix of Y over the same
            `n` samples.

    Returns:
        A float32 scalar tensor, >= 0 for positive semi-definite matrices.

    Example:

    >>> labels = np.arange(64) % 4
    >>> x = np.random.default_rng(0).normal(size=(64, 5)) + labels[:, None]
    >>> gram_x = keras_dib.ops.gaussian_gram(x, sigma=1.0)
    >>> gram_y = keras_dib.ops.label_gram(labels)
    >>> float(keras_dib.ops.hsic(gram_x, gram_y)) > 0  # x depends on labels
    True
    >>> constant = keras_dib.ops.hsic(gram_x, np.ones((64, 64)))
    >>> abs(float(constant)) < 1e-6  # 0 up to rounding
    True

    References:
        - Gretton, Bousquet, Smola & Schoelkopf, "Measuring Statistical
          Dependence with Hilbert-Schmidt Norms", ALT 2005.
          https://doi.org/10.1007/11564089_7
    """
    gram_x, gram_y = _as_gram_pair(gram_x, gram_y)
    return _hsic(gram_x, gram_y)


def normalized_hsic(gram_x, gram_y):
    """Normalized HSIC: `HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`.

    The cosine between the centred Gram matrices, in `[0, 1]` for positive
    semi-definite matrices: 1 when they are proportional, 0 when either is
    constant (its centred matrix is 0: then 0 is returned, not NaN). With
    linear kernels this is linear CKA (Kornblith et al. 2019). The
    `(n - 1)^-2` factors cancel, so the value does not depend on the batch
    size's normalisation.

    Args:
        gram_x: tensor of shape `(n, n)`, the Gram matrix of X.
        gram_y: tensor of shape `(n, n)`, the Gram matrix of Y over the same
            `n` samples.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(32, 3))
    >>> gram = keras_dib.ops.gaussian_gram(x)
    >>> round(float(keras_dib.ops.normalized_hsic(gram, 2.0 * gram)), 4)
    1.0

    References:
        - Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network
          Representations Revisited", ICML 2019.
          https://arxiv.org/abs/1905.00414
    """
    gram_x, gram_y = _as_gram_pair(gram_x, gram_y)
    centered_x = center_gram(gram_x)
    centered_y = center_gram(gram_y)
    cross = ops.sum(centered_x * ops.transpose(centered_y))
    variance_x = ops.sum(ops.square(centered_x))
    variance_y = ops.sum(ops.square(centered_y))
    degenerate = ops.logical_or(
        variance_x
        <= _RELATIVE_VARIANCE_FLOOR * ops.sum(ops.square(gram_x)) + 1e-30,
        variance_y
        <= _RELATIVE_VARIANCE_FLOOR * ops.sum(ops.square(gram_y)) + 1e-30,
    )
    # The square root's derivative is infinite at 0: take it of a safe value
    # and return 0 where a kernel is constant.
    product = variance_x * variance_y
    safe = ops.where(degenerate, ops.ones_like(product), product)
    return ops.where(degenerate, ops.zeros_like(cross), cross / ops.sqrt(safe))

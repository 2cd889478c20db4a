"""Kernel (Gram) matrices and kernel-width rules, in `keras.ops` only."""

import math

import keras
from keras import ops

KERNEL_WIDTH_RULES = ("knn", "silverman")


def _flatten_batch(x):
    """Casts to float32 and flattens every axis but the first."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if len(x.shape) == 1:
        return ops.expand_dims(x, -1)
    if len(x.shape) > 2:
        return ops.reshape(x, (ops.shape(x)[0], -1))
    return x


def pairwise_squared_distances(x, y=None):
    """Pairwise squared Euclidean distances between the rows of `x` and `y`.

    Computed from squared norms, `|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>`, and
    clamped at 0, so that gradients stay finite where two rows coincide
    (unlike `ops.cdist`, whose square root has an infinite derivative at 0).
    Every axis after the first is flattened; the result is float32.

    Args:
        x: tensor of shape `(n, ...)`.
        y: optional tensor of shape `(m, ...)`, with as many features as `x`.
            Defaults to `x`, in which case the diagonal is exactly 0.

    Returns:
        A float32 tensor of shape `(n, m)`.

    Example:

    >>> x = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> distances = keras_dib.ops.pairwise_squared_distances(x)
    >>> ops.convert_to_numpy(distances).tolist()
    [[0.0, 25.0], [25.0, 0.0]]
    """
    x = _flatten_batch(x)
    same = y is None
    y = x if same else _flatten_batch(y)
    if x.shape[-1] is not None and y.shape[-1] is not None:
        if x.shape[-1] != y.shape[-1]:
            raise ValueError(
                "`x` and `y` should have the same number of features. "
                f"Received: x.shape={x.shape}, y.shape={y.shape}"
            )
    x_norms = ops.sum(ops.square(x), axis=1)
    y_norms = ops.sum(ops.square(y), axis=1)
    distances = (
        ops.expand_dims(x_norms, 1)
        + ops.expand_dims(y_norms, 0)
        - 2.0 * ops.matmul(x, ops.transpose(y))
    )
    distances = ops.maximum(distances, 0.0)
    if same:
        n = ops.shape(x)[0]
        distances = distances * (1.0 - ops.eye(n, dtype="float32"))
    return distances


def _check_num_neighbors(num_neighbors):
    if isinstance(num_neighbors, bool) or not isinstance(num_neighbors, int):
        raise ValueError(
            "`num_neighbors` should be a positive integer. "
            f"Received: num_neighbors={num_neighbors!r}"
        )
    if num_neighbors < 1:
        raise ValueError(
            "`num_neighbors` should be a positive integer. "
            f"Received: num_neighbors={num_neighbors}"
        )


def kernel_width(x, rule="knn", num_neighbors=10):
    """Kernel width `sigma` for a batch, from a data-driven rule.

    The width is computed without gradient (`ops.stop_gradient`): it is a
    hyperparameter of the estimator, not something to optimise.

    - `"knn"`: the mean distance from each sample to its `num_neighbors`
      nearest neighbours in the batch (Deep DIB practice). If the batch has
      fewer than `num_neighbors + 1` samples, all other samples are used.
    - `"silverman"`: Silverman's rule of thumb in `d` dimensions,
      `sigma = s * (4 / (d + 2)) ** (1 / (d + 4)) * n ** (-1 / (d + 4))`,
      with `s = sqrt(sum_j var_j)` the total standard deviation, so that the
      width scales with the typical pairwise distance in high dimension.

    Args:
        x: tensor of shape `(n, ...)`; axes after the first are flattened.
        rule: `"knn"` (default) or `"silverman"`.
        num_neighbors: int, the `k` of the `"knn"` rule. Defaults to 10.

    Returns:
        A positive float32 scalar tensor.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(64, 8))
    >>> sigma = keras_dib.ops.kernel_width(x, rule="knn", num_neighbors=10)
    >>> float(sigma) > 0
    True
    """
    if rule not in KERNEL_WIDTH_RULES:
        raise ValueError(
            f"`rule` should be one of {KERNEL_WIDTH_RULES}. "
            f"Received: rule={rule!r}"
        )
    _check_num_neighbors(num_neighbors)
    x = ops.stop_gradient(_flatten_batch(x))
    n = x.shape[0]
    if rule == "knn":
        distances = pairwise_squared_distances(x)
        # Batches smaller than num_neighbors + 1 use every other sample.
        if n is None:
            # A dynamic batch size (TensorFlow traces NumPy-fed steps with
            # shape (None, ...)): sort each row, skip the sample itself
            # (distance 0) and keep up to num_neighbors columns; slicing
            # clamps to the batch size at run time.
            ordered = ops.sort(distances, axis=-1)
            nearest = -ordered[:, 1 : num_neighbors + 1]
        else:
            k = min(num_neighbors, n - 1) if n > 1 else 1
            # Exclude each sample itself by giving the diagonal a huge
            # distance.
            big = ops.max(distances) + 1.0
            eye = ops.eye(n, dtype="float32")
            nearest, _ = ops.top_k(-(distances + big * eye), k=k)
        sigma = ops.mean(ops.sqrt(ops.maximum(-nearest, 0.0)))
    else:
        d = x.shape[-1]
        n_float = ops.cast(ops.shape(x)[0], "float32")
        total_std = ops.sqrt(ops.sum(ops.var(x, axis=0)))
        factor = (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0))
        sigma = total_std * factor * ops.power(n_float, -1.0 / (d + 4.0))
    # A batch of identical samples would give 0: fall back to 1.
    sigma = ops.where(sigma > 1e-12, sigma, ops.ones_like(sigma))
    return ops.stop_gradient(sigma)


def _check_sigma(sigma):
    if isinstance(sigma, str):
        if sigma not in KERNEL_WIDTH_RULES:
            raise ValueError(
                "`sigma` should be a positive number or one of "
                f"{KERNEL_WIDTH_RULES}. Received: sigma={sigma!r}"
            )
        return
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not math.isfinite(sigma) or sigma <= 0:
            raise ValueError(
                "`sigma` should be a positive number or one of "
                f"{KERNEL_WIDTH_RULES}. Received: sigma={sigma}"
            )
        return
    # A tensor is accepted as is (for example a kernel width computed
    # elsewhere); its positivity is the caller's responsibility.
    if not keras.ops.is_tensor(sigma) and not hasattr(sigma, "shape"):
        raise ValueError(
            "`sigma` should be a positive number, a scalar tensor or one of "
            f"{KERNEL_WIDTH_RULES}. Received: sigma={sigma!r}"
        )


def gaussian_gram(x, sigma="knn", num_neighbors=10):
    """Gaussian (RBF) Gram matrix of a batch.

    `K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))`, from squared norms (see
    `pairwise_squared_distances`), in float32.

    Args:
        x: tensor of shape `(n, ...)`; axes after the first are flattened.
        sigma: kernel width: a positive number, a scalar tensor, or the name
            of a rule for `kernel_width` (`"knn"`, default, or
            `"silverman"`), which is then computed from the batch without
            gradient.
        num_neighbors: the `k` of the `"knn"` rule. Defaults to 10.

    Returns:
        A float32 tensor of shape `(n, n)`, symmetric positive semi-definite
        with ones on the diagonal.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(32, 3, 3, 4))
    >>> gram = keras_dib.ops.gaussian_gram(x, sigma=1.0)
    >>> tuple(gram.shape)
    (32, 32)
    >>> float(ops.min(ops.diagonal(gram)))  # ones on the diagonal
    1.0
    """
    _check_sigma(sigma)
    x = _flatten_batch(x)
    if isinstance(sigma, str):
        sigma = kernel_width(x, rule=sigma, num_neighbors=num_neighbors)
    sigma = ops.cast(sigma, "float32")
    distances = pairwise_squared_distances(x)
    return ops.exp(-distances / (2.0 * ops.square(sigma)))


def label_gram(labels, num_classes=None):
    """Gram matrix of class labels: `K_ij = 1` if `y_i == y_j`, else 0.

    This is the linear kernel of one-hot labels, `Y Y^T`, as used for
    `I(T; Y)` with the matrix-based Renyi estimator.

    Args:
        labels: integer class indices of shape `(n,)` or `(n, 1)`, or one-hot
            (or soft) labels of shape `(n, num_classes)`.
        num_classes: number of classes, needed for integer labels. If None,
            integer labels are compared directly (equality kernel), which
            gives the same matrix.

    Returns:
        A float32 tensor of shape `(n, n)`.

    Example:

    >>> gram = keras_dib.ops.label_gram(np.array([0, 1, 0]))
    >>> ops.convert_to_numpy(gram).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    """
    labels = ops.convert_to_tensor(labels)
    rank = len(labels.shape)
    integer = "int" in keras.backend.standardize_dtype(labels.dtype)
    if rank == 2 and labels.shape[-1] == 1 and integer:
        labels = ops.squeeze(labels, -1)
        rank = 1
    if rank == 1:
        if num_classes is not None:
            one_hot = ops.one_hot(ops.cast(labels, "int32"), num_classes)
            return ops.matmul(one_hot, ops.transpose(one_hot))
        labels = ops.cast(labels, "float32")
        return ops.cast(
            ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)),
            "float32",
        )
    if rank == 2:
        labels = ops.cast(labels, "float32")
        return ops.matmul(labels, ops.transpose(labels))
    raise ValueError(
        "`labels` should be integer class indices of shape (n,) or (n, 1), "
        f"or one-hot labels of shape (n, num_classes). "
        f"Received: labels.shape={labels.shape}"
    )

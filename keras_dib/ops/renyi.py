"""Matrix-based Renyi alpha-order entropy functionals, in `keras.ops` only.

References:
    - Sanchez Giraldo, Rao & Principe, "Measures of Entropy From Data Using
      Infinitely Divisible Kernels", IEEE Trans. Inf. Theory 61(1), 2015
      (arXiv:1211.2459, 2012/2014). https://arxiv.org/abs/1211.2459
    - Yu, Sanchez Giraldo, Jenssen & Principe, "Multivariate Extension of
      Matrix-based Renyi's alpha-order Entropy Functional", IEEE TPAMI 2020.
      https://arxiv.org/abs/1808.07912
    - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
      Matrix-based Entropy Functional", ICASSP 2021.
      https://arxiv.org/abs/2102.00533
"""

import math

from keras import ops

# Eigenvalues below this are treated as exactly zero (their power is 0 and
# so is its gradient), which keeps gradients finite for every alpha.
_EIGENVALUE_FLOOR = 1e-12
# Float32 eigensolvers return the zero eigenvalues of a rank-deficient Gram
# matrix as noise of order n * eps; for alpha < 1 that noise would add
# entropy (sum of its square roots, say). Eigenvalues of the unit-trace
# matrix below n * _RELATIVE_RANK_TOLERANCE are treated as exact zeros, the
# usual numerical-rank rule.
_RELATIVE_RANK_TOLERANCE = 2.0 * 1.1920929e-07
_MAX_MATMUL_ALPHA = 4
_LOG2 = math.log(2.0)


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ValueError(
            "`alpha` should be a number > 0 and != 1. "
            f"Received: alpha={alpha!r}"
        )
    if not math.isfinite(alpha) or alpha <= 0 or alpha == 1:
        raise ValueError(
            "`alpha` should be > 0 and != 1 (the Renyi entropy of order 1 is "
            "the Shannon limit, which this estimator does not compute; use "
            f"alpha=1.01 to approximate it). Received: alpha={alpha}"
        )


def _check_square(gram, name="gram"):
    shape = gram.shape
    if len(shape) != 2 or (
        shape[0] is not None and shape[1] is not None and shape[0] != shape[1]
    ):
        raise ValueError(
            f"`{name}` should be a square matrix of shape (n, n). "
            f"Received: {name}.shape={shape}"
        )


def normalize_gram(gram):
    """Trace-normalises a Gram matrix: `A = K / tr(K)`.

    Args:
        gram: float tensor of shape `(n, n)`, positive semi-definite.

    Returns:
        A float32 tensor of shape `(n, n)` with unit trace.

    Example:

    >>> a = keras_dib.ops.normalize_gram(np.eye(4))  # eye(4) / 4
    """
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    _check_square(gram)
    return gram / ops.maximum(ops.trace(gram), _EIGENVALUE_FLOOR)


def _is_small_integer(alpha):
    return float(alpha).is_integer() and 2 <= alpha <= _MAX_MATMUL_ALPHA


def _log_power_trace(a, alpha):
    """`log(sum_i lambda_i(a) ** alpha)` for a symmetric PSD `a`, unit trace.

    With eigenvalues, the sum is written as `1 + sum_i lambda_i *
    expm1((alpha - 1) * log(lambda_i))` (the eigenvalues renormalised to sum
    to 1) and its log taken with `log1p`: near `alpha = 1` the plain sum is
    `1 - O(alpha - 1)`, and float32 would lose most digits of the entropy to
    the division by `1 - alpha`.
    """
    if _is_small_integer(alpha):
        # tr(A^k) without eigendecomposition: for k = 2 this is the squared
        # Frobenius norm; in general tr(A^p A^q) = sum(A^p * A^q), p + q = k.
        k = int(alpha)
        p = k // 2
        left = a
        for _ in range(p - 1):
            left = ops.matmul(left, a)
        right = left if k - p == p else ops.matmul(left, a)
        return ops.log(ops.maximum(ops.sum(left * right), _EIGENVALUE_FLOOR))
    # A non-finite matrix (a diverged block) makes some eigensolvers raise
    # (TensorFlow, torch): solve a harmless identity instead and return NaN,
    # which the trainer reports with the block and the term.
    finite = ops.all(ops.isfinite(a))
    eye = ops.eye(ops.shape(a)[0], dtype=a.dtype)
    eigenvalues, _ = ops.eigh(ops.where(finite, a, eye))
    eigenvalues = ops.maximum(eigenvalues, 0.0)
    eigenvalues = eigenvalues / ops.maximum(
        ops.sum(eigenvalues), _EIGENVALUE_FLOOR
    )
    n = ops.cast(ops.shape(eigenvalues)[0], "float32")
    threshold = ops.maximum(n * _RELATIVE_RANK_TOLERANCE, _EIGENVALUE_FLOOR)
    positive = eigenvalues > threshold
    safe = ops.where(positive, eigenvalues, ops.ones_like(eigenvalues))
    terms = ops.where(
        positive,
        safe * ops.expm1((alpha - 1.0) * ops.log(safe)),
        ops.zeros_like(eigenvalues),
    )
    # Eigenvalues below the floor contribute lambda^alpha ~ 0, i.e. -lambda.
    terms = terms - ops.where(
        positive, ops.zeros_like(eigenvalues), eigenvalues
    )
    value = ops.log1p(ops.maximum(ops.sum(terms), _EIGENVALUE_FLOOR - 1.0))
    return ops.where(finite, value, ops.full_like(value, float("nan")))


def renyi_entropy(gram, alpha=1.01, normalize=True):
    """Matrix-based Renyi alpha-order entropy of a Gram matrix, in bits.

    `S_alpha(A) = 1 / (1 - alpha) * log2(sum_i lambda_i(A) ** alpha)`, with
    `A = K / tr(K)` and `lambda_i(A)` its eigenvalues, clamped at 0. For
    integer `alpha` from 2 to 4 the power sum is `tr(A^alpha)`, computed with
    matrix products (for `alpha=2` the squared Frobenius norm) and no
    eigendecomposition; otherwise `ops.eigh` is used. All maths in float32.

    The entropy lies in `[0, log2 n]`: 0 for a rank-one `A` (all samples
    alike), `log2 n` for the identity (all samples distinct).

    Args:
        gram: tensor of shape `(n, n)`, a symmetric positive semi-definite
            Gram matrix (for example from `keras_dib.ops.gaussian_gram`).
        alpha: order of the entropy, > 0 and != 1. Defaults to 1.01, which
            approximates Shannon's entropy (Deep DIB).
        normalize: whether to trace-normalise `gram` first. Defaults to True.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> keras_dib.ops.renyi_entropy(np.eye(8), alpha=2)  # log2(8)
    3.0

    References:
        - Sanchez Giraldo, Rao & Principe, 2015.
          https://arxiv.org/abs/1211.2459
    """
    _check_alpha(alpha)
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    _check_square(gram)
    a = normalize_gram(gram) if normalize else gram
    return _log_power_trace(a, alpha) / (_LOG2 * (1.0 - alpha))


def joint_renyi_entropy(grams, alpha=1.01):
    """Joint matrix-based Renyi entropy of several Gram matrices, in bits.

    `S_alpha(A_1, ..., A_k) = S_alpha(A_1 o ... o A_k / tr(A_1 o ... o A_k))`
    where `o` is the Hadamard (element-wise) product.

    Args:
        grams: a list (or tuple) of at least one tensor of shape `(n, n)`, all
            of the same shape.
        alpha: order of the entropy, > 0 and != 1. Defaults to 1.01.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> k_x = keras_dib.ops.gaussian_gram(x)
    >>> k_t = keras_dib.ops.gaussian_gram(t)
    >>> h_xt = keras_dib.ops.joint_renyi_entropy([k_x, k_t], alpha=1.01)

    References:
        - Yu, Sanchez Giraldo, Jenssen & Principe, TPAMI 2020.
          https://arxiv.org/abs/1808.07912
    """
    _check_alpha(alpha)
    if not isinstance(grams, (list, tuple)) or not grams:
        raise ValueError(
            "`grams` should be a non-empty list of (n, n) Gram matrices. "
            f"Received: grams={grams!r}"
        )
    product = None
    for index, gram in enumerate(grams):
        gram = ops.cast(ops.convert_to_tensor(gram), "float32")
        _check_square(gram, name=f"grams[{index}]")
        if product is not None and tuple(gram.shape) != tuple(product.shape):
            raise ValueError(
                "All Gram matrices should have the same shape. Received: "
                f"grams[0].shape={product.shape}, "
                f"grams[{index}].shape={gram.shape}"
            )
        product = gram if product is None else product * gram
    return renyi_entropy(product, alpha=alpha, normalize=True)


def renyi_mutual_information(gram_a, gram_b, alpha=1.01):
    """Matrix-based Renyi mutual information, in bits.

    `I_alpha(A; B) = S_alpha(A) + S_alpha(B) - S_alpha(A, B)`, with the joint
    entropy of `joint_renyi_entropy`. `I(A; A) = S(A)`.

    Args:
        gram_a: tensor of shape `(n, n)`, the Gram matrix of one variable.
        gram_b: tensor of shape `(n, n)`, the Gram matrix of the other.
        alpha: order of the entropy, > 0 and != 1. Defaults to 1.01.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> k_x = keras_dib.ops.gaussian_gram(images)
    >>> k_t = keras_dib.ops.gaussian_gram(features)
    >>> i_xt = keras_dib.ops.renyi_mutual_information(k_x, k_t, alpha=1.01)

    References:
        - Yu, Yu & Principe, ICASSP 2021. https://arxiv.org/abs/2102.00533
    """
    _check_alpha(alpha)
    return (
        renyi_entropy(gram_a, alpha=alpha)
        + renyi_entropy(gram_b, alpha=alpha)
        - joint_renyi_entropy([gram_a, gram_b], alpha=alpha)
    )

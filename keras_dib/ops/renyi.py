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
import numbers

from keras import ops

from keras_dib.ops._tensors import as_float32

_FLOAT32_EPS = 1.1920929e-07
# Smallest positive normal float32. Eigenvalues at or below it are exact
# zeros: their logarithm and its derivative (1 / lambda) stay finite.
_TINY = 1.1754944e-38
# For alpha < 1 the power lambda ** alpha of a tiny eigenvalue is large
# (sqrt(1e-12) = 1e-6) and its derivative unbounded, so the zero eigenvalues
# of a rank-deficient Gram matrix, which a float32 eigensolver returns as
# noise of a few eps * lambda_max, would add entropy and dominate the
# gradient. For alpha < 1, eigenvalues of the unit-trace matrix at or below
# _RANK_TOLERANCE * lambda_max are treated as exact zeros: the relative
# numerical-rank rule of `numpy.linalg.matrix_rank`, with a constant factor
# for its n (n * eps drops real eigenvalues of well-posed 512-sample
# batches). For alpha > 1 the power of such noise is negligible and its
# derivative, alpha * lambda ** (alpha - 1), bounded: every positive
# eigenvalue counts, with no floor.
_RANK_TOLERANCE = 4.0 * _FLOAT32_EPS
# The eigenvalue power sum is computed as 1 + sum_i lambda_i * expm1(...)
# (accurate near alpha = 1) while it is above this value, and in log space
# below it (large alpha: a sum far below 1, lost to cancellation in 1 + x).
_LOG_SPACE_BELOW = 0.5
_MAX_MATMUL_ALPHA = 4
_LOG2 = math.log(2.0)


def _check_alpha(alpha):
    """Raises unless `alpha` is a real number > 0 and != 1; returns a float.

    Python and NumPy real scalars are accepted, booleans are not.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
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
    return float(alpha)


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

    A matrix whose trace is not positive (all zeros, say: not a valid Gram
    matrix to normalise) is returned unchanged.

    Args:
        gram: float tensor or variable of shape `(n, n)`, positive
            semi-definite.

    Returns:
        A float32 tensor of shape `(n, n)` with unit trace.

    Example:

    >>> a = keras_dib.ops.normalize_gram(np.eye(4))  # eye(4) / 4
    >>> ops.convert_to_numpy(ops.diagonal(a)).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    gram = as_float32(gram)
    _check_square(gram)
    trace = ops.trace(gram)
    return gram / ops.where(trace > 0, trace, ops.ones_like(trace))


def _is_small_integer(alpha):
    return float(alpha).is_integer() and 2 <= alpha <= _MAX_MATMUL_ALPHA


def _log_power_trace(a, alpha):
    """`log(sum_i lambda_i(a) ** alpha)` for a symmetric PSD `a`, unit trace.

    With eigenvalues (renormalised to sum to 1), the sum is written as
    `1 + sum_i lambda_i * expm1((alpha - 1) * log(lambda_i))` and its log
    taken with `log1p`: near `alpha = 1` the plain sum is `1 - O(alpha - 1)`,
    and float32 would lose most digits of the entropy to the division by
    `1 - alpha`. Where that sum is below `_LOG_SPACE_BELOW` (large alpha,
    where `1 + x` would cancel to 0), it is computed in log space instead:
    `alpha * log(lambda_max) + log(sum_i (lambda_i / lambda_max) ** alpha)`,
    finite for every finite alpha. An all-zero `a` gives 0.
    """
    if _is_small_integer(alpha):
        # tr(A^k) without eigendecomposition: for k = 2 this is the squared
        # Frobenius norm; in general tr(A^p A^q) = sum(A^p * A^q), p + q = k.
        # For a unit-trace A it is at least n ** (1 - k): no underflow.
        k = int(alpha)
        p = k // 2
        left = a
        for _ in range(p - 1):
            left = ops.matmul(left, a)
        right = left if k - p == p else ops.matmul(left, a)
        return ops.log(ops.maximum(ops.sum(left * right), _TINY))
    # A non-finite matrix (a diverged block) makes some eigensolvers raise
    # (TensorFlow, torch): solve a harmless identity instead and return NaN,
    # which the trainer reports with the block and the term.
    finite = ops.all(ops.isfinite(a))
    eye = ops.eye(ops.shape(a)[0], dtype=a.dtype)
    eigenvalues, _ = ops.eigh(ops.where(finite, a, eye))
    eigenvalues = ops.maximum(eigenvalues, 0.0)
    eigenvalues = eigenvalues / ops.maximum(ops.sum(eigenvalues), _TINY)
    largest = ops.stop_gradient(ops.max(eigenvalues))
    if alpha < 1:
        threshold = ops.maximum(_RANK_TOLERANCE * largest, _TINY)
    else:
        threshold = _TINY
    positive = eigenvalues > threshold
    safe = ops.where(positive, eigenvalues, ops.ones_like(eigenvalues))
    log_safe = ops.log(safe)
    # Eigenvalues treated as zero contribute lambda^alpha = 0, i.e. -lambda.
    terms = ops.where(
        positive,
        safe * ops.expm1((alpha - 1.0) * log_safe),
        -eigenvalues,
    )
    excess = ops.sum(terms)
    near_one = ops.log1p(ops.maximum(excess, _LOG_SPACE_BELOW - 1.0))
    shift = alpha * ops.log(ops.maximum(largest, _TINY))
    # Masked exponents are set before `exp`, so no overflow reaches a
    # gradient (0 * inf); -1e4 underflows to an exact 0.
    exponents = ops.where(
        positive,
        alpha * log_safe - shift,
        ops.full_like(eigenvalues, -1e4),
    )
    in_log_space = shift + ops.log(
        ops.maximum(ops.sum(ops.exp(exponents)), _TINY)
    )
    value = ops.where(excess > _LOG_SPACE_BELOW - 1.0, near_one, in_log_space)
    return ops.where(finite, value, ops.full_like(value, float("nan")))


def renyi_entropy(gram, alpha=1.01, normalize=True):
    """Matrix-based Renyi alpha-order entropy of a Gram matrix, in bits.

    `S_alpha(A) = 1 / (1 - alpha) * log2(sum_i lambda_i(A) ** alpha)`, with
    `A = K / tr(K)` and `lambda_i(A)` its eigenvalues, clamped at 0. For
    integer `alpha` from 2 to 4 the power sum is `tr(A^alpha)`, computed with
    matrix products (for `alpha=2` the squared Frobenius norm) and no
    eigendecomposition; otherwise `ops.eigh` is used, and the power sum is
    computed in log space where it is small, so the result is finite for
    every alpha. All maths in float32. For `alpha < 1`, eigenvalues at or
    below `4 * eps * lambda_max` (float32 `eps`) are treated as zeros
    (eigensolver noise); for `alpha > 1` every positive eigenvalue counts.

    The entropy lies in `[0, log2 n]`: 0 for a rank-one `A` (all samples
    alike), `log2 n` for the identity (all samples distinct). A matrix with
    no positive trace (all zeros, say), which has no normalised form, and a
    matrix with a non-finite entry give NaN (not an error, so that a
    compiled training step can report it).

    Args:
        gram: tensor or variable of shape `(n, n)`, a symmetric positive
            semi-definite Gram matrix (for example from
            `keras_dib.ops.gaussian_gram`).
        alpha: order of the entropy, a Python or NumPy real number > 0 and
            != 1. Defaults to 1.01, which approximates Shannon's entropy
            (Deep DIB).
        normalize: whether to trace-normalise `gram` first. Defaults to True.
            With False, `gram` should already have unit trace.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> entropy = keras_dib.ops.renyi_entropy(np.eye(8), alpha=2)
    >>> round(float(entropy), 4)  # log2(8)
    3.0

    References:
        - Sanchez Giraldo, Rao & Principe, 2015.
          https://arxiv.org/abs/1211.2459
    """
    alpha = _check_alpha(alpha)
    gram = as_float32(gram)
    _check_square(gram)
    a = normalize_gram(gram) if normalize else gram
    value = _log_power_trace(a, alpha) / (_LOG2 * (1.0 - alpha))
    return ops.where(
        ops.trace(a) > 0, value, ops.full_like(value, float("nan"))
    )


def joint_renyi_entropy(grams, alpha=1.01):
    """Joint matrix-based Renyi entropy of several Gram matrices, in bits.

    `S_alpha(A_1, ..., A_k) = S_alpha(A_1 o ... o A_k / tr(A_1 o ... o A_k))`
    where `o` is the Hadamard (element-wise) product.

    Args:
        grams: a list (or tuple) of at least one tensor (or variable) of
            shape `(n, n)`, all of the same shape.
        alpha: order of the entropy, > 0 and != 1. Defaults to 1.01.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(32, 4)).astype("float32")
    >>> t = np.tanh(x @ rng.normal(size=(4, 8))).astype("float32")
    >>> k_x = keras_dib.ops.gaussian_gram(x)
    >>> k_t = keras_dib.ops.gaussian_gram(t)
    >>> h_xt = keras_dib.ops.joint_renyi_entropy([k_x, k_t], alpha=1.01)
    >>> h_x = keras_dib.ops.renyi_entropy(k_x, alpha=1.01)
    >>> float(h_x) <= float(h_xt) <= 5.0  # H(X) <= H(X, T) <= log2(32)
    True

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
        gram = as_float32(gram)
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
    entropy of `joint_renyi_entropy`. In particular `I_alpha(A; A) =
    2 S_alpha(A) - S_alpha(A o A)`, which equals `S_alpha(A)` only when
    `A o A` is proportional to `A` (a 0/1 kernel such as `label_gram`). For
    a Gaussian Gram matrix of width `sigma`, `A o A` is the Gaussian Gram
    matrix of width `sigma / sqrt(2)`, and `I_alpha(A; A)` is below
    `S_alpha(A)`.

    Args:
        gram_a: tensor of shape `(n, n)`, the Gram matrix of one variable.
        gram_b: tensor of shape `(n, n)`, the Gram matrix of the other.
        alpha: order of the entropy, > 0 and != 1. Defaults to 1.01.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> images = rng.uniform(size=(32, 8, 8, 3)).astype("float32")
    >>> features = ops.mean(images, axis=(1, 2))  # a function of the images
    >>> k_x = keras_dib.ops.gaussian_gram(images)
    >>> k_t = keras_dib.ops.gaussian_gram(features)
    >>> i_xt = keras_dib.ops.renyi_mutual_information(k_x, k_t, alpha=1.01)
    >>> float(i_xt) > 0
    True

    References:
        - Yu, Yu & Principe, ICASSP 2021. https://arxiv.org/abs/2102.00533
    """
    _check_alpha(alpha)
    return (
        renyi_entropy(gram_a, alpha=alpha)
        + renyi_entropy(gram_b, alpha=alpha)
        - joint_renyi_entropy([gram_a, gram_b], alpha=alpha)
    )

"""Argument checks and Gram matrices shared by the local objectives."""

import math
import numbers

from keras import ops

from keras_dib.ops import kernels


def check_non_negative(name, value):
    """Raises unless `value` is a finite real number >= 0.

    Python and NumPy real scalars (`np.float32(0.01)`, say) are accepted;
    booleans (Python or NumPy) are not.

    Args:
        name: the argument's name, for the error message.
        value: the value to check.

    Returns:
        `value` as a Python float.

    Example:

    >>> from keras_dib.losses._common import check_non_negative
    >>> check_non_negative("beta", np.float32(0.01))
    0.009999999776482582
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{name}` should be a finite number >= 0. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_compression(compression, targets, name="compression"):
    """Raises unless `compression` (the argument `name`) is in `targets`."""
    if compression not in targets:
        raise ValueError(
            f"`{name}` should be one of {targets}. "
            f"Received: {name}={compression!r}"
        )


def check_kernel_arguments(sigma, target_sigma, num_neighbors):
    """Checks the kernel widths of `T_l` and of the target, and `k`."""
    kernels._check_sigma(sigma)
    kernels._check_sigma(target_sigma)
    kernels._check_num_neighbors(num_neighbors)


def target_gram(target, sigma, num_neighbors):
    """Gaussian Gram matrix of a compression target, without gradient.

    Neither the target nor its kernel width (a data-driven rule) carries a
    gradient, and neither does the Gram matrix.
    """
    target = ops.stop_gradient(ops.convert_to_tensor(target))
    return ops.stop_gradient(
        kernels.gaussian_gram(target, sigma=sigma, num_neighbors=num_neighbors)
    )

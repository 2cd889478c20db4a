"""Conversion of inputs to backend tensors, shared by the ops."""

from keras import ops


def as_float32(x):
    """Converts `x` to a float32 tensor of the backend.

    `ops.convert_to_tensor` returns a `tf.Variable` unchanged on the
    TensorFlow backend, and some `keras.ops` then fail on it (no `ndim`):
    a variable (anything with `assign`) is read into a tensor first, which
    keeps its gradient.

    Args:
        x: array-like, tensor or variable.

    Returns:
        A float32 tensor.

    Example:

    >>> from keras_dib.ops._tensors import as_float32
    >>> x = as_float32(keras.Variable(np.eye(2)))
    >>> ops.is_tensor(x), keras.backend.standardize_dtype(x.dtype)
    (True, 'float32')
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if hasattr(x, "assign"):
        x = ops.copy(x)
    return x

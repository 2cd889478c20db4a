"""Argument checks shared by the network builders."""


def check_builder_arguments(
    depth, depths, granularity, granularities, width, num_classes, input_shape
):
    """Validates a builder's common arguments; returns `input_shape` as tuple.

    Args:
        depth: the requested depth; must be one of `depths`.
        depths: the supported depths (any container).
        granularity: the requested block granularity.
        granularities: the supported granularities.
        width: channels of the first layer, a positive integer.
        num_classes: number of classes, an integer >= 2.
        input_shape: `(height, width, channels)`.

    `granularity="layer"` is accepted as the older name of `"block"`.

    Returns:
        `input_shape` as a tuple.

    Example:

    >>> from keras_dib.models.builder_checks import check_builder_arguments
    >>> check_builder_arguments(11, (11, 13), "block", ("block",), 16, 10,
    ...                         [32, 32, 3])
    (32, 32, 3)
    """
    if isinstance(depth, bool) or depth not in depths:
        raise ValueError(
            f"`depth` should be one of {sorted(depths)}. "
            f"Received: depth={depth!r}"
        )
    if granularity not in granularities + ("layer",):
        raise ValueError(
            f"`granularity` should be one of {granularities}. "
            f"Received: granularity={granularity!r}"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(
            f"`width` should be a positive integer. Received: width={width!r}"
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 2
    ):
        raise ValueError(
            "`num_classes` should be an integer >= 2. "
            f"Received: num_classes={num_classes!r}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` should be (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    return input_shape

"""Model assembly shared by the network builders."""

import math

import keras
import numpy as np

from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead

FINAL_HEADS = ("classifier", "auxiliary")
# `head_conv_filters="auglocal"`: each auxiliary net is a thinned copy of
# the blocks that follow, at most this deep, this fraction as wide.
AUGLOCAL_MAX_DEPTH = 3
AUGLOCAL_WIDTH = 0.5


def auglocal_filters(block_channels, index):
    """Filters of block `index`'s AugLocal-style auxiliary convolutions.

    The auxiliary net of block `l` (of `L`) copies the output widths of
    blocks sampled uniformly among `l+1..L`, thinned by `AUGLOCAL_WIDTH`
    (at least 8 filters); its depth falls linearly from
    `AUGLOCAL_MAX_DEPTH` for the first block to 1 for the last auxiliary
    block, so the blocks near the input, whose local problem is hardest,
    get the deepest nets.

    Args:
        block_channels: output channels of every block, in order.
        index: the block's index, `0..len(block_channels) - 2`.

    Returns:
        A list of 1 to `AUGLOCAL_MAX_DEPTH` filter counts.

    References:
        - Ma, Yu, Mao, Zhang, Li, Hao & Xu, "Scaling Supervised Local
          Learning with Augmented Auxiliary Networks", ICLR 2024.
          https://arxiv.org/abs/2402.17318
    """
    following = block_channels[index + 1 :]
    num_auxiliary = max(len(block_channels) - 1, 1)
    depth = math.ceil(
        AUGLOCAL_MAX_DEPTH * (num_auxiliary - index) / num_auxiliary
    )
    depth = max(1, min(depth, AUGLOCAL_MAX_DEPTH, len(following)))
    if depth == 1:
        picks = [0]
    else:
        picks = [
            round(i * (len(following) - 1) / (depth - 1)) for i in range(depth)
        ]
    return [max(8, int(following[p] * AUGLOCAL_WIDTH)) for p in picks]


def input_normalization_layer(input_normalization, channels):
    """`keras.layers.Normalization` from `(mean, std)` on the 0-255 scale.

    Returns None for None. Raises a ValueError naming what was received for
    anything but two finite vectors of one value (or one per channel), the
    standard deviations positive.
    """
    if input_normalization is None:
        return None
    try:
        mean, std = (
            np.broadcast_to(
                np.asarray(v, dtype="float64").reshape(-1), channels
            )
            for v in input_normalization
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`input_normalization` should be (mean, std), each a number or "
            f"{channels} numbers (one per channel, 0-255 scale). Received: "
            f"input_normalization={input_normalization!r}"
        ) from error
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))) or np.any(
        std <= 0
    ):
        raise ValueError(
            "`input_normalization` should hold finite means and positive "
            f"standard deviations. Received: mean={mean}, std={std}"
        )
    return keras.layers.Normalization(
        mean=mean.tolist(),
        variance=np.square(std).tolist(),
        name="input_normalization",
    )


def check_head_arguments(final_head, head_conv_filters):
    """Raises for a bad `final_head` or string `head_conv_filters`."""
    if final_head not in FINAL_HEADS:
        raise ValueError(
            f"`final_head` should be one of {FINAL_HEADS}. Received: "
            f"final_head={final_head!r}"
        )
    if isinstance(head_conv_filters, str) and head_conv_filters != "auglocal":
        raise ValueError(
            "`head_conv_filters` should be None, a positive integer, a list "
            "of 1 to 3 positive integers or 'auglocal'. Received: "
            f"head_conv_filters={head_conv_filters!r}"
        )


def assemble_greedy_model(
    blocks,
    block_channels,
    num_classes,
    input_shape,
    name,
    classifier,
    head_options,
):
    """A `GreedyLayerwiseModel` with the builders' auxiliary and final heads.

    Every block but the last gets an `AuxiliaryHead` named
    `auxiliary_head_{index}` with the builder's `head_*` settings. The final
    head, `AuxiliaryHead(num_classes, name="head", ...)`, is created after
    them: the network's own classifier (`classifier` arguments) with
    `final_head="classifier"`, or one built like the last auxiliary head
    with `final_head="auxiliary"`.

    Args:
        blocks: the list of blocks.
        block_channels: the output channels of each block (for
            `head_conv_filters="auglocal"`).
        num_classes: number of classes.
        input_shape: shape of one input, a tuple.
        name: the model name.
        classifier: dict of `AuxiliaryHead` arguments of the network's own
            classifier.
        head_options: dict with the builder's `final_head`, `grid_size`,
            `pooling`, `conv_filters` and `hidden_units` of the heads, and
            its `input_normalization` (None or `(mean, std)`): a
            normalization layer put first in block 1, so that the model
            takes raw 0-255 images.

    Returns:
        A `keras_dib.GreedyLayerwiseModel`, built.
    """
    options = dict(head_options)
    final_head = options.pop("final_head")
    check_head_arguments(final_head, options["conv_filters"])
    normalization = input_normalization_layer(
        options.pop("input_normalization", None), input_shape[-1]
    )
    if normalization is not None:
        blocks = [
            keras.Sequential([normalization, blocks[0]], name=blocks[0].name)
        ] + list(blocks[1:])

    def head_config(index):
        config = dict(options)
        if config["conv_filters"] == "auglocal":
            config["conv_filters"] = auglocal_filters(
                block_channels, min(index, len(blocks) - 2)
            )
        return config

    auxiliary_heads = [
        AuxiliaryHead(
            num_classes, name=f"auxiliary_head_{index}", **head_config(index)
        )
        for index in range(len(blocks) - 1)
    ]
    if final_head == "classifier":
        head = AuxiliaryHead(num_classes, name="head", **classifier)
    else:
        head = AuxiliaryHead(
            num_classes, name="head", **head_config(len(blocks) - 2)
        )
    return GreedyLayerwiseModel(
        blocks,
        head=head,
        auxiliary_heads=auxiliary_heads,
        num_classes=num_classes,
        input_shape=input_shape,
        name=name,
    )

"""Model assembly shared by the network builders."""

from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead


def assemble_greedy_model(
    blocks,
    num_classes,
    input_shape,
    name,
    final_head,
    head_grid_size,
    head_pooling,
    head_conv_filters,
    head_hidden_units,
):
    """A `GreedyLayerwiseModel` with the builders' auxiliary and final heads.

    Every block but the last gets an `AuxiliaryHead` named
    `auxiliary_head_{index}` with the builder's `head_*` settings; the final
    head is `AuxiliaryHead(num_classes, name="head", **final_head)`, created
    after them.

    Args:
        blocks: the list of blocks.
        num_classes: number of classes.
        input_shape: shape of one input, a tuple.
        name: the model name.
        final_head: dict of `AuxiliaryHead` arguments of the final head.
        head_grid_size: `grid_size` of the auxiliary heads.
        head_pooling: `pooling` of the auxiliary heads.
        head_conv_filters: `conv_filters` of the auxiliary heads.
        head_hidden_units: `hidden_units` of the auxiliary heads.

    Returns:
        A `keras_dib.GreedyLayerwiseModel`, built.
    """
    auxiliary_heads = [
        AuxiliaryHead(
            num_classes,
            grid_size=head_grid_size,
            pooling=head_pooling,
            conv_filters=head_conv_filters,
            hidden_units=head_hidden_units,
            name=f"auxiliary_head_{index}",
        )
        for index in range(len(blocks) - 1)
    ]
    head = AuxiliaryHead(num_classes, name="head", **final_head)
    return GreedyLayerwiseModel(
        blocks,
        head=head,
        auxiliary_heads=auxiliary_heads,
        num_classes=num_classes,
        input_shape=input_shape,
        name=name,
    )

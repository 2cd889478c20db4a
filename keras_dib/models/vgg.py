"""VGG networks for 32x32 images, cut into blocks for greedy training."""

import keras

from keras_dib.models.builder_assembly import assemble_greedy_model
from keras_dib.models.builder_checks import check_builder_arguments

# Channels per convolution at width 64, one list per stage (each stage ends
# with 2x2 max pooling), after Simonyan & Zisserman (2015), Table 1.
VGG_STAGES = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [
        [64, 64],
        [128, 128],
        [256, 256, 256],
        [512, 512, 512],
        [512, 512, 512],
    ],
    19: [
        [64, 64],
        [128, 128],
        [256, 256, 256, 256],
        [512, 512, 512, 512],
        [512, 512, 512, 512],
    ],
}
GRANULARITIES = ("block", "stage")


def _conv_layers(filters, batch_norm, prefix):
    layers = [
        keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{prefix}_conv",
        )
    ]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name=f"{prefix}_bn"))
    layers.append(keras.layers.ReLU(name=f"{prefix}_relu"))
    return layers


def build_vgg(
    depth=11,
    num_classes=10,
    input_shape=(32, 32, 3),
    width=64,
    batch_norm=True,
    granularity="block",
    head_grid_size=4,
    head_conv_filters="auglocal",
    head_hidden_units=None,
    head_pooling="average",
    head_downsample_size=8,
    pool_in_next_block=False,
    final_head="classifier",
    input_normalization=None,
    name=None,
):
    """Builds a VGG network as a `GreedyLayerwiseModel`.

    VGG-11/13/16/19 (configurations A, B, D, E of Simonyan & Zisserman) with
    3x3 convolutions, optional batch normalization, ReLU and 2x2 max pooling
    after each stage, and a linear classifier on the globally pooled last
    feature map (for 32x32 inputs the map is already 1x1). `width` scales
    every layer's channels: width 64 is the standard network
    (64-128-256-...-512), width 16 a quarter of it for CPU runs.

    Args:
        depth: 11, 13, 16 or 19. Defaults to 11.
        num_classes: number of classes. Defaults to 10.
        input_shape: shape of one image. Defaults to `(32, 32, 3)`.
        width: channels of the first layer; every layer scales with it.
            Defaults to 64.
        batch_norm: whether to add batch normalization after each
            convolution. Defaults to True.
        granularity: `"block"` (one block per convolution, pooling at the
            end of a stage's last block; `"layer"` is accepted too) or
            `"stage"` (one block per VGG stage). Defaults to `"block"`.
        head_grid_size: grid side of the auxiliary heads' pooling.
            Defaults to 4.
        head_conv_filters: the auxiliary heads' 3x3 convolutions (each with
            batch normalization and ReLU) before the pooling: None, the
            filters of one (an int), of 1 to 3 (a list), or `"auglocal"`:
            each head a thinned copy of the blocks that follow it, deeper
            for early blocks (`keras_dib.models.builder_assembly
            .auglocal_filters`). Defaults to `"auglocal"`, the most
            accurate choice on a validation split (GTSRB, VGG-11: +2.5
            points over one 32-filter convolution; see
            benchmarks/RESULTS.md).
        head_hidden_units: optional units of a hidden Dense layer in each
            auxiliary head. Defaults to None.
        head_pooling: `"average"`, `"max"` or `"global_average"`, for the
            auxiliary heads. Defaults to `"average"`.
        head_downsample_size: optional int: the auxiliary heads
            average-pool larger feature maps down to about this side
            before their convolutions (`AuxiliaryHead(downsample_size=)`),
            which keeps the heads of the first, full-resolution blocks
            from dominating their training memory. Defaults to 8 (with the
            `"auglocal"` heads: the same validation accuracy, and block 1
            at 67% instead of 76% of end to end's step memory); None
            keeps every head at its block's resolution.
        pool_in_next_block: bool. If True, each stage's max pooling
            starts the next block instead of ending the stage's last one
            (the last stage's stays at the end): the same network, cut
            just before the pooling. A block's training step then never
            backpropagates through a max pooling (its input is frozen),
            whose gradient XLA computes with several full-resolution
            buffers, and block 1 costs at most half of end to end's step
            memory (see docs/training.md). Its head sees the unpooled map:
            pair it with `head_downsample_size`. Defaults to False.
        final_head: `"classifier"` (the network's own classifier) or
            `"auxiliary"` (a head built like the auxiliary heads, through
            which the last block is trained and which classifies at
            inference). Defaults to `"classifier"`.
        input_normalization: optional `(mean, std)` per channel on the
            0-255 scale (a number or one per channel each): a
            `keras.layers.Normalization` first in block 1, so the model,
            its `.keras` file and `keras_dib.export_for_serving(model,
            path)` take raw 0-255 images. Feed it un-normalised images
            (`keras_dib.datasets.gtsrb(..., normalization=None)`).
            Defaults to None (the inputs are normalised outside).
        name: optional model name. Defaults to `"vgg{depth}"`.

    Returns:
        A `keras_dib.GreedyLayerwiseModel`, built, with one block per layer
        or stage and default auxiliary heads.

    Example:

    >>> model = keras_dib.build_vgg(11, num_classes=43, width=16)
    >>> model.num_blocks
    8

    References:
        - Simonyan & Zisserman, "Very Deep Convolutional Networks for
          Large-Scale Image Recognition", ICLR 2015.
          https://arxiv.org/abs/1409.1556
    """
    input_shape = check_builder_arguments(
        depth,
        VGG_STAGES,
        granularity,
        GRANULARITIES,
        width,
        num_classes,
        input_shape,
    )
    if any(size is not None and size < 32 for size in input_shape[:2]):
        raise ValueError(
            "VGG halves the image 5 times, so `input_shape` needs a height "
            f"and width of at least 32. Received: input_shape={input_shape}"
        )
    if not isinstance(pool_in_next_block, bool):
        raise ValueError(
            "`pool_in_next_block` should be True or False. Received: "
            f"pool_in_next_block={pool_in_next_block!r}"
        )
    blocks = []
    block_channels = []
    # With `pool_in_next_block`, a stage's pooling waits here for the next
    # block.
    pending_pool = []
    stages = VGG_STAGES[depth]
    for stage_index, stage in enumerate(stages):
        stage_layers = []
        for conv_index, filters in enumerate(stage):
            channels = max(filters * width // 64, 1)
            prefix = f"stage{stage_index + 1}_{conv_index + 1}"
            layers = pending_pool + _conv_layers(channels, batch_norm, prefix)
            pending_pool = []
            if conv_index == len(stage) - 1:
                pool = keras.layers.MaxPooling2D(
                    2, name=f"stage{stage_index + 1}_pool"
                )
                if pool_in_next_block and stage_index < len(stages) - 1:
                    pending_pool = [pool]
                else:
                    layers.append(pool)
            if granularity != "stage":
                blocks.append(keras.Sequential(layers, name=f"block_{prefix}"))
                block_channels.append(channels)
            else:
                stage_layers.extend(layers)
        if granularity == "stage":
            block_channels.append(channels)
            blocks.append(
                keras.Sequential(
                    stage_layers, name=f"block_stage{stage_index + 1}"
                )
            )
    return assemble_greedy_model(
        blocks,
        block_channels,
        num_classes=num_classes,
        input_shape=input_shape,
        name=name or f"vgg{depth}",
        classifier=dict(grid_size=1),
        head_options=dict(
            final_head=final_head,
            input_normalization=input_normalization,
            grid_size=head_grid_size,
            pooling=head_pooling,
            conv_filters=head_conv_filters,
            hidden_units=head_hidden_units,
            downsample_size=head_downsample_size,
        ),
    )

"""ResNet-18/34 for 32x32 images, cut into blocks for greedy training."""

import keras

from keras_dib.models.builder_assembly import assemble_greedy_model
from keras_dib.models.builder_checks import check_builder_arguments

# Residual blocks per stage, after He et al. (2016), Table 1 (BasicBlock).
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# Channels of each stage at width 64.
STAGE_CHANNELS = (64, 128, 256, 512)
GRANULARITIES = ("block", "stage")
# Keras' momentum 0.9 is PyTorch's 0.1, the reference ResNets' setting: the
# moving statistics settle within tens of steps, which matters when a block
# is trained for one short stage and then frozen in inference mode.
BATCH_NORM_MOMENTUM = 0.9


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` should be a positive integer. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="keras_dib")
class ResidualBlock(keras.layers.Layer):
    """Basic residual block of ResNet-18/34: two 3x3 convolutions.

    `y = relu(BN(conv3x3(relu(BN(conv3x3(x, strides))))) + shortcut(x))`,
    where the shortcut is the identity, or a 1x1 convolution with the same
    strides followed by batch normalization (projection, option B of He et
    al.) when the strides are not 1 or the number of channels changes.
    Convolutions have no bias and He-normal initialisation; batch
    normalization uses momentum 0.9 (PyTorch's 0.1).

    Args:
        filters: int, output channels of both convolutions.
        strides: int, strides of the first convolution and of the
            projection. Defaults to 1.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Returns:
        A feature map of shape `(batch, height / strides, width / strides,
        filters)` when called (`"same"` padding).

    Example:

    >>> block = keras_dib.models.ResidualBlock(32, strides=2)
    >>> tuple(block(np.zeros((8, 16, 16, 16))).shape)
    (8, 8, 8, 32)

    References:
        - He, Zhang, Ren & Sun, "Deep Residual Learning for Image
          Recognition", CVPR 2016. https://arxiv.org/abs/1512.03385
    """

    def __init__(self, filters, strides=1, **kwargs):
        _check_positive_int("filters", filters)
        _check_positive_int("strides", strides)
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.conv_1 = self._conv(3, strides, "conv_1")
        self.batch_norm_1 = self._batch_norm("batch_norm_1")
        self.conv_2 = self._conv(3, 1, "conv_2")
        self.batch_norm_2 = self._batch_norm("batch_norm_2")
        self.projection = None
        self.projection_batch_norm = None

    def _conv(self, kernel_size, strides, name):
        return keras.layers.Conv2D(
            self.filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            dtype=self.dtype_policy,
            name=name,
        )

    def _batch_norm(self, name):
        return keras.layers.BatchNormalization(
            momentum=BATCH_NORM_MOMENTUM, dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(
                "ResidualBlock expects feature maps of rank 4 (batch, "
                f"height, width, channels). Received: input_shape={input_shape}"
            )
        if self.strides != 1 or input_shape[-1] != self.filters:
            self.projection = self._conv(1, self.strides, "projection")
            self.projection_batch_norm = self._batch_norm(
                "projection_batch_norm"
            )
            self.projection.build(input_shape)
            self.projection_batch_norm.build(
                self.projection.compute_output_shape(input_shape)
            )
        self.conv_1.build(input_shape)
        shape = self.conv_1.compute_output_shape(input_shape)
        self.batch_norm_1.build(shape)
        self.conv_2.build(shape)
        self.batch_norm_2.build(shape)

    def call(self, inputs, training=None):
        x = self.conv_1(inputs)
        x = self.batch_norm_1(x, training=training)
        x = keras.activations.relu(x)
        x = self.conv_2(x)
        x = self.batch_norm_2(x, training=training)
        shortcut = inputs
        if self.projection is not None:
            shortcut = self.projection(inputs)
            shortcut = self.projection_batch_norm(shortcut, training=training)
        return keras.activations.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv_1.compute_output_shape(tuple(input_shape))[:-1] + (
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides})
        return config


def build_resnet(
    depth=18,
    num_classes=10,
    input_shape=(32, 32, 3),
    width=64,
    granularity="block",
    head_grid_size=4,
    head_conv_filters=32,
    head_hidden_units=None,
    head_pooling="average",
    head_downsample_size=None,
    final_head="classifier",
    input_normalization=None,
    name=None,
):
    """Builds a CIFAR-style ResNet-18 or ResNet-34 as a `GreedyLayerwiseModel`.

    The CIFAR variant of He et al.'s ImageNet ResNets, as commonly used for
    32x32 images: a stem of one 3x3 convolution (stride 1, no max pooling)
    with batch normalization and ReLU, then four stages of basic residual
    blocks (`keras_dib.models.ResidualBlock`; 2-2-2-2 blocks for depth 18,
    3-4-6-3 for depth 34) with 64, 128, 256 and 512 channels, the first
    block of stages 2-4 having stride 2 and a 1x1 projection shortcut; the
    classifier is global average pooling and a Dense layer. `width` scales
    every layer's channels: width 64 is the standard network, width 16 a
    quarter of it for CPU runs. A 32x32 image ends as a 4x4 map.

    The greedy blocks: with `granularity="block"` every residual block is
    one greedy block (8 for ResNet-18, 16 for ResNet-34) and the stem is
    part of the first one, since a single convolution is a weak block on
    its own; with `granularity="stage"` every stage is one block (4), the
    stem again in the first. A skip connection never crosses a cut: each
    block's output is all its successors see. The last block is trained
    through the final classifier, the others through auxiliary heads.

    Args:
        depth: 18 or 34. Defaults to 18.
        num_classes: number of classes. Defaults to 10.
        input_shape: shape of one image. Defaults to `(32, 32, 3)`.
        width: channels of the stem and of stage 1; every layer scales with
            it (`channels * width // 64`). Defaults to 64.
        granularity: `"block"` (one greedy block per residual block;
            `"layer"` is accepted too) or `"stage"` (one per stage).
            Defaults to `"block"`.
        head_grid_size: grid side of the auxiliary heads' pooling.
            Defaults to 4.
        head_conv_filters: the auxiliary heads' 3x3 convolutions (each with
            batch normalization and ReLU) before the pooling: None, the
            filters of one (an int), of 1 to 3 (a list), or `"auglocal"`:
            each head a thinned copy of the blocks that follow it, deeper
            for early blocks (`keras_dib.models.builder_assembly
            .auglocal_filters`). Defaults to 32.
        head_hidden_units: optional units of a hidden Dense layer in each
            auxiliary head. Defaults to None.
        head_pooling: `"average"`, `"max"` or `"global_average"`, for the
            auxiliary heads. Defaults to `"average"`.
        head_downsample_size: optional int: the auxiliary heads
            average-pool larger feature maps down to about this side
            before their convolutions (`AuxiliaryHead(downsample_size=)`),
            which keeps the heads of the first, full-resolution blocks
            from dominating their training memory. Defaults to None.
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
        name: optional model name. Defaults to `"resnet{depth}"`.

    Returns:
        A `keras_dib.GreedyLayerwiseModel`, built, with default auxiliary
        heads and the final head
        `AuxiliaryHead(num_classes, pooling="global_average")`.

    Example:

    >>> model = keras_dib.build_resnet(18, num_classes=43, width=16)
    >>> model.num_blocks
    8
    >>> model = keras_dib.build_resnet(34, width=8, granularity="stage")
    >>> model.num_blocks
    4

    References:
        - He, Zhang, Ren & Sun, "Deep Residual Learning for Image
          Recognition", CVPR 2016. https://arxiv.org/abs/1512.03385
        - Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of
          CNNs", ICML 2020. https://arxiv.org/abs/1901.08164
    """
    input_shape = check_builder_arguments(
        depth,
        RESNET_STAGES,
        granularity,
        GRANULARITIES,
        width,
        num_classes,
        input_shape,
    )
    stem = [
        keras.layers.Conv2D(
            max(64 * width // 64, 1),
            3,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name="stem_conv",
        ),
        keras.layers.BatchNormalization(
            momentum=BATCH_NORM_MOMENTUM, name="stem_batch_norm"
        ),
        keras.layers.ReLU(name="stem_relu"),
    ]
    stages = []
    for stage_index, (num_residual_blocks, channels) in enumerate(
        zip(RESNET_STAGES[depth], STAGE_CHANNELS)
    ):
        stages.append(
            [
                ResidualBlock(
                    max(channels * width // 64, 1),
                    strides=2 if stage_index > 0 and block_index == 0 else 1,
                    name=f"stage{stage_index + 1}_block{block_index + 1}",
                )
                for block_index in range(num_residual_blocks)
            ]
        )
    if granularity != "stage":
        groups = [
            (residual_block.name, [residual_block])
            for stage in stages
            for residual_block in stage
        ]
    else:
        groups = [
            (f"stage{index + 1}", stage) for index, stage in enumerate(stages)
        ]
    blocks = []
    for index, (group_name, layers) in enumerate(groups):
        if index == 0:
            blocks.append(
                keras.Sequential(stem + layers, name=f"block_stem_{group_name}")
            )
        elif len(layers) == 1:
            blocks.append(layers[0])
        else:
            blocks.append(keras.Sequential(layers, name=f"block_{group_name}"))
    block_channels = [layers[-1].filters for _, layers in groups]
    return assemble_greedy_model(
        blocks,
        block_channels,
        num_classes=num_classes,
        input_shape=input_shape,
        name=name or f"resnet{depth}",
        classifier=dict(pooling="global_average"),
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

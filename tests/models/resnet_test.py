import keras
import numpy as np
import pytest

from keras_dib.losses.dib import LocalObjective
from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.models.resnet import ResidualBlock
from keras_dib.models.resnet import build_resnet
from keras_dib.testing import TestCase
from tests import shared_data


def inference_parameters(model):
    """Trainable parameters of the inference network (no auxiliary heads)."""
    return sum(
        int(np.prod(variable.shape))
        for layer in model.blocks + [model.head]
        for variable in layer.trainable_weights
    )


def resnet_parameters(depth, width, num_classes):
    """Closed-form parameter count of the CIFAR ResNet (BN: scale, offset)."""
    stages = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    channels = width
    count = 3 * 3 * 3 * channels + 2 * channels  # stem
    for index, num_blocks in enumerate(stages):
        out = (64 << index) * width // 64
        for _ in range(num_blocks):
            count += 9 * channels * out + 2 * out + 9 * out * out + 2 * out
            if channels != out:
                count += channels * out + 2 * out  # 1x1 projection
            channels = out
    return count + channels * num_classes + num_classes


class ResidualBlockTest(TestCase):
    def test_shapes_and_projection(self):
        identity = ResidualBlock(8)
        self.assertEqual(identity(np.zeros((2, 8, 8, 8))).shape, (2, 8, 8, 8))
        self.assertIsNone(identity.projection)
        strided = ResidualBlock(16, strides=2)
        self.assertEqual(strided(np.zeros((2, 8, 8, 8))).shape, (2, 4, 4, 16))
        self.assertIsNotNone(strided.projection)
        widened = ResidualBlock(16)
        widened(np.zeros((2, 8, 8, 8)))
        self.assertIsNotNone(widened.projection)
        self.assertEqual(
            strided.compute_output_shape((None, 8, 8, 8)), (None, 4, 4, 16)
        )

    def test_identity_shortcut_matches_numpy(self):
        # With a zero residual branch, inference gives relu(0 + x).
        block = ResidualBlock(4)
        x = np.random.default_rng(0).normal(size=(3, 6, 6, 4)).astype("float32")
        block(x)
        for conv in (block.conv_1, block.conv_2):
            conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
        self.assertAllClose(block(x, training=False), np.maximum(x, 0))

    def test_projection_shortcut_matches_numpy(self):
        # Zero residual branch: relu(BN(conv1x1 with stride 2 of x)), and a
        # fresh BN in inference mode divides by sqrt(1 + epsilon).
        block = ResidualBlock(5, strides=2)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
        block(x)
        for conv in (block.conv_1, block.conv_2):
            conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
        kernel = rng.normal(size=(1, 1, 3, 5)).astype("float32")
        block.projection.kernel.assign(kernel)
        epsilon = block.projection_batch_norm.epsilon
        expected = np.einsum("bhwc,cf->bhwf", x[:, ::2, ::2], kernel[0, 0])
        expected = np.maximum(expected / np.sqrt(1.0 + epsilon), 0)
        self.assertAllClose(
            block(x, training=False), expected, atol=1e-5, rtol=1e-5
        )

    def test_serialization(self):
        block = ResidualBlock(16, strides=2, name="residual")
        revived = self.run_serialization_test(block)
        self.assertEqual((revived.filters, revived.strides), (16, 2))

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`filters` should be"):
            ResidualBlock(0)
        with pytest.raises(ValueError, match="`strides` should be"):
            ResidualBlock(8, strides=1.5)
        with pytest.raises(ValueError, match="rank 4"):
            ResidualBlock(8)(np.zeros((2, 8)))


class BuildResNetTest(TestCase):
    def test_blocks_per_granularity(self):
        expected = {
            (18, "block"): 8,
            (18, "stage"): 4,
            (34, "block"): 16,
            (34, "stage"): 4,
        }
        for (depth, granularity), count in expected.items():
            model = build_resnet(
                depth, num_classes=3, width=4, granularity=granularity
            )
            self.assertIsInstance(model, GreedyLayerwiseModel)
            self.assertEqual(model.num_blocks, count)
            self.assertEqual(model.name, f"resnet{depth}")
            self.assertEqual(len(model.auxiliary_heads), count - 1)
            # The stem is part of the first block.
            self.assertEqual(model.blocks[0].layers[0].name, "stem_conv")

    def test_shapes_scale_with_width(self):
        model = build_resnet(18, num_classes=3, width=4, granularity="block")
        shape = (None, 32, 32, 3)
        shapes = []
        for block in model.blocks:
            shape = block.compute_output_shape(shape)
            shapes.append(shape)
        self.assertEqual(
            shapes,
            [(None, 32, 32, 4)] * 2
            + [(None, 16, 16, 8)] * 2
            + [(None, 8, 8, 16)] * 2
            + [(None, 4, 4, 32)] * 2,
        )
        x = np.zeros((2, 32, 32, 3), "float32")
        self.assertEqual(model.predict(x, verbose=0).shape, (2, 3))

    def test_parameter_count_of_reference_networks(self):
        # The usual CIFAR ResNets (He et al.'s BasicBlock with a 3x3 stem
        # and 1x1 projection shortcuts) have 11,173,962 (ResNet-18) and
        # 21,282,122 (ResNet-34) parameters for 10 classes, batch-norm
        # scales and offsets included, moving statistics excluded. The
        # count formula is checked against them at width 64, and the
        # network against the formula at width 4 (cheaper to build).
        self.assertEqual(resnet_parameters(18, 64, 10), 11_173_962)
        self.assertEqual(resnet_parameters(34, 64, 10), 21_282_122)
        for depth in (18, 34):
            model = build_resnet(depth, num_classes=3, width=4)
            self.assertEqual(
                inference_parameters(model), resnet_parameters(depth, 4, 3)
            )

    def test_resnet34_stages(self):
        model = build_resnet(34, num_classes=3, width=4, granularity="block")
        residual_blocks = [model.blocks[0].layers[-1]] + model.blocks[1:]
        self.assertEqual(
            [(block.filters, block.strides) for block in residual_blocks],
            [(4, 1)] * 3
            + [(8, 2)]
            + [(8, 1)] * 3
            + [(16, 2)]
            + [(16, 1)] * 5
            + [(32, 2)]
            + [(32, 1)] * 2,
        )

    def test_heads(self):
        model = build_resnet(
            18,
            num_classes=3,
            width=4,
            granularity="stage",
            head_grid_size=1,
            head_conv_filters=6,
            head_hidden_units=12,
            head_pooling="max",
            name="custom",
        )
        self.assertEqual(model.name, "custom")
        for head in model.auxiliary_heads:
            self.assertIsInstance(head, AuxiliaryHead)
            self.assertEqual(
                (
                    head.grid_size,
                    head.conv_filters,
                    head.hidden_units,
                    head.pooling,
                ),
                (1, 6, 12, "max"),
            )
        self.assertEqual(model.head.pooling, "global_average")

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`depth` should be one of"):
            build_resnet(50)
        with pytest.raises(ValueError, match="`depth` should be one of"):
            build_resnet(True)
        with pytest.raises(ValueError, match="`granularity` should be one"):
            build_resnet(18, granularity="layers")
        with pytest.raises(ValueError, match="`width` should be a positive"):
            build_resnet(18, width=0)
        with pytest.raises(ValueError, match="`num_classes` should be"):
            build_resnet(18, num_classes=1)
        with pytest.raises(ValueError, match="`input_shape` should be"):
            build_resnet(18, input_shape=(32, 32))

    def test_keras_round_trip(self):
        model = build_resnet(18, num_classes=3, width=4, granularity="stage")
        x = np.random.default_rng(0).normal(size=(3, 32, 32, 3))
        restored = self.run_model_saving_test(model, x.astype("float32"))
        self.assertEqual(restored.num_blocks, 4)
        self.assertIsInstance(restored.blocks[1].layers[0], ResidualBlock)

    def test_block_granularity_round_trip_after_training(self):
        # Residual blocks are greedy blocks themselves here; training the
        # first block changes its weights and batch-norm statistics.
        model = build_resnet(18, num_classes=3, width=4, input_shape=(8, 8, 3))
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
        y = (np.arange(16) % 3).astype("int32")
        before = model.predict(x, verbose=0)
        model.compile(optimizer="adam", loss=LocalObjective())
        epochs = [1, 0, 0, 0, 0, 0, 0, 0]
        history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
        self.assertEqual(history.history["block"], [0])
        self.assertGreater(
            np.max(np.abs(model.predict(x, verbose=0) - before)), 1e-4
        )
        restored = self.run_model_saving_test(model, x, atol=1e-5)
        self.assertIsInstance(restored.blocks[1], ResidualBlock)


@pytest.mark.large
@pytest.mark.skipif(
    shared_data.shared_dir("gtsrb") is None, reason="no ../shared/data/gtsrb"
)
class ResNetGTSRBTest(TestCase):
    def test_trains_greedily_on_real_gtsrb_slice(self):
        (x_train, y_train, _), (x_test, y_test) = shared_data.gtsrb()
        rng = np.random.default_rng(0)
        train = rng.permutation(len(x_train))[:2000]
        test = rng.permutation(len(x_test))[:1000]
        mean = x_train[train].mean(axis=(0, 1, 2))
        std = x_train[train].std(axis=(0, 1, 2))

        def standardize(images):
            return ((images.astype("float32") - mean) / std).astype("float32")

        # Heads pool to 8x8 before their convolution (the memory-balanced
        # heads): the same learning at a fraction of the CPU cost (torch).
        model = build_resnet(
            18,
            num_classes=43,
            width=8,
            granularity="stage",
            head_downsample_size=8,
            name="tiny",
        )
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=LocalObjective(),
            metrics=["accuracy"],
        )
        history = model.fit(
            standardize(x_train[train]),
            y_train[train],
            batch_size=32,
            epochs=1,
            verbose=0,
        )
        self.assertEqual(history.history["block"], [0, 1, 2, 3])
        accuracy = model.evaluate(
            standardize(x_test[test]),
            y_test[test],
            batch_size=250,
            verbose=0,
            return_dict=True,
        )["accuracy"]
        # 43 classes: chance is 2.3% and always answering the most frequent
        # class gives 5.7% on the test set. One epoch per stage on 2000
        # images reached 23.6% (JAX), 26.2% (TensorFlow) and 24.7% (torch)
        # with this seed, and 15-22% with others, so 10% leaves room for
        # seeds and backends while still requiring real learning.
        self.assertGreater(accuracy, 0.10)

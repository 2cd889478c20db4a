"""Tests of keras_dib.models.vgg.build_vgg."""

import numpy as np

from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models import build_vgg
from keras_dib.models.vgg import VGG_STAGES
from keras_dib.testing import TestCase


def _manual_param_count(depth, width, num_classes, channels_in=3):
    """Parameters of build_vgg's inference network (BN: 4 per channel)."""
    total = 0
    for stage in VGG_STAGES[depth]:
        for filters in stage:
            channels = max(filters * width // 64, 1)
            total += 9 * channels_in * channels + 4 * channels
            channels_in = channels
    return total + channels_in * num_classes + num_classes


class BuildVGGTest(TestCase):
    def test_block_counts(self):
        for depth, layers in ((11, 8), (13, 10), (16, 13), (19, 16)):
            model = build_vgg(depth, width=1, num_classes=3)
            self.assertIsInstance(model, GreedyLayerwiseModel)
            self.assertEqual(model.num_blocks, layers)
            self.assertEqual(len(model.auxiliary_heads), layers - 1)
            model = build_vgg(depth, width=1, granularity="stage")
            self.assertEqual(model.num_blocks, 5)
            self.assertEqual(len(model.auxiliary_heads), 4)

    def test_output_shape(self):
        model = build_vgg(11, num_classes=7, width=4)
        x = np.zeros((2, 32, 32, 3), dtype="float32")
        self.assertEqual(tuple(model(x).shape), (2, 7))
        model = build_vgg(
            13, num_classes=5, width=4, input_shape=(32, 32, 1), name="tiny"
        )
        self.assertEqual(model.name, "tiny")
        x = np.zeros((3, 32, 32, 1), dtype="float32")
        self.assertEqual(tuple(model(x).shape), (3, 5))

    def test_width_scaling(self):
        for depth, width in ((11, 16), (16, 8)):
            model = build_vgg(depth, num_classes=10, width=width)
            inference = (
                sum(block.count_params() for block in model.blocks)
                + model.head.count_params()
            )
            self.assertEqual(
                inference, _manual_param_count(depth, width, num_classes=10)
            )
        # Channels of the first and last convolutions at width 16.
        model = build_vgg(11, width=16, granularity="stage")
        first = model.blocks[0].layers[0]
        last_convs = [
            layer for layer in model.blocks[-1].layers if "conv" in layer.name
        ]
        self.assertEqual(first.filters, 16)
        self.assertEqual(last_convs[-1].filters, 128)

    def test_without_batch_norm(self):
        model = build_vgg(11, width=4, batch_norm=False, granularity="stage")
        names = [layer.name for block in model.blocks for layer in block.layers]
        self.assertFalse(any("bn" in name for name in names))
        self.assertTrue(model.blocks[0].layers[0].use_bias)

    def test_head_arguments(self):
        model = build_vgg(
            11,
            width=4,
            head_grid_size=1,
            head_conv_filters=3,
            head_hidden_units=6,
            head_pooling="max",
        )
        head = model.auxiliary_heads[0]
        self.assertEqual(
            (head.grid_size, head.conv_filters, head.hidden_units),
            (1, 3, 6),
        )
        self.assertEqual(head.pooling, "max")

    def test_bad_arguments(self):
        for kwargs, name in (
            ({"depth": 12}, "depth"),
            ({"width": 0}, "width"),
            ({"width": 1.5}, "width"),
            ({"granularity": "x"}, "granularity"),
            ({"num_classes": 1}, "num_classes"),
            ({"input_shape": (32, 32)}, "input_shape"),
        ):
            with self.assertRaisesRegex(ValueError, name, msg=str(kwargs)):
                build_vgg(**kwargs)

    def test_granularity_names(self):
        block = build_vgg(11, width=1, granularity="block")
        layer = build_vgg(11, width=1, granularity="layer")
        self.assertEqual(
            [b.name for b in block.blocks], [b.name for b in layer.blocks]
        )

    def test_final_head(self):
        model = build_vgg(11, width=4, head_conv_filters=[3, 5])
        self.assertEqual(model.head.conv_filters, None)
        self.assertEqual(model.head.grid_size, 1)
        model = build_vgg(
            11, width=4, head_conv_filters=[3, 5], final_head="auxiliary"
        )
        self.assertEqual(model.head.name, "head")
        self.assertEqual(model.head.conv_filters, [3, 5])
        self.assertEqual(model.head.grid_size, 4)
        x = np.zeros((2, 32, 32, 3), dtype="float32")
        self.assertEqual(tuple(model(x).shape), (2, 10))
        with self.assertRaisesRegex(ValueError, "Received: final_head='aux'"):
            build_vgg(11, width=4, final_head="aux")

    def test_auglocal_heads(self):
        # VGG-11 at width 64: block outputs 64-128-256-256-512-512-512-512.
        model = build_vgg(11, width=64, head_conv_filters="auglocal")
        filters = [head.conv_filters for head in model.auxiliary_heads]
        # Depth falls from 3 to 1 toward the output; widths are half those
        # of the blocks that follow, sampled from the first to the last.
        self.assertEqual(filters[0], [64, 256, 256])
        self.assertEqual([len(f) for f in filters], [3, 3, 3, 2, 2, 1, 1])
        self.assertEqual(filters[-1], [256])
        with self.assertRaisesRegex(ValueError, "head_conv_filters='aug'"):
            build_vgg(11, width=4, head_conv_filters="aug")

    def test_input_normalization(self):
        mean, std = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]
        model = build_vgg(11, width=2, input_normalization=(mean, std))
        normalization = model.blocks[0].layers[0]
        self.assertEqual(normalization.name, "input_normalization")
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
        self.assertAllClose(
            normalization(x),
            (x - np.array(mean)) / np.array(std),
            atol=1e-4,
            rtol=1e-4,
        )
        # The .keras file keeps it: raw images in, same predictions out.
        self.run_model_saving_test(model, x, atol=1e-5)
        # One number for every channel.
        model = build_vgg(11, width=2, input_normalization=(127.5, 64.0))
        self.assertAllClose(model.blocks[0].layers[0](x), (x - 127.5) / 64)

    def test_bad_input_normalization(self):
        for value in ((0, 0), (0, [1, 2]), (0, -1), 3.0, (np.nan, 1)):
            with self.assertRaisesRegex(ValueError, "input_normalization"):
                build_vgg(11, width=2, input_normalization=value)

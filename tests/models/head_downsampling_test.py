"""Tests of the memory-balanced split options.

`AuxiliaryHead(downsample_size=...)`, the builders' `head_downsample_size`
and `build_vgg(pool_in_next_block=True)`.
"""

import keras
import numpy as np

from keras_dib.models import AuxiliaryHead
from keras_dib.models import build_resnet
from keras_dib.models import build_vgg
from keras_dib.testing import TestCase


def _average_pool(x, pool):
    """NumPy reference: "valid" average pooling with strides `pool`."""
    batch, height, width, channels = x.shape
    height, width = height // pool, width // pool
    x = x[:, : height * pool, : width * pool]
    return x.reshape(batch, height, pool, width, pool, channels).mean((2, 4))


def _copy_weights(source, target):
    for source_weight, target_weight in zip(source.weights, target.weights):
        target_weight.assign(source_weight)


class HeadDownsamplingTest(TestCase):
    def test_numpy_reference(self):
        # 18x17 maps, downsample_size 4: 4x4 average pooling (the last
        # rows and columns dropped) to 4x4, then the 2x2 grid.
        x = np.random.default_rng(0).normal(size=(3, 18, 17, 5))
        head = AuxiliaryHead(7, grid_size=2, downsample_size=4)
        logits = head(x.astype("float32"))
        pooled = _average_pool(_average_pool(x, 4), 2).reshape(3, -1)
        dense = head.head_layers[-1]
        expected = pooled @ keras.ops.convert_to_numpy(
            dense.kernel
        ) + keras.ops.convert_to_numpy(dense.bias)
        self.assertAllClose(logits, expected, atol=1e-5, rtol=1e-5)

    def test_convolutions_run_after_downsampling(self):
        x = np.random.default_rng(1).normal(size=(2, 32, 32, 3))
        x = x.astype("float32")
        head = AuxiliaryHead(
            5, grid_size=4, conv_filters=[4, 6], downsample_size=8
        )
        logits = head(x)
        # The same head without downsampling, on the pooled maps.
        reference = AuxiliaryHead(5, grid_size=4, conv_filters=[4, 6])
        pooled = _average_pool(x, 4).astype("float32")
        reference(pooled)
        _copy_weights(head, reference)
        self.assertAllClose(logits, reference(pooled), atol=1e-4, rtol=1e-4)

    def test_small_maps_are_not_downsampled(self):
        x = np.random.default_rng(2).normal(size=(2, 8, 8, 3))
        x = x.astype("float32")
        head = AuxiliaryHead(4, conv_filters=2, downsample_size=8)
        reference = AuxiliaryHead(4, conv_filters=2)
        reference(x)
        logits = head(x)
        _copy_weights(head, reference)
        self.assertAllClose(logits, reference(x), atol=1e-5, rtol=1e-5)

    def test_gradient_reaches_inputs(self):
        x = keras.ops.convert_to_tensor(
            np.random.default_rng(3).normal(size=(2, 16, 16, 3)), "float32"
        )
        head = AuxiliaryHead(3, grid_size=2, downsample_size=4)
        head(x)
        kernel = keras.ops.convert_to_numpy(head.head_layers[-1].kernel)
        # d(sum of logits)/dx: every input pixel of a 4x4 window of the
        # first pooling and 2x2 cell of the grid gets 1/64 of the kernel
        # row sum of its grid cell and channel.
        rows = kernel.sum(axis=1).reshape(2, 2, 3)
        expected = np.repeat(np.repeat(rows, 8, axis=0), 8, axis=1) / 64
        gradient = _input_gradient(head, x)
        self.assertAllClose(
            gradient, np.broadcast_to(expected, (2, 16, 16, 3)), atol=1e-6
        )

    def test_bad_arguments(self):
        for value in (0, -2, 2.5, True, "8"):
            with self.assertRaisesRegex(ValueError, "downsample_size"):
                AuxiliaryHead(3, downsample_size=value)
        with self.assertRaisesRegex(ValueError, "at least `grid_size`"):
            AuxiliaryHead(3, grid_size=4, downsample_size=2)
        # Global pooling has no grid: any size is fine.
        head = AuxiliaryHead(3, pooling="global_average", downsample_size=1)
        self.assertEqual(tuple(head(np.ones((2, 4, 4, 2))).shape), (2, 3))
        with self.assertRaisesRegex(ValueError, "static spatial"):
            AuxiliaryHead(3, downsample_size=4).build((None, None, None, 2))

    def test_serialization(self):
        head = AuxiliaryHead(7, conv_filters=4, downsample_size=8)
        revived = self.run_serialization_test(head)
        self.assertEqual(revived.downsample_size, 8)
        # A configuration saved before the option existed loads without it.
        config = head.get_config()
        del config["downsample_size"]
        self.assertIsNone(AuxiliaryHead.from_config(config).downsample_size)

    def test_saving_in_model(self):
        inputs = keras.Input((16, 16, 3))
        outputs = AuxiliaryHead(4, conv_filters=2, downsample_size=4)(inputs)
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(4).normal(size=(3, 16, 16, 3))
        restored = self.run_model_saving_test(model, x, atol=1e-5)
        self.assertEqual(restored.layers[-1].downsample_size, 4)


class MemoryBalancedBuildersTest(TestCase):
    def test_builders_pass_head_downsample_size(self):
        # build_vgg's heads pool to 8x8 by default, build_resnet's do not.
        for builder, depth, default_size in (
            (build_vgg, 11, 8),
            (build_resnet, 18, None),
        ):
            model = builder(depth, width=4, head_downsample_size=6)
            for head in model.auxiliary_heads:
                self.assertEqual(head.downsample_size, 6)
            # The network's own classifier is not an auxiliary head.
            self.assertIsNone(model.head.downsample_size)
            model = builder(
                depth,
                width=4,
                final_head="auxiliary",
                head_downsample_size=None,
            )
            for head in model.auxiliary_heads + [model.head]:
                self.assertIsNone(head.downsample_size)
            default = builder(depth, width=4)
            for head in default.auxiliary_heads:
                self.assertEqual(head.downsample_size, default_size)
            self.assertIsNone(default.head.downsample_size)

    def test_pool_in_next_block_is_the_same_network(self):
        default = build_vgg(11, num_classes=5, width=4)
        balanced = build_vgg(
            11,
            num_classes=5,
            width=4,
            pool_in_next_block=True,
            head_downsample_size=8,
        )
        self.assertEqual(balanced.num_blocks, default.num_blocks)

        def pools(model):
            return [
                [
                    index
                    for index, layer in enumerate(block.layers)
                    if isinstance(layer, keras.layers.MaxPooling2D)
                ]
                for block in model.blocks
            ]

        # VGG-11: pools end blocks 1, 2, 4, 6 and 8 by default; with
        # `pool_in_next_block` they start blocks 2, 3, 5 and 7, and the
        # last stage's still ends block 8.
        self.assertEqual(pools(default), [[3], [3], [], [3], [], [3], [], [3]])
        self.assertEqual(pools(balanced), [[], [0], [0], [], [0], [], [0], [3]])
        # Block 1's head sees the unpooled 32x32 map.
        self.assertEqual(
            tuple(balanced.blocks[0].compute_output_shape((None, 32, 32, 3))),
            (None, 32, 32, 4),
        )
        x = np.random.default_rng(5).normal(size=(2, 32, 32, 3))
        x = x.astype("float32")
        for source, target in zip(default.blocks, balanced.blocks):
            _copy_weights(source, target)
        _copy_weights(default.head, balanced.head)
        self.assertAllClose(balanced(x), default(x), atol=1e-5, rtol=1e-5)

    def test_pool_in_next_block_by_stage(self):
        model = build_vgg(
            11, width=4, granularity="stage", pool_in_next_block=True
        )
        kinds = [
            [type(layer).__name__ for layer in block.layers][:1]
            for block in model.blocks
        ]
        self.assertEqual(kinds[0], ["Conv2D"])
        self.assertEqual(kinds[1:], [["MaxPooling2D"]] * 4)
        x = np.zeros((2, 32, 32, 3), dtype="float32")
        self.assertEqual(tuple(model(x).shape), (2, 10))

    def test_bad_pool_in_next_block(self):
        with self.assertRaisesRegex(ValueError, "pool_in_next_block"):
            build_vgg(11, width=4, pool_in_next_block="yes")

    def test_saving_balanced_model(self):
        model = build_vgg(
            11,
            num_classes=5,
            width=4,
            pool_in_next_block=True,
            head_downsample_size=8,
        )
        x = np.random.default_rng(6).normal(size=(2, 32, 32, 3))
        restored = self.run_model_saving_test(model, x, atol=1e-5)
        self.assertEqual(restored.auxiliary_heads[0].downsample_size, 8)


def _input_gradient(layer, x):
    """d(sum of `layer(x)`)/dx on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda v: keras.ops.sum(layer(v)))(x)
    if backend == "torch":
        x = x.detach().clone().requires_grad_(True)
        keras.ops.sum(layer(x)).backward()
        return x.grad.cpu().numpy()
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        total = keras.ops.sum(layer(x))
    return tape.gradient(total, x)

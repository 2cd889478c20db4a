"""Tests of keras_dib.models.heads.AuxiliaryHead."""

import keras
import numpy as np

from keras_dib.models import AuxiliaryHead
from keras_dib.testing import TestCase


class AuxiliaryHeadTest(TestCase):
    def _dense_inputs(self, head):
        return [layer for layer in head.head_layers if layer.name == "logits"][
            0
        ].kernel.shape[0]

    def test_grid_pooling(self):
        x = np.random.default_rng(0).normal(size=(3, 8, 8, 5))
        head = AuxiliaryHead(7, grid_size=2)
        logits = head(x)
        self.assertEqual(tuple(logits.shape), (3, 7))
        # 2x2 grid of 5 channels feeds the classifier.
        self.assertEqual(self._dense_inputs(head), 2 * 2 * 5)
        # Average pooling: compare with a NumPy reference.
        pooled = x.reshape(3, 2, 4, 2, 4, 5).mean(axis=(2, 4)).reshape(3, -1)
        dense = head.head_layers[-1]
        expected = pooled @ keras.ops.convert_to_numpy(
            dense.kernel
        ) + keras.ops.convert_to_numpy(dense.bias)
        self.assertAllClose(logits, expected, atol=1e-5, rtol=1e-5)

    def test_max_pooling_and_small_maps(self):
        head = AuxiliaryHead(4, grid_size=4, pooling="max")
        self.assertEqual(tuple(head(np.ones((2, 8, 8, 3))).shape), (2, 4))
        self.assertEqual(self._dense_inputs(head), 4 * 4 * 3)
        # A map smaller than the grid is not pooled.
        head = AuxiliaryHead(4, grid_size=4)
        self.assertEqual(tuple(head(np.ones((2, 2, 2, 3))).shape), (2, 4))
        self.assertEqual(self._dense_inputs(head), 2 * 2 * 3)

    def test_global_pooling(self):
        head = AuxiliaryHead(6, pooling="global_average")
        self.assertEqual(tuple(head(np.ones((2, 8, 8, 3))).shape), (2, 6))
        self.assertEqual(self._dense_inputs(head), 3)

    def test_conv_filters_and_hidden_units(self):
        head = AuxiliaryHead(5, conv_filters=9, hidden_units=11, dropout=0.2)
        logits = head(np.ones((2, 8, 8, 3)), training=True)
        self.assertEqual(tuple(logits.shape), (2, 5))
        names = [layer.name for layer in head.head_layers]
        self.assertIn("conv", names)
        self.assertIn("batch_norm", names)
        self.assertIn("hidden", names)
        self.assertEqual(self._dense_inputs(head), 11)
        conv = head.head_layers[names.index("conv")]
        self.assertEqual(tuple(conv.kernel.shape), (3, 3, 3, 9))

    def test_rank_2_inputs(self):
        head = AuxiliaryHead(3, hidden_units=4)
        self.assertEqual(tuple(head(np.ones((5, 10))).shape), (5, 3))
        self.assertEqual(self._dense_inputs(head), 4)
        self.assertEqual(head.compute_output_shape((None, 10)), (None, 3))

    def test_bad_inputs(self):
        with self.assertRaisesRegex(ValueError, "rank 4"):
            AuxiliaryHead(3)(np.ones((2, 3, 4)))

    def test_bad_arguments(self):
        for kwargs, name in (
            ({"num_classes": 0}, "num_classes"),
            ({"num_classes": 2.0}, "num_classes"),
            ({"num_classes": 3, "grid_size": 0}, "grid_size"),
            ({"num_classes": 3, "pooling": "min"}, "pooling"),
            ({"num_classes": 3, "conv_filters": 0}, "conv_filters"),
            ({"num_classes": 3, "hidden_units": -1}, "hidden_units"),
            ({"num_classes": 3, "dropout": 1.0}, "dropout"),
        ):
            with self.assertRaisesRegex(ValueError, name, msg=str(kwargs)):
                AuxiliaryHead(**kwargs)

    def test_serialization(self):
        head = AuxiliaryHead(
            7,
            grid_size=3,
            pooling="max",
            conv_filters=4,
            hidden_units=8,
            dropout=0.1,
            name="aux",
        )
        revived = self.run_serialization_test(head)
        self.assertEqual(revived.grid_size, 3)
        self.assertEqual(revived.pooling, "max")
        self.assertEqual(revived.name, "aux")

    def test_saving_in_model(self):
        inputs = keras.Input((8, 8, 3))
        outputs = AuxiliaryHead(4, conv_filters=2, hidden_units=5)(inputs)
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(1).normal(size=(3, 8, 8, 3))
        self.run_model_saving_test(model, x, atol=1e-5)


class DeepHeadTest(TestCase):
    def test_conv_filter_list(self):
        head = AuxiliaryHead(5, conv_filters=[4, 6, 8], grid_size=2)
        x = np.zeros((2, 8, 8, 3), dtype="float32")
        self.assertEqual(tuple(head(x).shape), (2, 5))
        convs = [layer for layer in head.head_layers if "conv" in layer.name]
        self.assertEqual([c.filters for c in convs], [4, 6, 8])
        self.assertEqual([c.name for c in convs], ["conv", "conv_2", "conv_3"])
        self.run_serialization_test(head)

    def test_bad_conv_filter_lists(self):
        for value in ([], [1, 2, 3, 4], [0], [2.5], "32", True):
            with self.assertRaisesRegex(ValueError, "conv_filters"):
                AuxiliaryHead(3, conv_filters=value)

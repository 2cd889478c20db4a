"""keras_dib._compat against the Keras internals it stands in for.

This is the one test file that reads `keras.src` or private Keras
attributes: it fails when Keras changes how it scales losses under
`tf.distribute`, or how a functional model records its layer graph, both
of which keras_dib relies on.
"""

import keras
import numpy as np
import pytest

from keras_dib import _compat
from keras_dib.testing import TestCase


class CompatTest(TestCase):
    def test_matches_keras_outside_a_strategy(self):
        from keras.src.losses import loss as keras_loss

        value = keras.ops.convert_to_tensor(np.float32(3.0))
        self.assertEqual(_compat.num_replicas_in_sync(), 1)
        self.assertAllClose(
            _compat.scale_loss_for_distribution(value),
            keras_loss.scale_loss_for_distribution(value),
        )
        self.assertAllClose(
            _compat.unscale_loss_for_distribution(value),
            keras_loss.unscale_loss_for_distribution(value),
        )

    def test_one_process_is_the_chief(self):
        # Two processes: tests/models/multiprocess_test.py.
        self.assertTrue(_compat.is_chief_process())
        self.assertTrue(_compat.is_chief_process(keras.Sequential()))
        if keras.backend.backend() == "jax":
            from keras.src.backend.jax import distribution_lib

            self.assertEqual(distribution_lib.process_id(), 0)

    @pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="tf.distribute replicas exist on TensorFlow only",
    )
    def test_matches_keras_with_two_replicas(self):
        import tensorflow as tf
        from keras.src.losses import loss as keras_loss

        class TwoReplicas:
            num_replicas_in_sync = 2

        original = tf.distribute.get_strategy
        tf.distribute.get_strategy = TwoReplicas
        try:
            value = keras.ops.convert_to_tensor(np.float32(3.0))
            self.assertEqual(_compat.num_replicas_in_sync(), 2)
            self.assertAllClose(
                _compat.scale_loss_for_distribution(value),
                keras_loss.scale_loss_for_distribution(value),
            )
            self.assertAllClose(_compat.scale_loss_for_distribution(value), 1.5)
            self.assertAllClose(
                _compat.unscale_loss_for_distribution(value),
                keras_loss.unscale_loss_for_distribution(value),
            )
        finally:
            tf.distribute.get_strategy = original


def _ids(tensors):
    return [id(t) for t in tensors]


class ProducerNodeTest(TestCase):
    def test_nodes_of_a_functional_graph(self):
        inputs = keras.Input((4,), name="image")
        shared = keras.layers.Dense(4, name="shared")
        first = shared(inputs)
        second = shared(first)
        merged = keras.layers.Concatenate(name="merge")([first, second])
        outputs = keras.layers.Dense(2, name="logits")(merged)
        model = keras.Model(inputs, outputs)

        input_node = _compat.producer_node(inputs)
        self.assertTrue(input_node.is_input)
        self.assertIs(input_node.operation, model.get_layer("image"))
        self.assertEqual(input_node.input_tensors, [])
        self.assertEqual(_ids(input_node.outputs), [id(inputs)])

        # A shared layer: one node per call, each with its own tensors.
        first_node = _compat.producer_node(first)
        second_node = _compat.producer_node(second)
        for node in (first_node, second_node):
            self.assertIs(node.operation, shared)
            self.assertFalse(node.is_input)
        self.assertIsNot(first_node, second_node)
        self.assertEqual(_ids(first_node.input_tensors), [id(inputs)])
        self.assertEqual(_ids(first_node.outputs), [id(first)])
        self.assertEqual(_ids(second_node.input_tensors), [id(first)])
        self.assertEqual(_ids(second_node.outputs), [id(second)])
        merge_node = _compat.producer_node(merged)
        self.assertEqual(
            _ids(merge_node.input_tensors), [id(first), id(second)]
        )

        # Agrees with what Keras publishes: each layer's first call.
        for layer in model.layers:
            node = _compat.producer_node(layer.output)
            self.assertIs(node.operation, layer)
            self.assertEqual(_ids(node.outputs), [id(layer.output)])

        # `arguments.fill_in` gives the call's arguments on new tensors.
        new_first = keras.Input((4,))
        new_second = keras.Input((4,))
        args, kwargs = merge_node.arguments.fill_in(
            {id(first): new_first, id(second): new_second}
        )
        self.assertEqual(kwargs, {})
        self.assertEqual(_ids(args[0]), [id(new_first), id(new_second)])
        self.assertEqual(
            tuple(merge_node.operation(*args, **kwargs).shape), (None, 8)
        )

    def test_sequential_model(self):
        model = keras.Sequential(
            [
                keras.Input((4,), name="image"),
                keras.layers.Dense(3, name="hidden"),
                keras.layers.Dense(2, name="logits"),
            ]
        )
        output_node = _compat.producer_node(model.outputs[0])
        self.assertIs(output_node.operation, model.get_layer("logits"))
        hidden_node = _compat.producer_node(output_node.input_tensors[0])
        self.assertIs(hidden_node.operation, model.get_layer("hidden"))
        input_node = _compat.producer_node(hidden_node.input_tensors[0])
        self.assertTrue(input_node.is_input)
        self.assertEqual(input_node.operation.name, "image")
        self.assertIs(input_node.outputs[0], model.inputs[0])

"""keras_dib._compat against the private Keras rule it rebuilds.

This is the one test that reads `keras.src`: it fails when Keras changes
how it scales losses under `tf.distribute`, which keras_dib relies on.
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

import os

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.testing import TestCase
from keras_dib.testing import shared_data_dir


def real_images(count=64):
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared data not found")
    (x_train, _, _), (x_test, _) = keras_dib.datasets.load_gtsrb(
        os.path.join(root, "gtsrb")
    )
    mean = x_train.reshape(-1, 3).mean(0)
    std = x_train.reshape(-1, 3).std(0)
    return x_test[:count], mean, std


class ExportForServingTest(TestCase):
    @pytest.mark.large
    def test_saved_model_matches_keras_on_gtsrb(self):
        images, mean, std = real_images()
        model = keras_dib.build_vgg(
            11, num_classes=43, width=4, granularity="stage"
        )
        expected = keras.ops.convert_to_numpy(
            keras.ops.softmax(model.predict((images - mean) / std, verbose=0))
        )
        path = os.path.join(self.get_temp_dir(), "serving", "1")
        keras_dib.export_for_serving(model, path, mean=mean, std=std)
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        self.assertIn("serving_default", loaded.signatures)
        from_uint8 = loaded.signatures["serving_uint8"](
            images=tf.constant(images)
        )["probabilities"].numpy()
        from_float = loaded.signatures["serving_default"](
            images=tf.constant(images.astype("float32"))
        )["probabilities"].numpy()
        np.testing.assert_allclose(from_uint8, expected, atol=1e-5)
        np.testing.assert_allclose(from_float, expected, atol=1e-5)
        np.testing.assert_allclose(from_uint8.sum(-1), 1.0, atol=1e-5)

    def test_bad_arguments(self):
        model = keras_dib.build_vgg(
            11, num_classes=10, width=4, granularity="stage"
        )
        with pytest.raises(ValueError, match="one value per channel"):
            keras_dib.export_for_serving(model, "unused", mean=[1.0, 2.0])
        with pytest.raises(ValueError, match="`std` should be > 0"):
            keras_dib.export_for_serving(model, "unused", std=0.0)
        with pytest.raises(ValueError, match="built Keras model"):
            keras_dib.export_for_serving("model", "unused")

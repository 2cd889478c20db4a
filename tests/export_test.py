import os

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.testing import TestCase
from tests import shared_data


def real_images(count=64):
    data = shared_data.gtsrb()
    if data is None:
        pytest.skip("shared data not found")
    (x_train, _, _), (x_test, _) = data
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

    @pytest.mark.large
    def test_model_with_its_normalization_needs_no_statistics(self):
        images, mean, std = real_images()
        model = keras_dib.build_vgg(
            11,
            num_classes=43,
            width=4,
            granularity="stage",
            input_normalization=(mean, std),
        )
        # The pipeline's images: raw pixels as float32 (normalization=None).
        raw = images.astype("float32")
        expected = keras.ops.convert_to_numpy(
            keras.ops.softmax(model.predict(raw, verbose=0))
        )
        path = os.path.join(self.get_temp_dir(), "serving", "1")
        keras_dib.export_for_serving(model, path)
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        from_uint8 = loaded.signatures["serving_uint8"](
            images=tf.constant(images)
        )["probabilities"].numpy()
        np.testing.assert_allclose(from_uint8, expected, atol=1e-5)

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


def tiny_model():
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


class BrokenOnLoad(keras.layers.Layer):
    """Saves fine; cannot be loaded (its class is not registered)."""

    def call(self, x):
        return x


class ExportTargetTest(TestCase):
    def test_refuses_non_empty_folder(self):
        parent = self.get_temp_dir()
        path = os.path.join(parent, "1")
        os.makedirs(path)
        with open(os.path.join(path, "stale.txt"), "w") as file:
            file.write("old")
        with pytest.raises(FileExistsError, match="overwrite=True"):
            keras_dib.export_for_serving(tiny_model(), path)
        self.assertEqual(os.listdir(path), ["stale.txt"])
        self.assertEqual(os.listdir(parent), ["1"])

    def test_overwrite_replaces_the_folder_as_a_whole(self):
        parent = self.get_temp_dir()
        path = os.path.join(parent, "1")
        os.makedirs(os.path.join(path, "variables"))
        for name in ("stale.txt", os.path.join("variables", "stale.data")):
            with open(os.path.join(path, name), "w") as file:
                file.write("old")
        model = tiny_model()
        keras_dib.export_for_serving(model, path, overwrite=True)
        self.assertNotIn("stale.txt", os.listdir(path))
        self.assertNotIn(
            "stale.data", os.listdir(os.path.join(path, "variables"))
        )
        self.assertIn("saved_model.pb", os.listdir(path))
        # No temporary or moved-aside folder is left beside it.
        self.assertEqual(os.listdir(parent), ["1"])
        import tensorflow as tf

        images = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3))
        probabilities = tf.saved_model.load(path).signatures["serving_default"](
            images=tf.constant(images.astype("float32"))
        )["probabilities"]
        np.testing.assert_allclose(
            probabilities.numpy(),
            keras.ops.convert_to_numpy(
                keras.ops.softmax(model(images.astype("float32")))
            ),
            atol=1e-5,
        )

    def test_empty_folder_is_written_without_overwrite(self):
        path = os.path.join(self.get_temp_dir(), "1")
        os.makedirs(path)
        keras_dib.export_for_serving(tiny_model(), path)
        self.assertIn("saved_model.pb", os.listdir(path))

    def test_failed_export_leaves_the_target_as_it_was(self):
        from keras_dib import export

        parent = self.get_temp_dir()
        path = os.path.join(parent, "1")
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "w") as file:
            file.write("previous export")

        def fail(model, target, *args):
            with open(os.path.join(target, "partial"), "w") as file:
                file.write("partial")
            raise OSError("disk full")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(export, "_write_saved_model", fail)
            patch.setattr(export, "_export_in_subprocess", fail)
            with pytest.raises(OSError, match="disk full"):
                keras_dib.export_for_serving(tiny_model(), path, overwrite=True)
        self.assertEqual(os.listdir(path), ["saved_model.pb"])
        self.assertEqual(os.listdir(parent), ["1"])

    def test_subprocess_failure_names_the_real_cause_first(self):
        from keras_dib import export

        inputs = keras.Input((4, 4, 3))
        model = keras.Model(inputs, BrokenOnLoad()(inputs))
        target = self.get_temp_dir()
        with pytest.raises(RuntimeError) as info:
            export._export_in_subprocess(model, target, None, None)
        message = str(info.value)
        # The exception itself comes first, before the raw error output.
        self.assertIn("TypeError", message.splitlines()[0])
        self.assertIn(
            "BrokenOnLoad", message.split("Subprocess error output")[0]
        )
        self.assertNotIn("is TensorFlow installed", message)

    def test_subprocess_error_is_the_final_exception(self):
        from keras_dib import export

        stderr = (
            "W0000 some TensorFlow log line\n"
            "Traceback (most recent call last):\n"
            '  File "<string>", line 3, in <module>\n'
            "    raise KeyError(1)\n"
            "KeyError: 1\n\n"
            "During handling of the above exception, another exception "
            "occurred:\n\n"
            "Traceback (most recent call last):\n"
            '  File "<string>", line 5, in <module>\n'
            "TypeError: could not load\n  second line\n"
        )
        self.assertEqual(
            export._subprocess_error(stderr),
            "TypeError: could not load\n  second line",
        )
        self.assertEqual(
            export._subprocess_error("only a line\n"), "only a line"
        )

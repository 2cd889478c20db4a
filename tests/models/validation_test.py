import os

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.models.validation import NaNGuard
from keras_dib.testing import TestCase


def tiny_model(num_classes=3):
    blocks = [
        keras.Sequential([keras.layers.Conv2D(2, 3, padding="same")]),
        keras.Sequential([keras.layers.Conv2D(2, 3, strides=2)]),
    ]
    model = keras_dib.GreedyLayerwiseModel(
        blocks,
        head=keras_dib.AuxiliaryHead(num_classes, grid_size=1),
        num_classes=num_classes,
        input_shape=(8, 8, 3),
    )
    model.compile(optimizer="sgd", loss=keras_dib.DIB(), metrics=["accuracy"])
    return model


def data(n=32, num_classes=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=n)
    return x, y


class FitValidationTest(TestCase):
    def assert_fit_raises(self, match, *args, **kwargs):
        model = tiny_model()
        weights = [w.copy() for w in model.get_weights()]
        with pytest.raises(ValueError, match=match):
            model.fit(*args, batch_size=16, epochs=1, verbose=0, **kwargs)
        # Nothing was trained: the model is left as it was.
        for before, after in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(before, after)

    def test_labels_out_of_range(self):
        x, y = data()
        y[3] = 3
        self.assert_fit_raises(r"class indices in \[0, 2\]", x, y)
        y[3] = -1
        self.assert_fit_raises(r"from -1 to", x, y)

    def test_labels_wrong_shape(self):
        x, y = data()
        self.assert_fit_raises(
            "should be class indices of shape", x, y[:, None, None]
        )
        self.assert_fit_raises("same number of samples", x, y[:-1])

    def test_one_hot_width_mismatch(self):
        x, y = data()
        self.assert_fit_raises("num_classes=3 columns", x, np.eye(4)[y])

    def test_non_integer_labels(self):
        x, y = data()
        self.assert_fit_raises("integer class indices", x, y + 0.5)

    def test_images_wrong_shape(self):
        x, y = data()
        self.assert_fit_raises(r"\(8, 8, 3\)", x[..., :1], y)
        self.assert_fit_raises(r"\(8, 8, 3\)", x[:, :4], y)

    def test_nan_and_inf_inputs(self):
        x, y = data()
        x[0, 0, 0, 0] = np.nan
        x[1, 0, 0, 0] = np.inf
        self.assert_fit_raises("2 NaN or Inf values", x, y)

    def test_smaller_than_one_batch(self):
        x, y = data(n=8)
        self.assert_fit_raises("fewer than one batch", x, y)

    def test_bad_validation_data(self):
        x, y = data()
        bad = y.copy()
        bad[0] = 7
        self.assert_fit_raises(
            "labels of validation_data", x, y, validation_data=(x, bad)
        )

    def test_dataset_first_batch_checked(self):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("tf.data input checked once, on TensorFlow")
        import tensorflow as tf

        x, y = data()
        y[0] = 9
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        self.assert_fit_raises("class indices", dataset)

    def test_epochs_mismatch_and_bad_objective(self):
        x, y = data()
        model = tiny_model()
        with pytest.raises(ValueError, match="one non-negative integer"):
            model.fit(x, y, batch_size=16, epochs=[1, 1, 1], verbose=0)


class NaNGuardTest(TestCase):
    def test_nan_loss_stops_the_block_with_an_explanation(self):
        x, y = data()
        model = tiny_model()
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e30),
            loss=keras_dib.DIB(),
        )
        with pytest.raises(FloatingPointError, match=r"Block \d/2"):
            model.fit(x * 1e10, y, batch_size=16, epochs=3, verbose=0)
        # The model is back in inference mode after the error.
        self.assertIsNone(model.active_block)
        self.assertFalse(isinstance(model(x[:2]), dict))

    def test_message_names_the_term(self):
        guard = NaNGuard("Block 2/5 (conv)")
        guard.on_epoch_begin(1)
        with pytest.raises(FloatingPointError) as error:
            guard.on_train_batch_end(
                3,
                {
                    "loss": float("nan"),
                    "compression": float("nan"),
                    "cross_entropy": 1.0,
                },
            )
        message = str(error.value)
        self.assertIn("Block 2/5 (conv)", message)
        self.assertIn("epoch 2, batch 4", message)
        self.assertIn("['compression']", message)
        guard.on_train_batch_end(0, {"loss": 1.0})  # finite: no error


class SafeModeTest(TestCase):
    def test_lambda_layers_refused_in_safe_mode(self):
        # Untrusted .keras files stay in Keras' safe mode: no code runs.
        inputs = keras.Input((2,))
        outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
        path = os.path.join(self.get_temp_dir(), "lambda.keras")
        keras.Model(inputs, outputs).save(path)
        with pytest.raises(ValueError, match="safe_mode"):
            keras.saving.load_model(path)

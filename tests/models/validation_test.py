import os
import re

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.models.fitting import BlockCallback
from keras_dib.models.validation import MIN_BATCH_SIZE
from keras_dib.models.validation import NaNGuard
from keras_dib.models.validation import WeightGuard
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
            kwargs.setdefault("epochs", 1)
            model.fit(*args, batch_size=16, verbose=0, **kwargs)
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

    def test_missing_labels_with_arrays(self):
        x, _ = data()
        self.assert_fit_raises("`y` is missing", x, None)

    def test_dict_inputs_refused(self):
        x, y = data()
        self.assert_fit_raises(
            "dict inputs are not supported",
            Batches({"images": x}, y, batch_size=16),
        )
        self.assert_fit_raises("dict inputs are not supported", {"a": x}, y)

    def test_validation_dataset_first_batch_checked(self):
        x, y = data()
        self.assert_fit_raises(
            r"`validation_data` images should have shape",
            x,
            y,
            validation_data=Batches(x[:, :4], y, batch_size=16),
        )
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            dataset = tf.data.Dataset.from_tensor_slices((x[:, :4], y))
            self.assert_fit_raises(
                r"`validation_data` images should have shape",
                x,
                y,
                validation_data=dataset.batch(16),
            )

    def test_negative_epochs_refused_for_single_stage_schedules(self):
        x, y = data()
        for schedule in ("simultaneous", "end_to_end"):
            self.assert_fit_raises(
                "integer >= 0", x, y, schedule=schedule, epochs=-1
            )

    def test_unusable_checkpoint_dir(self):
        x, y = data()
        root = self.get_temp_dir()
        a_file = os.path.join(root, "a_file")
        with open(a_file, "w") as file:
            file.write("not a folder")
        for directory in (a_file, os.path.join(a_file, "under")):
            self.assert_fit_raises(
                re.escape(directory), x, y, checkpoint_dir=directory
            )
        self.assert_fit_raises("checkpoint_dir=''", x, y, checkpoint_dir="")
        if os.geteuid() != 0:  # root writes anywhere
            locked = os.path.join(root, "locked")
            os.makedirs(locked)
            os.chmod(locked, 0o500)
            try:
                self.assert_fit_raises(
                    re.escape(locked), x, y, checkpoint_dir=locked
                )
            finally:
                os.chmod(locked, 0o700)


class BatchSizeFloorTest(TestCase):
    def test_batches_below_the_floor_refused(self):
        x, y = data()
        for batch_size in (1, MIN_BATCH_SIZE - 1):
            model = tiny_model()
            with pytest.raises(ValueError, match="at least 8 samples"):
                model.fit(x, y, batch_size=batch_size, verbose=0)
        model = tiny_model()
        with pytest.raises(ValueError, match="at least 8 samples"):
            model.fit(Batches(x, y, batch_size=4), verbose=0)
        # A cross-entropy-only objective has no batch-level term: any size.
        model = tiny_model()
        model.compile(optimizer="sgd", loss=keras_dib.LocalObjective())
        model.fit(x, y, batch_size=1, epochs=[1, 0], verbose=0)

    def test_small_final_batch_dropped(self):
        # 33 = 2 x 16 + 1: the final batch of one sample is not trained;
        # 40 = 2 x 16 + 8 keeps its final batch of 8.
        for num_samples, batches in ((33, 2), (40, 3)):
            x, y = data(n=num_samples)
            for checkpoint in (False, True):
                counter = CountBatches()
                checkpoint_dir = (
                    os.path.join(self.get_temp_dir(), f"c{num_samples}")
                    if checkpoint
                    else None
                )
                tiny_model().fit(
                    x,
                    y,
                    batch_size=16,
                    epochs=[1, 1],
                    verbose=0,
                    callbacks=[counter],
                    checkpoint_dir=checkpoint_dir,
                )
                self.assertEqual(counter.per_epoch, [batches, batches])

    def test_validation_split_leaving_less_than_a_batch(self):
        x, y = data()
        self.assert_split_raises(x, y, 0.6)
        tiny_model().fit(x, y, batch_size=16, validation_split=0.5, verbose=0)

    def assert_split_raises(self, x, y, split):
        model = tiny_model()
        with pytest.raises(ValueError, match="validation_split=0.6 leaves"):
            model.fit(x, y, batch_size=16, validation_split=split, verbose=0)


class LabelRangeInStepTest(TestCase):
    def test_later_batch_label_out_of_range(self):
        # The first batch is checked before training; a later batch's
        # labels are checked in the train step.
        for bad_label, schedule in ((3, "sequential"), (-1, "end_to_end")):
            x, y = data()
            y[20] = bad_label
            model = tiny_model()
            with pytest.raises(
                ValueError, match=r"training labels out of range \[0, 2\]"
            ):
                model.fit(
                    Batches(x, y, batch_size=16), schedule=schedule, verbose=0
                )
            self.assertIsNone(model.active_block)

    def test_later_validation_batch_label_out_of_range(self):
        x, y = data()
        bad = y.copy()
        bad[20] = 5
        with pytest.raises(
            ValueError, match=r"validation labels out of range \[0, 2\]"
        ):
            tiny_model().fit(
                x,
                y,
                batch_size=16,
                validation_data=Batches(x, bad, batch_size=16),
                verbose=0,
            )

    def test_valid_labels_unaffected(self):
        x, y = data()
        history = tiny_model().fit(
            Batches(x, y, batch_size=16), epochs=[1, 1], verbose=0
        )
        self.assertAllFinite(history.history["loss"])
        self.assertNotIn("label_errors", history.history)


@keras.saving.register_keras_serializable(package="keras_dib_tests")
class ExplodeAt(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate of 0.01 until `step`, infinite from then on."""

    def __init__(self, step):
        self.step = step

    def __call__(self, step):
        return keras.ops.where(step >= self.step, float("inf"), 0.01)

    def get_config(self):
        return {"step": self.step}


def exploding_optimizers(step):
    def make(block):
        if block == 0:
            return keras.optimizers.SGD(ExplodeAt(step))
        return keras.optimizers.SGD(0.01)

    return make


class WeightGuardTest(TestCase):
    def test_non_finite_weights_stop_the_block(self):
        # 2 batches an epoch: the 4th step (block 1's last) explodes. Its
        # loss is computed before the update, so every logged loss is
        # finite, but the kernel is not.
        x, y = data()
        model = tiny_model()
        counter = CountBatches()
        with pytest.raises(FloatingPointError) as error:
            model.fit(
                x,
                y,
                batch_size=16,
                epochs=[2, 1],
                verbose=0,
                callbacks=[counter],
                block_optimizer=exploding_optimizers(3),
            )
        message = str(error.value)
        self.assertIn("Block 1/2", message)
        self.assertIn(model.blocks[0].layers[0].kernel.path, message)
        self.assertEqual(counter.blocks_begun, [0])
        self.assertEqual(sum(counter.per_epoch), 4)
        self.assertIsNone(model.active_block)

    def test_finite_weights_pass(self):
        x, y = data()
        guard = WeightGuard("Block 1/2 (conv)", [("block 1", tiny_model())])
        guard.check()
        model = tiny_model()
        variable = model.blocks[1].layers[0].kernel
        variable.assign(variable * np.nan)
        guard = WeightGuard("Block 2/2 (conv)", [("block 2", model.blocks[1])])
        with pytest.raises(FloatingPointError, match=variable.path):
            guard.check()


class SaveTest(TestCase):
    def test_h5_saving_refused(self):
        model = tiny_model()
        for name in ("model.h5", "model.hdf5"):
            path = os.path.join(self.get_temp_dir(), name)
            with pytest.raises(ValueError, match=r"\.keras"):
                model.save(path)
            self.assertFalse(os.path.exists(path))
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        self.assertTrue(os.path.exists(path))


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.y) // self.batch_size

    def __getitem__(self, index):
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return keras.tree.map_structure(lambda a: a[window], self.x), self.y[
            window
        ]


class CountBatches(BlockCallback):
    def __init__(self):
        super().__init__()
        self.per_epoch = []
        self.blocks_begun = []

    def on_block_begin(self, block, logs=None):
        self.blocks_begun.append(block)

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.per_epoch[-1] += 1


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

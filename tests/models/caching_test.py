"""Tests of `GreedyLayerwiseModel.fit(cache_prefix=True)`."""

import os

import keras
import numpy as np

import keras_dib
from keras_dib.models import AuxiliaryHead
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models import caching
from keras_dib.testing import TestCase
from tests.models.checkpointing_test import PairBatches

NUM_CLASSES = 3


def _model(compression="input", run_eagerly=False):
    keras.utils.set_random_seed(3)
    blocks = [
        keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Dropout(0.2, seed=index + 1),
            ]
        )
        for index in range(3)
    ]
    model = GreedyLayerwiseModel(
        blocks,
        head=AuxiliaryHead(NUM_CLASSES, grid_size=1),
        num_classes=NUM_CLASSES,
        input_shape=(8, 8, 3),
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras_dib.DIB(alpha=2.0, beta=0.05, compression=compression),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    return model


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=(n,)).astype("int32")
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    x[..., 0] += y[:, None, None]
    return x, y


class CountPrefixCalls(keras.callbacks.Callback):
    """Counts how often block 0 runs while later blocks train."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        self.calls = 0
        original = block.call

        def counting_call(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        block.call = counting_call


def _weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.variables]


class PrefixCacheTest(TestCase):
    def test_same_training_as_without_cache(self):
        x, y = _data()
        validation = _data(n=24, seed=2)
        results = {}
        for cache_prefix in (False, True):
            model = _model()
            history = model.fit(
                x,
                y,
                batch_size=16,
                epochs=[1, 2, 2],
                shuffle=False,
                validation_data=validation,
                cache_prefix=cache_prefix,
                verbose=0,
            )
            results[cache_prefix] = (_weights(model), history.history)
        for expected, value in zip(results[False][0], results[True][0]):
            self.assertAllClose(value, expected, atol=1e-4, rtol=1e-4)
        for key in ("loss", "compression", "val_accuracy"):
            self.assertAllClose(
                results[True][1][key],
                results[False][1][key],
                atol=1e-4,
                rtol=1e-4,
            )

    def test_frozen_blocks_run_once_per_stage(self):
        x, y = _data()

        def prefix_calls(epochs, cache_prefix):
            model = _model(compression="block_input", run_eagerly=True)
            counter = CountPrefixCalls(model.blocks[0])
            model.fit(
                x,
                y,
                batch_size=16,
                epochs=epochs,
                cache_prefix=cache_prefix,
                verbose=0,
            )
            return counter.calls

        # Without the cache the frozen block 0 runs on every batch of every
        # epoch of blocks 1 and 2; with it, only to fill the cache.
        uncached = prefix_calls([0, 1, 1], False)
        self.assertGreater(prefix_calls([0, 3, 3], False), uncached)
        self.assertGreaterEqual(uncached, 2 * 4)
        self.assertEqual(
            prefix_calls([0, 3, 3], True), prefix_calls([0, 1, 1], True)
        )

    def test_dataset_input_and_checkpoint(self):
        x, y = _data()
        dataset = PairBatches(x, y, batch_size=16)
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        model = _model()
        history = model.fit(
            dataset,
            epochs=[1, 1, 1],
            cache_prefix=True,
            checkpoint_dir=checkpoint_dir,
            verbose=0,
        )
        self.assertEqual(history.history["block"], [0, 1, 2])
        self.assertAllFinite(history.history["loss"])
        accuracy = model.evaluate(x, y, verbose=0, return_dict=True)
        self.assertIn("accuracy", accuracy)

    def test_bad_arguments(self):
        x, y = _data()
        model = _model()
        with self.assertRaisesRegex(ValueError, "schedule='sequential'"):
            model.fit(x, y, epochs=1, schedule="end_to_end", cache_prefix=True)
        with self.assertRaisesRegex(ValueError, "cache_prefix"):
            model.fit(x, y, epochs=1, cache_prefix="yes")

    def test_as_arrays_validation_split(self):
        x, y = _data(n=40)
        arrays, batch_size, kwargs = caching.as_arrays(
            x, y, None, {"validation_split": 0.25}, materialize=True
        )
        self.assertEqual(batch_size, 32)
        self.assertEqual(len(arrays[0]), 30)
        self.assertAllClose(kwargs["validation_data"][0], x[30:])
        self.assertNotIn("validation_split", kwargs)

    def test_as_arrays_validation_data_overrides_split(self):
        # As in Keras: with `validation_data`, the split is ignored and
        # every sample trains.
        x, y = _data(n=40)
        validation = (x[:8], y[:8])
        arrays, _, kwargs = caching.as_arrays(
            x,
            y,
            None,
            {"validation_split": 0.25, "validation_data": validation},
            materialize=True,
        )
        self.assertEqual(len(arrays[0]), 40)
        self.assertIs(kwargs["validation_data"][0], validation[0])
        self.assertNotIn("validation_split", kwargs)

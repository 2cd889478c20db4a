"""Tests of `keras_dib.models.fitting`'s few-steps warning."""

import warnings

import numpy as np
import pytest

from keras_dib.models import fitting
from keras_dib.models import schedules
from keras_dib.testing import TestCase
from tests.models.greedy_test import _compile
from tests.models.greedy_test import _data
from tests.models.greedy_test import _model


def _stages(epochs):
    return [
        schedules.Stage(block, block, e, f"block {block + 1}")
        for block, e in enumerate(epochs)
    ]


def _warnings(schedule, stages, x, batch_size, kwargs=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitting.warn_few_steps(
            schedules.get(schedule), stages, x, batch_size, kwargs or {}
        )
    return [str(w.message) for w in caught]


class StepsPerEpochTest(TestCase):
    def test_arrays_round_up_and_validation_split_is_left_out(self):
        x = np.zeros((1000, 2), "float32")
        self.assertEqual(fitting.steps_per_epoch(x, 128, {}), 8)
        self.assertEqual(fitting.steps_per_epoch(x, None, {}), 32)
        self.assertEqual(
            fitting.steps_per_epoch(x, 100, {"validation_split": 0.2}), 8
        )
        self.assertEqual(
            fitting.steps_per_epoch(x, 100, {"steps_per_epoch": 3}), 3
        )

    def test_dataset_cardinality(self):
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices(np.zeros((70, 2)))
        self.assertEqual(fitting.steps_per_epoch(dataset.batch(8), None, {}), 9)
        self.assertIsNone(
            fitting.steps_per_epoch(dataset.batch(8).repeat(), None, {})
        )


class WarnFewStepsTest(TestCase):
    def test_sequential_warns_with_the_count_and_the_remedy(self):
        x = np.zeros((4000, 2), "float32")
        # 32 batches an epoch, 2 epochs a block: 64 steps a block.
        messages = _warnings("sequential", _stages([2, 2, 2]), x, 128)
        self.assertEqual(len(messages), 1)
        self.assertIn(
            "only 64 optimizer steps (32 batches an epoch)", messages[0]
        )
        self.assertIn("smaller batch size", messages[0])

    def test_the_block_with_fewest_steps_counts_and_zero_epochs_skip(self):
        x = np.zeros((4000, 2), "float32")
        # batch 32: 125 batches; 2 epochs = 250 steps, 1 epoch = 125.
        self.assertEqual(_warnings("sequential", _stages([2, 2]), x, 32), [])
        messages = _warnings("sequential", _stages([2, 1]), x, 32)
        self.assertIn("only 125 optimizer steps", messages[0])
        self.assertEqual(_warnings("sequential", _stages([0, 2]), x, 32), [])

    def test_other_schedules_and_unknown_lengths_do_not_warn(self):
        x = np.zeros((100, 2), "float32")
        stage = [schedules.Stage(0, None, 1, "all blocks")]
        self.assertEqual(_warnings("end_to_end", stage, x, 64), [])
        self.assertEqual(_warnings("simultaneous", stage, x, 64), [])
        self.assertEqual(_warnings("sequential", _stages([1]), object(), 8), [])

    def test_fit_warns_before_training(self):
        model = _model()
        _compile(model)
        x, y = _data()
        with pytest.warns(UserWarning, match="optimizer steps"):
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)

"""Tests of depth selection: `fit(select_depth=...)`, `inference_blocks`
and `keras_dib.models.fitting.select_depth`."""

import os

import keras
import numpy as np

from keras_dib.models import fitting
from keras_dib.models import schedules
from keras_dib.testing import TestCase
from tests.models.greedy_test import _changed
from tests.models.greedy_test import _compile
from tests.models.greedy_test import _data
from tests.models.greedy_test import _model
from tests.models.greedy_test import _snapshot


def _stage(block):
    return schedules.Stage(block, block, 1, f"block {block + 1}")


def _history(stage_histories):
    """A FitHistory from `(block, stage_history)` pairs, in order."""
    history = fitting.FitHistory()
    for block, stage_history in stage_histories:
        history.add(_stage(block), stage_history)
    return history


def _reference_choice(per_block_last, minimise):
    """NumPy reference: the first (shallowest) block with the best value."""
    blocks = sorted(per_block_last)
    values = np.array([per_block_last[b] for b in blocks])
    index = np.argmin(values) if minimise else np.argmax(values)
    return blocks[int(index)]


class SelectDepthFunctionTest(TestCase):
    def test_matches_numpy_on_each_blocks_last_epoch(self):
        rng = np.random.default_rng(0)
        for _trial in range(20):
            stage_histories = []
            last = {}
            # Block 2 skipped (0 epochs: no stage history), others 1-3 epochs.
            for block in (0, 1, 3, 4):
                epochs = int(rng.integers(1, 4))
                values = rng.uniform(size=epochs).round(2).tolist()
                stage_histories.append(
                    (
                        block,
                        {
                            "loss": rng.uniform(size=epochs).tolist(),
                            "val_accuracy": values,
                            "val_loss": values[::-1],
                        },
                    )
                )
                last[block] = values[-1]
            history = _history(stage_histories)
            block, scores = fitting.select_depth(history, "val_accuracy")
            self.assertEqual(block, _reference_choice(last, minimise=False))
            self.assertEqual(scores, last)
            block, scores = fitting.select_depth(history, "val_loss")
            last_loss = {b: h["val_loss"][-1] for b, h in stage_histories}
            self.assertEqual(block, _reference_choice(last_loss, minimise=True))
            self.assertEqual(scores, last_loss)

    def test_ties_go_to_the_shallower_block(self):
        history = _history(
            [
                (0, {"loss": [1.0], "val_accuracy": [0.5]}),
                (1, {"loss": [1.0], "val_accuracy": [0.9]}),
                (2, {"loss": [1.0], "val_accuracy": [0.9]}),
            ]
        )
        self.assertEqual(fitting.select_depth(history, "val_accuracy")[0], 1)

    def test_epochs_without_validation_are_skipped(self):
        # validation_freq=2: a block's validation values are fewer than its
        # epochs; its last logged value counts.
        history = _history(
            [
                (0, {"loss": [1.0, 0.9], "val_accuracy": [0.8]}),
                (1, {"loss": [1.0, 0.9], "val_accuracy": [0.7]}),
            ]
        )
        block, scores = fitting.select_depth(history, "val_accuracy")
        self.assertEqual((block, scores), (0, {0: 0.8, 1: 0.7}))

    def test_a_metric_never_logged_is_named(self):
        history = _history([(0, {"loss": [1.0], "accuracy": [0.5]})])
        with self.assertRaisesRegex(ValueError, "no block logged 'val_acc'"):
            fitting.select_depth(history, "val_acc")


def _reference_patience_stop(scores_in_order, patience, minimise=False):
    """NumPy reference: how many blocks train before the patience stop."""
    values = np.asarray(scores_in_order, dtype=float)
    sign = -1.0 if minimise else 1.0
    for trained in range(1, len(values) + 1):
        best = int(np.argmax(sign * values[:trained]))
        if trained - 1 - best >= patience:
            return trained
    return len(values)


class DepthPatienceFunctionTest(TestCase):
    def test_matches_numpy_reference(self):
        rng = np.random.default_rng(0)
        for _trial in range(30):
            num_blocks = int(rng.integers(1, 7))
            patience = int(rng.integers(1, 4))
            values = rng.integers(0, 5, size=num_blocks) / 4.0
            expected = _reference_patience_stop(values, patience)
            history = fitting.FitHistory()
            trained = num_blocks
            for block, value in enumerate(values):
                if fitting.depth_patience_spent(
                    history, "val_accuracy", patience
                ):
                    trained = block
                    break
                history.add(
                    _stage(block), {"loss": [1.0], "val_accuracy": [value]}
                )
            self.assertEqual(trained, expected, (values, patience))
            self.assertEqual(history.trained_blocks(), expected)

    def test_none_and_empty_history_never_stop(self):
        history = _history([(0, {"loss": [1.0], "val_loss": [0.5]})])
        self.assertFalse(
            fitting.depth_patience_spent(history, "val_loss", None)
        )
        self.assertFalse(
            fitting.depth_patience_spent(fitting.FitHistory(), "val_loss", 1)
        )


class SelectDepthFitTest(TestCase):
    def test_depth_patience_stops_the_schedule_and_resumes_stopped(self):
        # Only block 1 learns (the others' learning rate is 0), so blocks 2
        # and 3 cannot beat its validation loss: with patience 2, block 4
        # is never trained.
        keras.utils.set_random_seed(0)
        model = _model(num_blocks=4)
        _compile(model)
        x, y = _data(n=64)
        before = _snapshot(model.blocks)

        def block_optimizer(block):
            return keras.optimizers.SGD(0.2 if block == 0 else 0.0)

        directory = os.path.join(self.get_temp_dir(), "checkpoint")
        arguments = dict(
            batch_size=16,
            epochs=2,
            validation_data=(x, y),
            select_depth="val_loss",
            depth_patience=2,
            block_optimizer=block_optimizer,
            checkpoint_dir=directory,
            verbose=0,
        )
        history = model.fit(x, y, **arguments)
        scores = history.params["depth_scores"]
        self.assertEqual(sorted(scores), [0, 1, 2])
        # Block 1 stays the best, blocks 2 and 3 exhaust the patience.
        self.assertEqual(min(scores, key=scores.get), 0)
        self.assertEqual(history.params["trained_blocks"], 3)
        self.assertEqual(sorted(set(history.history["block"])), [0, 1, 2])
        self.assertEqual(model.inference_blocks, 1)
        after = _snapshot(model.blocks)
        self.assertTrue(_changed(before[0], after[0]))
        for a, b in zip(before[3], after[3]):
            np.testing.assert_array_equal(a, b)
        # The same fit again resumes from the checkpoint: already stopped,
        # it trains nothing and chooses the same depth.
        again = model.fit(x, y, **arguments)
        self.assertEqual(again.params["trained_blocks"], 3)
        self.assertEqual(model.inference_blocks, 1)
        for a, b in zip(after[0], _snapshot(model.blocks)[0]):
            np.testing.assert_array_equal(a, b)

    def test_fit_keeps_the_best_block_and_saves_it(self):
        keras.utils.set_random_seed(1)
        model = _model(num_blocks=3)
        _compile(model)
        x, y = _data(n=64)
        history = model.fit(
            x,
            y,
            batch_size=16,
            epochs=[2, 1, 1],
            validation_split=0.25,
            select_depth="val_accuracy",
            verbose=0,
        )
        last = {}
        for block, value in zip(
            history.history["block"], history.history["val_accuracy"]
        ):
            last[block] = value
        expected = _reference_choice(last, minimise=False) + 1
        self.assertEqual(model.inference_blocks, expected)
        self.assertEqual(history.params["inference_blocks"], expected)
        self.assertEqual(
            history.params["depth_scores"],
            {b: float(v) for b, v in last.items()},
        )
        predictions = model.predict(x, verbose=0)
        self.assertAllClose(
            predictions,
            model.truncate(expected).predict(x, verbose=0),
            atol=1e-6,
        )
        path = os.path.join(self.get_temp_dir(), "selected.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        self.assertEqual(loaded.inference_blocks, expected)
        self.assertAllClose(
            loaded.predict(x, verbose=0), predictions, atol=1e-6
        )

    def test_inference_blocks_set_by_hand_is_the_truncated_network(self):
        model = _model(num_blocks=3)
        x, _ = _data(n=8)
        for depth in (1, 2, 3):
            model.inference_blocks = depth
            self.assertAllClose(
                model.predict(x, verbose=0),
                model.truncate(depth).predict(x, verbose=0),
                atol=1e-6,
            )
        model.inference_blocks = None
        self.assertAllClose(
            model.predict(x, verbose=0),
            model.truncate(3).predict(x, verbose=0),
            atol=1e-6,
        )
        config = model.get_config()
        self.assertIsNone(config["inference_blocks"])
        model.inference_blocks = 2
        config = model.get_config()
        self.assertEqual(config["inference_blocks"], 2)
        restored = type(model).from_config(config)
        self.assertEqual(restored.get_config()["inference_blocks"], 2)

    def test_end_to_end_training_still_trains_every_block(self):
        keras.utils.set_random_seed(0)
        model = _model(num_blocks=3)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.inference_blocks = 1
        x, y = _data(n=32)
        before = _snapshot(model.blocks + [model.head])
        model.fit(
            x, y, batch_size=16, epochs=1, schedule="end_to_end", verbose=0
        )
        after = _snapshot(model.blocks + [model.head])
        for layer_before, layer_after in zip(before, after):
            self.assertFalse(
                all(
                    np.array_equal(a, b)
                    for a, b in zip(layer_before, layer_after)
                )
            )
        self.assertEqual(model.inference_blocks, 1)


class SelectDepthArgumentsTest(TestCase):
    def test_bad_arguments_are_refused_before_training(self):
        model = _model(num_blocks=3)
        _compile(model)
        x, y = _data(n=32)
        before = _snapshot(model.blocks)
        cases = [
            (
                {"select_depth": "accuracy", "validation_split": 0.5},
                "name of a validation metric",
            ),
            (
                {"select_depth": 1, "validation_split": 0.5},
                "name of a validation metric",
            ),
            ({"select_depth": "val_accuracy"}, "Received neither"),
            (
                {
                    "select_depth": "val_accuracy",
                    "validation_split": 0.5,
                    "schedule": "simultaneous",
                },
                "schedule='simultaneous'",
            ),
            (
                {
                    "select_depth": "val_loss",
                    "validation_split": 0.5,
                    "depth_patience": 0,
                },
                "positive integer",
            ),
            (
                {
                    "select_depth": "val_loss",
                    "validation_split": 0.5,
                    "depth_patience": True,
                },
                "Received: depth_patience=True",
            ),
            ({"depth_patience": 1}, "pass `select_depth` too"),
            (
                {"callbacks": [keras.callbacks.EarlyStopping("val_loss")]},
                "EarlyStopping monitors 'val_loss'",
            ),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                model.fit(x, y, batch_size=16, epochs=1, verbose=0, **kwargs)
        for layer_before, layer_after in zip(before, _snapshot(model.blocks)):
            for a, b in zip(layer_before, layer_after):
                np.testing.assert_array_equal(a, b)
        self.assertIsNone(model.inference_blocks)

    def test_bad_inference_blocks(self):
        model = _model(num_blocks=3)
        for value in (0, 4, True, 2.0, "2"):
            with self.assertRaisesRegex(ValueError, "inference_blocks"):
                model.inference_blocks = value
            with self.assertRaisesRegex(ValueError, "1..3"):
                type(model).from_config(
                    dict(model.get_config(), inference_blocks=value)
                )
        self.assertIsNone(model.inference_blocks)

"""Tests of `GreedyLayerwiseModel.fit(checkpoint_dir=...)`: kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.models import AuxiliaryHead
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models.checkpointing import FILENAME
from keras_dib.models.checkpointing import CheckpointError
from keras_dib.testing import TestCase
from tests.models import resume_worker
from tests.models.validation_test import exploding_optimizers

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
NUM_CLASSES = 3


def _run_worker(checkpoint_dir, output_prefix, kill_point=None):
    command = [sys.executable, WORKER, checkpoint_dir, output_prefix]
    if kill_point:
        command.append(kill_point)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _run_here(checkpoint_dir, output_prefix):
    """The worker's uninterrupted fit, in this process (no interpreter to
    start: only the runs that must die need their own process)."""
    resume_worker.main(checkpoint_dir, output_prefix)


def _load_run(prefix):
    with np.load(prefix + ".npz") as archive:
        weights = [archive[key] for key in sorted(archive, key=_arr_index)]
    with open(prefix + ".json") as file:
        record = json.load(file)
    return weights, record


def _arr_index(key):
    return int(key.split("_")[1])


def _model():
    blocks = [
        keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
            ]
        )
        for _ in range(2)
    ]
    model = GreedyLayerwiseModel(
        blocks,
        head=AuxiliaryHead(NUM_CLASSES, grid_size=1),
        num_classes=NUM_CLASSES,
        input_shape=(8, 8, 3),
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras_dib.DIB(alpha=2.0, beta=0.01),
        metrics=["accuracy"],
    )
    return model


def _data(n=48):
    rng = np.random.default_rng(1)
    y = rng.integers(0, NUM_CLASSES, size=(n,)).astype("int32")
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    return x, y


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.mark.large
class KillAndResumeTest(TestCase):
    _reference_run = None

    def _reference(self, tmp):
        # One uninterrupted run, shared by the tests of this class.
        if KillAndResumeTest._reference_run is None:
            _run_here(
                os.path.join(tmp, "reference_checkpoint"),
                os.path.join(tmp, "reference"),
            )
            KillAndResumeTest._reference_run = _load_run(
                os.path.join(tmp, "reference")
            )
        return KillAndResumeTest._reference_run

    def _assert_same_run(self, reference, resumed):
        reference_weights, reference_record = reference
        weights, record = resumed
        self.assertEqual(len(weights), len(reference_weights))
        for expected, value in zip(reference_weights, weights):
            self.assertAllClose(value, expected, atol=1e-5, rtol=1e-5)
        self.assertEqual(
            record["history"]["block"], reference_record["history"]["block"]
        )
        self.assertAllClose(
            record["history"]["loss"],
            reference_record["history"]["loss"],
            atol=1e-5,
            rtol=1e-5,
        )

    def test_killed_at_chosen_points_then_resumed_matches(self):
        tmp = self.get_temp_dir()
        reference = self._reference(tmp)
        checkpoint_dir = os.path.join(tmp, "checkpoint")
        output = os.path.join(tmp, "resumed")
        # Epochs per block are [2, 3, 2] with 6 batches an epoch.
        kill_points = [
            "batch:0:1:2",  # mid-epoch: epoch 1 of block 0 is redone
            "write:2",  # halfway through a checkpoint write
            "rename:2",  # written but not yet renamed into place
            "block:2",  # right after a stage change
            "batch:2:1:0",  # in the last block's last epoch
        ]
        for kill_point in kill_points:
            result = _run_worker(checkpoint_dir, output, kill_point)
            self.assertEqual(
                result.returncode,
                -signal.SIGKILL,
                f"the run meant to die at {kill_point} ended with "
                f"{result.returncode}: {result.stderr[-3000:]}",
            )
            self.assertTrue(
                os.path.exists(os.path.join(checkpoint_dir, FILENAME))
            )
        _run_here(checkpoint_dir, output)
        resumed = _load_run(output)
        self._assert_same_run(reference, resumed)
        # Blocks 0 and 1 were finished by earlier processes: not retrained.
        self.assertEqual(resumed[1]["blocks_begun"], [2])
        self.assertEqual(os.listdir(checkpoint_dir), [FILENAME])

        # Running the finished fit again trains nothing and changes nothing.
        _run_here(checkpoint_dir, output)
        again = _load_run(output)
        self.assertEqual(again[1]["blocks_begun"], [])
        self._assert_same_run(reference, again)

    def test_killed_at_random_times_then_resumed_matches(self):
        tmp = self.get_temp_dir()
        reference = self._reference(tmp)
        checkpoint_dir = os.path.join(tmp, "checkpoint")
        output = os.path.join(tmp, "resumed")
        rng = np.random.default_rng(0)
        command = [sys.executable, WORKER, checkpoint_dir, output]
        for _ in range(2):
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(4.0, 12.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        _run_here(checkpoint_dir, output)
        self._assert_same_run(reference, _load_run(output))


class CheckpointInProcessTest(TestCase):
    def _fit(self, model, checkpoint_dir, x=None, y=None, **kwargs):
        if x is None:
            x, y = _data()
        kwargs.setdefault("epochs", [1, 2])
        return model.fit(
            x,
            y,
            batch_size=16,
            verbose=0,
            checkpoint_dir=checkpoint_dir,
            **kwargs,
        )

    def _checkpoint_bytes(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, FILENAME), "rb") as file:
            return file.read()

    def test_bad_inputs_leave_the_checkpoint_intact(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        self._fit(_model(), checkpoint_dir)
        saved = self._checkpoint_bytes(checkpoint_dir)
        x, y = _data()
        bad_inputs = {
            "labels out of range": (x, y + NUM_CLASSES, {}),
            "wrong image shape": (x[:, :4], y, {}),
            "NaN inputs": (np.where(x > 2, np.nan, x), y, {}),
            "epochs per block": (x, y, {"epochs": [1, 1, 1]}),
        }
        for name, (bad_x, bad_y, kwargs) in bad_inputs.items():
            model = _model()
            with self.assertRaises(ValueError, msg=name):
                self._fit(model, checkpoint_dir, bad_x, bad_y, **kwargs)
            self.assertEqual(
                self._checkpoint_bytes(checkpoint_dir), saved, msg=name
            )

    def test_a_different_fit_is_refused(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        self._fit(_model(), checkpoint_dir)
        saved = self._checkpoint_bytes(checkpoint_dir)
        with self.assertRaisesRegex(CheckpointError, "different fit"):
            self._fit(_model(), checkpoint_dir, epochs=[2, 2])
        with self.assertRaisesRegex(CheckpointError, "different fit"):
            self._fit(_model(), checkpoint_dir, schedule="end_to_end", epochs=1)
        self.assertEqual(self._checkpoint_bytes(checkpoint_dir), saved)

    def test_a_damaged_checkpoint_is_reported(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        os.makedirs(checkpoint_dir)
        with open(os.path.join(checkpoint_dir, FILENAME), "wb") as file:
            file.write(b"not a checkpoint")
        with self.assertRaisesRegex(CheckpointError, "cannot be read"):
            self._fit(_model(), checkpoint_dir)

    def test_finished_fit_is_not_repeated(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        model = _model()
        history = self._fit(model, checkpoint_dir)
        weights = [keras.ops.convert_to_numpy(v) for v in model.variables]

        fresh = _model()
        counter = CountBatches()
        again = self._fit(fresh, checkpoint_dir, callbacks=[counter])
        self.assertEqual(counter.batches, 0)
        self.assertEqual(again.history["block"], [0, 1, 1])
        self.assertAllClose(again.history["loss"], history.history["loss"])
        for expected, variable in zip(weights, fresh.variables):
            self.assertAllClose(variable, expected)
        self.assertEqual(len(again.block_histories), 2)

    def test_validation_split_and_schedules(self):
        for schedule, epochs in (
            ("sequential", [1, 1]),
            ("simultaneous", 2),
            ("end_to_end", 2),
        ):
            checkpoint_dir = os.path.join(self.get_temp_dir(), schedule)
            history = self._fit(
                _model(),
                checkpoint_dir,
                schedule=schedule,
                epochs=epochs,
                validation_split=0.25,
            )
            self.assertIn("val_loss", history.history)
            self.assertEqual(len(history.history["loss"]), 2)
            self.assertTrue(
                os.path.exists(os.path.join(checkpoint_dir, FILENAME))
            )

    def test_checkpoint_with_a_dataset(self):
        x, y = _data()
        dataset = PairBatches(x, y, batch_size=16)
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        model = _model()
        model.fit(
            dataset, epochs=[1, 1], verbose=0, checkpoint_dir=checkpoint_dir
        )
        counter = CountBatches()
        _model().fit(
            dataset,
            epochs=[1, 1],
            verbose=0,
            checkpoint_dir=checkpoint_dir,
            callbacks=[counter],
        )
        self.assertEqual(counter.batches, 0)

    def _fit_again(self, checkpoint_dir, model=None, x=None, y=None, **kw):
        counter = CountBatches()
        self._fit(
            model or _model(), checkpoint_dir, x, y, callbacks=[counter], **kw
        )
        return counter.batches

    def test_a_changed_run_is_refused(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        self._fit(_model(), checkpoint_dir)
        saved = self._checkpoint_bytes(checkpoint_dir)
        x, y = _data()
        other_labels = (y + 1) % NUM_CLASSES
        changed_model = _model()
        changed_model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras_dib.DIB(alpha=2.0, beta=0.02),
        )
        changed_optimizer = _model()
        changed_optimizer.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras_dib.DIB(alpha=2.0, beta=0.01),
        )
        changes = {
            "new images": (None, x + 0.5, y, "data"),
            "other labels": (None, x, other_labels, "data"),
            "fewer samples": (None, x[:32], y[:32], "data.num_samples"),
            "another beta": (changed_model, x, y, "objective"),
            "another learning rate": (changed_optimizer, x, y, "optimizer"),
        }
        for name, (model, new_x, new_y, key) in changes.items():
            with self.assertRaisesRegex(
                CheckpointError, f"different fit: its {key}", msg=name
            ):
                self._fit_again(checkpoint_dir, model, new_x, new_y)
            self.assertEqual(
                self._checkpoint_bytes(checkpoint_dir), saved, msg=name
            )
        # Accepted on request: the finished fit is not repeated.
        batches = self._fit_again(
            checkpoint_dir, None, x + 0.5, y, resume="allow_changes"
        )
        self.assertEqual(batches, 0)
        # The structure of the fit must still match.
        with self.assertRaisesRegex(CheckpointError, "different fit"):
            self._fit_again(
                checkpoint_dir, epochs=[2, 2], resume="allow_changes"
            )
        with self.assertRaisesRegex(ValueError, "`resume` should be"):
            self._fit_again(checkpoint_dir, resume="yes")

    def test_a_changed_dataset_is_refused(self):
        x, y = _data()
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        model = _model()
        model.fit(
            PairBatches(x, y, batch_size=16),
            epochs=[1, 1],
            verbose=0,
            checkpoint_dir=checkpoint_dir,
        )
        for name, dataset in (
            ("fewer batches", PairBatches(x[:32], y[:32], batch_size=16)),
            ("other batch size", PairBatches(x, y, batch_size=8)),
        ):
            with self.assertRaisesRegex(
                CheckpointError, "different fit: its data", msg=name
            ):
                _model().fit(
                    dataset,
                    epochs=[1, 1],
                    verbose=0,
                    checkpoint_dir=checkpoint_dir,
                )

    def test_checkpoint_without_seed_is_refused_before_assigning(self):
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        self._fit(_model(), checkpoint_dir, epochs=[1, 0])
        path = os.path.join(checkpoint_dir, FILENAME)
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive}
        meta = json.loads(str(arrays["meta"]))
        del meta["seed"]
        arrays["meta"] = np.array(json.dumps(meta))
        with open(path, "wb") as file:
            np.savez(file, **arrays)
        model = _model()
        before = [keras.ops.convert_to_numpy(v) for v in model.variables]
        with self.assertRaisesRegex(CheckpointError, "'seed'"):
            self._fit(model, checkpoint_dir, epochs=[1, 0])
        for expected, variable in zip(before, model.variables):
            self.assertAllClose(variable, expected)

    def test_non_finite_weights_keep_the_last_good_checkpoint(self):
        # Block 1's 4th step (its last, in its 2nd epoch) explodes: the
        # checkpoint of epoch 1 is kept, not replaced by broken weights.
        checkpoint_dir = os.path.join(self.get_temp_dir(), "checkpoint")
        x, y = _data(32)
        with self.assertRaisesRegex(FloatingPointError, "Block 1/2"):
            self._fit(
                _model(),
                checkpoint_dir,
                x,
                y,
                epochs=[2, 1],
                block_optimizer=exploding_optimizers(3),
            )
        with np.load(os.path.join(checkpoint_dir, FILENAME)) as archive:
            meta = json.loads(str(archive["meta"]))
            for key in archive:
                if key != "meta":
                    self.assertTrue(np.all(np.isfinite(archive[key])), key)
        self.assertEqual((meta["position"], meta["epochs_done"]), (0, 1))

    def test_bad_checkpoint_dir(self):
        with self.assertRaisesRegex(ValueError, "checkpoint_dir"):
            self._fit(_model(), 3)


class PairBatches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[window], self.y[window]


if __name__ == "__main__":
    pytest.main([__file__])

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_dib import analysis
from keras_dib.losses import DIB
from keras_dib.testing import TestCase
from tests.analysis.information_test import images
from tests.analysis.information_test import tiny_greedy_model
from tests.analysis.information_test import vectors


def small_classifier():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )


def synthetic_records(values_per_layer):
    """Records with one quantity per layer, one record per epoch."""
    epochs = len(next(iter(values_per_layer.values())))
    return [
        {
            "epoch": epoch,
            "layers": {
                name: {"I_XT": values[epoch]}
                for name, values in values_per_layer.items()
            },
        }
        for epoch in range(epochs)
    ]


class EndToEndFitTest(TestCase):
    def test_records_logs_and_json(self):
        model = small_classifier()
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x, y = vectors(64)
        path = os.path.join(self.get_temp_dir(), "sub", "information.json")
        callback = analysis.InformationPlaneCallback(
            x[:32],
            y[:32],
            every_n_epochs=2,
            filepath=path,
            batch_size=16,
            include=("renyi", "hsic", "matrix"),
        )
        history = model.fit(
            x, y, batch_size=16, epochs=3, callbacks=[callback], verbose=0
        )
        # Epoch 0 (before training), 2 (every 2 epochs), 3 (last epoch).
        self.assertEqual([r["epoch"] for r in callback.records], [0, 2, 3])
        self.assertEqual(callback.records[0]["events"], ["initial"])
        self.assertIn("train_end", callback.records[-1]["events"])
        self.assertIsNone(callback.records[-1]["block"])
        # One History entry per epoch, NaN where nothing was measured.
        values = history.history["info/hidden/I_XT"]
        self.assertEqual(len(values), 3)
        self.assertTrue(math.isnan(values[0]))
        self.assertAllClose(
            values[1:],
            [r["layers"]["hidden"]["I_XT"] for r in callback.records[1:]],
        )
        for key in ("I_XT", "I_TY", "H_T", "nHSIC_XT", "nHSIC_TY"):
            self.assertEqual(len(history.history[f"info/logits/{key}"]), 3)
        # The last record equals a direct measurement of the trained model.
        direct = analysis.information_summary(
            model, x[:32], y[:32], include=("renyi", "hsic"), batch_size=16
        )
        self.assertAllClose(
            callback.records[-1]["layers"]["logits"]["I_TY"],
            direct["layers"]["logits"]["I_TY"],
            atol=1e-5,
        )
        with open(path) as handle:
            document = json.load(handle)
        self.assertEqual(document["layer_names"], ["hidden", "logits"])
        self.assertEqual(document["settings"]["batch_size"], 16)
        self.assertEqual(len(document["records"]), 3)
        self.assertEqual(
            np.shape(document["records"][0]["mutual_information_matrix"]),
            (2, 2),
        )
        self.assertEqual(analysis.load_records(path), callback.records)
        self.assertGreater(callback.total_seconds, 0.0)

    def test_only_at_the_end(self):
        model = small_classifier()
        model.compile(optimizer="sgd", loss="mse")
        x, _ = vectors(32)
        targets = np.zeros((32, 3), dtype="float32")
        callback = analysis.InformationPlaneCallback(
            x,
            np.zeros(32, dtype="int32"),
            every_n_epochs=None,
            batch_size=16,
            record_initial=False,
        )
        history = model.fit(
            x,
            targets,
            batch_size=16,
            epochs=2,
            callbacks=[callback],
            verbose=0,
        )
        self.assertEqual([r["epoch"] for r in callback.records], [2])
        self.assertNotIn("info/hidden/I_XT", history.history)

    def test_no_logs_and_tensorboard_folder(self):
        tf = pytest.importorskip("tensorflow")
        model = small_classifier()
        model.compile(optimizer="sgd", loss="mse")
        x, y = vectors(32)
        log_dir = os.path.join(self.get_temp_dir(), "logs")
        callback = analysis.InformationPlaneCallback(
            x,
            y,
            batch_size=16,
            log_prefix=None,
            include="hsic",
            tensorboard=log_dir,
        )
        history = model.fit(
            x,
            np.zeros((32, 3)),
            batch_size=16,
            epochs=1,
            callbacks=[callback],
            verbose=0,
        )
        self.assertEqual(list(history.history), ["loss"])
        self.assertEqual(
            set(callback.records[-1]["layers"]["hidden"]),
            {"nHSIC_XT", "nHSIC_TY"},
        )
        # Before training (step 0) and after the 2 steps of the epoch.
        self.assertEqual([r["step"] for r in callback.records], [0, 2])
        self.assertEqual(os.listdir(log_dir), ["information_plane"])
        folder = os.path.join(log_dir, "information_plane")
        values = {}
        for path in os.listdir(folder):
            for event in tf.compat.v1.train.summary_iterator(
                os.path.join(folder, path)
            ):
                for value in event.summary.value:
                    values[(value.tag, event.step)] = float(
                        tf.make_ndarray(value.tensor)
                    )
        expected = {
            (f"information_plane/{name}/{key}", record["step"]): value
            for record in callback.records
            for name, quantities in record["layers"].items()
            for key, value in quantities.items()
        }
        self.assertEqual(sorted(values), sorted(expected))
        for key, value in expected.items():
            self.assertAllClose(values[key], value, rtol=1e-6)


class GreedyFitTest(TestCase):
    def test_records_blocks_and_block_ends(self):
        model = tiny_greedy_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=DIB(beta=0.01),
            metrics=["accuracy"],
        )
        x, y = images(32)
        callback = analysis.InformationPlaneCallback(
            x,
            y,
            batch_size=16,
            every_n_epochs=1,
            include=("renyi", "hsic", "matrix"),
        )
        history = model.fit(
            x,
            y,
            batch_size=16,
            epochs=[2, 0, 1],
            callbacks=[callback],
            verbose=0,
        )
        records = callback.records
        self.assertEqual([r["epoch"] for r in records], [0, 1, 2, 3])
        self.assertEqual([r["block"] for r in records], [0, 0, 0, 2])
        self.assertEqual(
            [("block_end" in r["events"]) for r in records],
            [False, False, True, True],
        )
        self.assertEqual(
            list(records[0]["layers"]), ["block_a", "block_b", "block_c"]
        )
        # The merged History holds one value per epoch, across blocks.
        values = history.history["info/block_a/I_XT"]
        self.assertEqual(len(values), len(history.history["block"]))
        self.assertAllClose(
            values, [r["layers"]["block_a"]["I_XT"] for r in records[1:]]
        )
        # Block a is frozen after its stage: its representation stops
        # changing, and so does every quantity measured on it.
        self.assertEqual(
            records[2]["layers"]["block_a"], records[3]["layers"]["block_a"]
        )
        self.assertNotEqual(
            records[0]["layers"]["block_a"], records[2]["layers"]["block_a"]
        )
        converged = analysis.convergence_epochs(callback, "I_XT", 1e-6)
        self.assertEqual(converged["block_a"], 2)
        # Frozen blocks are not recomputed; the reused values equal a
        # fresh measurement of the trained model.
        direct = analysis.information_summary(
            model, x, y, include=("renyi", "hsic", "matrix"), batch_size=16
        )
        for name, values in direct["layers"].items():
            for key, value in values.items():
                self.assertAllClose(
                    records[-1]["layers"][name][key], value, atol=1e-5
                )
        self.assertAllClose(
            records[-1]["mutual_information_matrix"],
            direct["mutual_information_matrix"],
            atol=1e-5,
        )
        self.assertAllClose(records[-1]["H_X"], direct["H_X"], atol=1e-5)

    def test_simultaneous_schedule(self):
        model = tiny_greedy_model()
        model.compile(optimizer="sgd", loss=DIB(beta=0.01))
        x, y = images(32)
        callback = analysis.InformationPlaneCallback(x, y, batch_size=16)
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=1,
            schedule="simultaneous",
            callbacks=[callback],
            verbose=0,
        )
        self.assertEqual([r["epoch"] for r in callback.records], [0, 1])
        self.assertIsNone(callback.records[-1]["block"])
        self.assertIn("block_end", callback.records[-1]["events"])


class ArgumentsTest(TestCase):
    def test_bad_arguments(self):
        x, y = vectors(32)
        for kwargs, message in (
            ({"every_n_epochs": 0}, "every_n_epochs"),
            ({"every_n_epochs": 1.5}, "every_n_epochs"),
            ({"every_n_epochs": True}, "every_n_epochs"),
            ({"filepath": 3}, "filepath"),
            ({"log_prefix": ""}, "log_prefix"),
            ({"tensorboard": 3}, "tensorboard"),
            ({"alpha": -1}, "alpha"),
            ({"include": "entropy"}, "include"),
        ):
            with pytest.raises(ValueError, match=message):
                analysis.InformationPlaneCallback(x, y, batch_size=16, **kwargs)
        with pytest.raises(ValueError, match="at least 16 samples"):
            analysis.InformationPlaneCallback(x[:8], y[:8], batch_size=16)


class ConvergenceEpochsTest(TestCase):
    def test_known_trajectories(self):
        records = synthetic_records(
            {
                "bottom": [0.0, 1.0, 1.02, 1.01, 1.0],
                "top": [0.0, 0.5, 0.8, 1.0, 1.0],
                "never": [0.0, 1.0, 0.0, 1.0, 0.0],
            }
        )
        self.assertEqual(
            analysis.convergence_epochs(records, "I_XT", tolerance=0.05),
            {"bottom": 1, "top": 3, "never": 4},
        )
        self.assertEqual(
            analysis.convergence_epochs(records, tolerance=0.5)["top"], 1
        )

    def test_unsorted_records(self):
        records = synthetic_records({"layer": [0.0, 1.0, 1.0]})[::-1]
        self.assertEqual(analysis.convergence_epochs(records), {"layer": 1})

    def test_bad_arguments(self):
        records = synthetic_records({"layer": [0.0, 1.0]})
        with pytest.raises(ValueError, match="tolerance"):
            analysis.convergence_epochs(records, tolerance=0)
        with pytest.raises(ValueError, match="Unknown quantity"):
            analysis.convergence_epochs(records, key="I_TY")
        with pytest.raises(ValueError, match="source"):
            analysis.load_records(3)
        with pytest.raises(ValueError, match="non-empty list"):
            analysis.load_records([])
        with pytest.raises(ValueError, match="non-empty list"):
            analysis.load_records([{"epoch": 0}])

import json
import os

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.analysis.gradients import GradientStatistics
from keras_dib.analysis.gradients import gradient_norm_profile
from keras_dib.analysis.gradients import load_gradient_statistics
from keras_dib.analysis.gradients import plot_gradient_norms
from keras_dib.callbacks import TensorBoard
from keras_dib.testing import TestCase

LEARNING_RATE = 0.5


# === NumPy references ===


def numpy_softmax_cross_entropy(logits, y):
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(probabilities[np.arange(n), y]))
    d_logits = probabilities.copy()
    d_logits[np.arange(n), y] -= 1.0
    return loss, d_logits / n


def numpy_mlp_gradients(params, x, y):
    """Loss and gradients of `relu(x W1 + b1) W2 + b2`, cross-entropy."""
    w1, b1, w2, b2 = params
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    loss, d_logits = numpy_softmax_cross_entropy(hidden @ w2 + b2, y)
    d_hidden = (d_logits @ w2.T) * (pre > 0)
    return loss, [
        x.T @ d_hidden,
        d_hidden.sum(0),
        hidden.T @ d_logits,
        d_logits.sum(0),
    ]


def numpy_sgd(params, batches, steps):
    """Weights after each of `steps` plain SGD steps over `batches`."""
    trajectory = [[p.copy() for p in params]]
    for step in range(steps):
        x, y = batches[step % len(batches)]
        _, grads = numpy_mlp_gradients(trajectory[-1], x, y)
        trajectory.append(
            [p - LEARNING_RATE * g for p, g in zip(trajectory[-1], grads)]
        )
    return trajectory


def numpy_layer_norms(params, x, y):
    """Per layer (two variables each): gradient norms, weight norms, loss."""
    loss, grads = numpy_mlp_gradients(params, x, y)

    def norm(arrays):
        return float(np.sqrt(sum(np.sum(a**2) for a in arrays)))

    return (
        [norm(grads[:2]), norm(grads[2:])],
        [norm(params[:2]), norm(params[2:])],
        loss,
    )


def to_numpy(variables):
    return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in variables]


def make_data(num_samples=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 4)).astype("float32")
    y = rng.integers(0, 3, size=num_samples).astype("int32")
    return x, y


def dense_block(units, name):
    return keras.Sequential(
        [keras.layers.Dense(units, name=name), keras.layers.ReLU()],
        name=f"block_{name}",
    )


# === Direct gradients with the backend's own machinery ===


def direct_gradients(model, x, y):
    """Gradient of the training loss, the way each backend's trainer does.

    TensorFlow: `tf.GradientTape` over a stateful call; torch:
    `torch.autograd.grad` over the variables; JAX: `jax.grad` of Keras'
    own `compute_loss_and_updates`.
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        gradients = tape.gradient(loss, [v.value for v in variables])
    elif backend == "torch":
        import torch

        x_tensor = keras.ops.convert_to_tensor(x)
        y_tensor = keras.ops.convert_to_tensor(y)
        with torch.enable_grad():
            y_pred = model(x_tensor, training=True)
            loss = model.compute_loss(
                x=x_tensor, y=y_tensor, y_pred=y_pred, training=True
            )
            gradients = torch.autograd.grad(
                loss, [v.value for v in variables], allow_unused=True
            )
        gradients = [
            torch.zeros_like(v.value) if g is None else g
            for v, g in zip(variables, gradients)
        ]
    elif backend == "jax":
        import jax

        def loss(trainable, non_trainable, metrics, optimizer, x, y):
            return model.compute_loss_and_updates(
                trainable,
                non_trainable,
                metrics,
                x,
                y,
                None,
                training=True,
                optimizer_variables=optimizer,
            )

        function = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (_, _), gradients = function(
            [v.value for v in variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.metrics_variables],
            [v.value for v in model.optimizer.variables],
            x,
            y,
        )
    else:
        pytest.skip(f"no gradients on backend {backend}")
    per_layer = {}
    for variable, gradient in zip(variables, gradients):
        key = "/".join(variable.path.split("/")[1:-1])
        per_layer.setdefault(key, 0.0)
        per_layer[key] += float(
            np.sum(keras.ops.convert_to_numpy(gradient).astype("float64") ** 2)
        )
    return {key: np.sqrt(value) for key, value in per_layer.items()}


class DirectGradientAtEnd(keras.callbacks.Callback):
    """Computes the direct per-layer gradient norms at each fit's end."""

    def __init__(self, x, y):
        super().__init__()
        self.x = x
        self.y = y
        self.norms = []

    def on_train_end(self, logs=None):
        self.norms.append(direct_gradients(self.model, self.x, self.y))


def layer_norms(record):
    return {r["layer"]: r["gradient_norm"] for r in record["layers"]}


# === Tests ===


class GradientStatisticsTest(TestCase):
    def _mlp(self):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, activation="relu", name="hidden"),
                keras.layers.Dense(3, name="logits"),
            ],
            name="mlp",
        )
        model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    @pytest.mark.filterwarnings("ignore")
    def test_end_to_end_matches_numpy_sgd_trajectory(self):
        # 12 samples in batches of 4: 3 steps an epoch, 2 epochs; recording
        # every 2 steps gives steps 0, 2, 4 and 6, two of them mid-epoch
        # (where JAX keeps the weights outside the model).
        x, y = make_data(12, seed=0)
        probe_x, probe_y = make_data(6, seed=1)
        for jit_compile in (True, False):
            keras.backend.clear_session()
            model = self._mlp()
            params = to_numpy(model.trainable_variables)
            path = os.path.join(self.get_temp_dir(), "records.jsonl")
            stats = GradientStatistics(
                probe_x,
                probe_y,
                every_n_steps=2,
                filepath=path,
                jit_compile=jit_compile,
            )
            history = model.fit(
                x,
                y,
                batch_size=4,
                epochs=2,
                shuffle=False,
                callbacks=[stats],
                verbose=0,
            )
            batches = [
                (x[i : i + 4].astype("float64"), y[i : i + 4])
                for i in range(0, 12, 4)
            ]
            trajectory = numpy_sgd(params, batches, steps=6)
            self.assertEqual([r["step"] for r in stats.records], [0, 2, 4, 6])
            self.assertEqual([r["epoch"] for r in stats.records], [0, 0, 1, 1])
            for record in stats.records:
                weights = trajectory[record["step"]]
                grads, norms, loss = numpy_layer_norms(
                    weights, probe_x.astype("float64"), probe_y
                )
                self.assertEqual(
                    [r["layer"] for r in record["layers"]],
                    ["hidden", "logits"],
                )
                self.assertEqual([r["depth"] for r in record["layers"]], [0, 1])
                self.assertEqual(
                    [r["num_parameters"] for r in record["layers"]], [25, 18]
                )
                self.assertAllClose(
                    [r["gradient_norm"] for r in record["layers"]],
                    grads,
                    rtol=1e-4,
                    atol=1e-6,
                )
                self.assertAllClose(
                    [r["weight_norm"] for r in record["layers"]],
                    norms,
                    rtol=1e-5,
                )
                self.assertAllClose(record["loss"], loss, rtol=1e-5)
                self.assertAllClose(
                    record["gradient_norm_first_over_last"],
                    grads[0] / grads[1],
                    rtol=1e-4,
                )
                self.assertAllClose(
                    record["gradient_norm_max_over_min"],
                    max(grads) / min(grads),
                    rtol=1e-4,
                )
                if record["step"] == 0:
                    for layer in record["layers"]:
                        self.assertIsNone(layer["update_ratio"])
                    continue
                previous = trajectory[record["step"] - 2]
                for index, layer in enumerate(record["layers"]):
                    pair = slice(2 * index, 2 * index + 2)
                    change = np.sqrt(
                        sum(
                            np.sum((a - b) ** 2)
                            for a, b in zip(weights[pair], previous[pair])
                        )
                    )
                    self.assertEqual(layer["update_steps"], 2)
                    self.assertAllClose(
                        layer["update_ratio"],
                        change / norms[index],
                        rtol=1e-3,
                    )
            # The same records in the JSON file; each epoch's logs get the
            # spread of its latest record (steps 2 and 6).
            self.assertEqual(load_gradient_statistics(path), stats.records)
            self.assertAllClose(
                history.history["gradient_norm_first_over_last"],
                [
                    stats.records[1]["gradient_norm_first_over_last"],
                    stats.records[3]["gradient_norm_first_over_last"],
                ],
            )
            self.assertEqual(stats.num_probes, 4)
            self.assertGreater(stats.probe_seconds, 0.0)
            # The probe leaves the model as it was trained.
            self.assertAllClose(
                model.trainable_variables[0],
                trajectory[-1][0],
                rtol=1e-4,
                atol=1e-6,
            )

    def _greedy_mlp(self):
        model = keras_dib.GreedyLayerwiseModel(
            [dense_block(5, "dense0"), dense_block(4, "dense1")],
            head=keras.layers.Dense(3, name="head"),
            auxiliary_heads=[keras.layers.Dense(3, name="auxiliary0")],
            num_classes=3,
            input_shape=(4,),
            name="greedy",
        )
        model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE),
            loss=keras_dib.losses.LocalObjective(),
        )
        return model

    def test_greedy_matches_numpy_and_records_only_current_block(self):
        x, y = make_data(12, seed=2)
        probe_x, probe_y = make_data(6, seed=3)
        model = self._greedy_mlp()
        block0 = to_numpy(model.blocks[0].trainable_variables)
        auxiliary0 = to_numpy(model.auxiliary_heads[0].trainable_variables)
        block1 = to_numpy(model.blocks[1].trainable_variables)
        head = to_numpy(model.head.trainable_variables)
        stats = GradientStatistics(probe_x, probe_y, every_n_steps=2)
        history = model.fit(
            x,
            y,
            batch_size=4,
            epochs=[1, 2],
            shuffle=False,
            callbacks=[stats],
            verbose=0,
        )
        batches = [
            (x[i : i + 4].astype("float64"), y[i : i + 4])
            for i in range(0, 12, 4)
        ]
        # Stage 0: block 0 through auxiliary head 0, 3 steps.
        stage0 = numpy_sgd(block0 + auxiliary0, batches, steps=3)
        # Stage 1: block 1 and the head on the frozen block 0, 6 steps.
        w, b = stage0[-1][:2]
        frozen = [(np.maximum(bx @ w + b, 0.0), by) for bx, by in batches]
        stage1 = numpy_sgd(block1 + head, frozen, steps=6)
        probe_hidden = np.maximum(probe_x.astype("float64") @ w + b, 0.0)
        expected = {
            0: (stage0, probe_x.astype("float64")),
            1: (stage1, probe_hidden),
        }
        names = {
            0: ["block_dense0/dense0", "auxiliary0"],
            1: ["block_dense1/dense1", "head"],
        }
        depths = {0: [0, None], 1: [1, 2]}
        self.assertEqual(
            [(r["block"], r["stage_step"]) for r in stats.records],
            [(0, 0), (0, 2), (0, 3), (1, 0), (1, 2), (1, 4), (1, 6)],
        )
        self.assertEqual(
            [r["step"] for r in stats.records], [0, 2, 3, 3, 5, 7, 9]
        )
        for record in stats.records:
            block = record["block"]
            self.assertEqual(record["schedule"], "sequential")
            # Only the block being trained, and its head.
            self.assertEqual(
                [r["layer"] for r in record["layers"]], names[block]
            )
            self.assertEqual(
                [r["depth"] for r in record["layers"]], depths[block]
            )
            self.assertEqual(
                [r["block"] for r in record["layers"]], [block, block]
            )
            trajectory, inputs = expected[block]
            grads, norms, loss = numpy_layer_norms(
                trajectory[record["stage_step"]], inputs, probe_y
            )
            self.assertAllClose(
                [r["gradient_norm"] for r in record["layers"]],
                grads,
                rtol=1e-4,
                atol=1e-6,
            )
            self.assertAllClose(
                [r["weight_norm"] for r in record["layers"]], norms, rtol=1e-5
            )
            self.assertAllClose(record["loss"], loss, rtol=1e-5)
        self.assertEqual(len(history.history["gradient_norm_max_over_min"]), 3)
        # Profiles gather each block at the start and end of its stage.
        start = gradient_norm_profile(stats.records, "start")
        self.assertEqual(
            start["layers"],
            ["block_dense0/dense0", "block_dense1/dense1", "head"],
        )
        self.assertAllClose(
            start["gradient_norms"],
            [
                layer_norms(stats.records[0])["block_dense0/dense0"],
                layer_norms(stats.records[3])["block_dense1/dense1"],
                layer_norms(stats.records[3])["head"],
            ],
        )

    def test_matches_direct_backend_gradients_greedy_dib_and_end_to_end(self):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
        y = rng.integers(0, 3, size=32).astype("int32")
        probe_x, probe_y = x[:8], y[:8]
        blocks = [
            keras.Sequential(
                [
                    keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}"),
                    keras.layers.ReLU(),
                ],
                name=f"block{i}",
            )
            for i in range(2)
        ]
        model = keras_dib.GreedyLayerwiseModel(
            blocks,
            head=keras_dib.models.AuxiliaryHead(3, grid_size=1, name="head"),
            num_classes=3,
            input_shape=(8, 8, 3),
            name="net",
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras_dib.losses.DIB(alpha=1.01, beta=0.01),
        )
        stats = GradientStatistics(probe_x, probe_y, every_n_steps=3)
        direct = DirectGradientAtEnd(probe_x, probe_y)
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            callbacks=[stats, direct],
            verbose=0,
        )
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            schedule="end_to_end",
            callbacks=[stats, direct],
            verbose=0,
        )
        ends = [
            r
            for r, n in zip(stats.records, stats.records[1:] + [None])
            if n is None or n["stage_step"] == 0
        ]
        self.assertEqual(
            [(r["schedule"], r["block"]) for r in ends],
            [("sequential", 0), ("sequential", 1), ("end_to_end", None)],
        )
        self.assertEqual(len(direct.norms), 3)
        for record, expected in zip(ends, direct.norms):
            actual = layer_norms(record)
            self.assertEqual(sorted(actual), sorted(expected))
            for key, value in expected.items():
                self.assertAllClose(actual[key], value, rtol=1e-4, atol=1e-7)
        self.assertEqual(
            sorted(layer_norms(ends[0])),
            ["auxiliary_head_0/logits", "block0/conv0"],
        )
        self.assertEqual(
            sorted(layer_norms(ends[-1])),
            ["block0/conv0", "block1/conv1", "head/logits"],
        )

    def test_tensorboard_events_written(self):
        tf = pytest.importorskip("tensorflow")
        x, y = make_data(8, seed=5)
        model = self._mlp()
        directory = self.get_temp_dir()
        stats = GradientStatistics(
            x[:4], y[:4], every_n_steps=1, tensorboard_dir=directory
        )
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[stats], verbose=0)
        files = [f for f in os.listdir(directory) if "tfevents" in f]
        self.assertEqual(len(files), 1)
        values = {}
        for event in tf.compat.v1.train.summary_iterator(
            os.path.join(directory, files[0])
        ):
            for value in event.summary.value:
                values[(value.tag, event.step)] = float(
                    tf.make_ndarray(value.tensor)
                )
                if value.metadata.plugin_data.plugin_name:
                    self.assertEqual(
                        value.metadata.plugin_data.plugin_name, "scalars"
                    )
        self.assertEqual([r["step"] for r in stats.records], [0, 1, 2])
        for record in stats.records:
            step = record["step"]
            self.assertAllClose(
                values[("probe_loss", step)], record["loss"], rtol=1e-6
            )
            for layer in record["layers"]:
                for name in ("gradient_norm", "weight_norm", "update_ratio"):
                    key = (f"{name}/{layer['layer']}", step)
                    if layer[name] is None:
                        self.assertNotIn(key, values)
                    else:
                        self.assertAllClose(values[key], layer[name], rtol=1e-6)
        self.assertNotIn(("update_ratio/hidden", 0), values)
        self.assertIn(("update_ratio/hidden", 1), values)

    def test_probe_changes_no_state(self):
        # Batch normalization (moving statistics), dropout (seed state) and
        # metrics must be exactly as before a probe.
        x, y = make_data(8, seed=6)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, name="hidden"),
                keras.layers.BatchNormalization(name="batch_norm"),
                keras.layers.Dropout(0.5, name="dropout"),
                keras.layers.Dense(3, name="logits"),
            ],
            name="mlp",
        )
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.evaluate(x, y, verbose=0)
        before = [
            keras.ops.convert_to_numpy(v)
            for v in model.non_trainable_variables + model.metrics_variables
        ]
        stats = GradientStatistics(x, y)
        stats.set_model(model)
        stats.on_train_begin()
        stats.on_train_begin()
        after = [
            keras.ops.convert_to_numpy(v)
            for v in model.non_trainable_variables + model.metrics_variables
        ]
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)
        self.assertEqual(
            [r["layer"] for r in stats.records[0]["layers"]],
            ["hidden", "batch_norm", "logits"],
        )
        self.assertAllFinite([r["loss"] for r in stats.records])

    def test_probe_includes_forward_pass_and_weight_losses(self):
        # Losses added during the forward pass (`add_loss`, here activity
        # regularization) and weight regularizers enter the probe's loss
        # and gradients, as they enter the training step's.
        x, y = make_data(8, seed=7)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(
                    5,
                    activation="relu",
                    kernel_regularizer=keras.regularizers.L2(0.1),
                    name="hidden",
                ),
                keras.layers.ActivityRegularization(l2=0.5, name="activity"),
                keras.layers.Dense(3, name="logits"),
            ],
            name="mlp",
        )
        model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        stats = GradientStatistics(x, y)
        stats.set_model(model)
        stats.on_train_begin()
        w1, b1, w2, b2 = to_numpy(model.trainable_variables)
        hidden = np.maximum(x @ w1 + b1, 0.0)
        cross_entropy, _ = numpy_softmax_cross_entropy(hidden @ w2 + b2, y)
        expected = (
            cross_entropy
            + 0.1 * np.sum(w1**2)
            + 0.5 * np.sum(hidden**2) / len(x)
        )
        record = stats.records[0]
        self.assertAllClose(record["loss"], expected, rtol=1e-5)
        direct = direct_gradients(model, x, y)
        for name, value in layer_norms(record).items():
            self.assertAllClose(value, direct[name], rtol=1e-5)

    def test_invalid_arguments(self):
        x, y = make_data(4)
        with self.assertRaisesRegex(ValueError, "every_n_steps=0"):
            GradientStatistics(x, y, every_n_steps=0)
        with self.assertRaisesRegex(ValueError, "every_n_steps=True"):
            GradientStatistics(x, y, every_n_steps=True)
        with self.assertRaisesRegex(ValueError, r"batch sizes: \[3, 4\]"):
            GradientStatistics(x, y[:3])
        with self.assertRaisesRegex(ValueError, "filepath=3"):
            GradientStatistics(x, y, filepath=3)
        with self.assertRaisesRegex(ValueError, "jit_compile='yes'"):
            GradientStatistics(x, y, jit_compile="yes")
        with self.assertRaisesRegex(ValueError, "tensorboard of type int"):
            GradientStatistics(x, y, tensorboard=3)
        with self.assertRaisesRegex(ValueError, "not both"):
            GradientStatistics(x, y, tensorboard="a", tensorboard_dir="b")
        with self.assertRaisesRegex(ValueError, "when='later'"):
            gradient_norm_profile([], when="later")
        with self.assertRaisesRegex(ValueError, "records=3"):
            gradient_norm_profile(3)
        path = os.path.join(self.get_temp_dir(), "plot.png")
        with self.assertRaisesRegex(ValueError, "runs={}"):
            plot_gradient_norms({}, path)
        with self.assertRaisesRegex(ValueError, "when=\\('never',\\)"):
            plot_gradient_norms({"a": []}, path, when="never")
        with self.assertRaisesRegex(ValueError, "figsize=\\(0, 3\\)"):
            plot_gradient_norms({"a": []}, path, figsize=(0, 3))

    def test_serialization(self):
        x, y = make_data(4)
        stats = GradientStatistics(
            x,
            y,
            every_n_steps=7,
            filepath="a.jsonl",
            jit_compile=False,
            tensorboard=TensorBoard("logs"),
        )
        revived = self.run_serialization_test(stats)
        self.assertEqual(revived.every_n_steps, 7)
        # The TensorBoard callback is saved as its log folder.
        self.assertEqual(revived.tensorboard, "logs")
        np.testing.assert_array_equal(revived.x, x)
        np.testing.assert_array_equal(revived.y, y)
        self.assertEqual(revived.x.dtype, np.float32)


def fake_records(norms_per_record, blocks=None):
    records = []
    for index, norms in enumerate(norms_per_record):
        records.append(
            {
                "step": index,
                "layers": [
                    {"layer": f"l{d}", "depth": d, "gradient_norm": g}
                    for d, g in norms.items()
                ]
                + [{"layer": "auxiliary", "depth": None, "gradient_norm": 1e9}],
            }
        )
    return records


class GradientNormProfileTest(TestCase):
    def test_profile_against_numpy(self):
        # An end-to-end run (every layer in each record) and a greedy one
        # (each record holds one layer, in a different order).
        end_to_end = fake_records(
            [{0: 1e-4, 1: 1e-2, 2: 1.0}, {0: 3e-4, 1: 2e-2, 2: 0.5}]
            + [{0: 5e-4, 1: 4e-2, 2: 0.25}]
        )
        greedy = fake_records(
            [{1: 0.3}, {1: 0.2}, {0: 0.5}, {0: 0.1}, {0: 0.4}, {2: 0.2}]
        )
        for records, when, expected in [
            (end_to_end, "start", [1e-4, 1e-2, 1.0]),
            (end_to_end, "middle", [3e-4, 2e-2, 0.5]),
            (end_to_end, "end", [5e-4, 4e-2, 0.25]),
            (greedy, "start", [0.5, 0.3, 0.2]),
            (greedy, "middle", [0.4, 0.25, 0.2]),
            (greedy, "end", [0.4, 0.2, 0.2]),
        ]:
            profile = gradient_norm_profile(records, when)
            self.assertEqual(profile["layers"], ["l0", "l1", "l2"])
            self.assertEqual(profile["depths"], [0, 1, 2])
            self.assertAllClose(profile["gradient_norms"], expected)
            self.assertAllClose(
                profile["max_over_min"], max(expected) / min(expected)
            )
            self.assertAllClose(
                profile["first_over_last"], expected[0] / expected[-1]
            )
            self.assertEqual(profile["zero_layers"], [])
        # A dead layer: zero gradient, no finite spread.
        dead = gradient_norm_profile(fake_records([{0: 0.5, 1: 0.0, 2: 0.1}]))
        self.assertEqual(dead["zero_layers"], ["l1"])
        self.assertIsNone(dead["max_over_min"])
        self.assertAllClose(dead["first_over_last"], 5.0)
        empty = gradient_norm_profile([])
        self.assertIsNone(empty["max_over_min"])
        self.assertEqual(empty["layers"], [])


class PlotGradientNormsTest(TestCase):
    def test_plot_renders_png(self):
        from PIL import Image

        directory = self.get_temp_dir()
        path = os.path.join(directory, "records.jsonl")
        records = fake_records([{0: 1e-3, 1: 1e-2, 2: 1.0}] * 2)
        with open(path, "w") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
        greedy = fake_records([{0: 0.5}, {1: 0.0}, {2: 0.2}])
        png = os.path.join(directory, "sub", "gradients.png")
        result = plot_gradient_norms(
            {"end to end": path, "greedy": greedy},
            png,
            title="test",
            figsize=(6, 3),
            dpi=50,
        )
        self.assertEqual(result, png)
        with Image.open(png) as image:
            self.assertEqual(image.format, "PNG")
            self.assertEqual(image.size, (300, 150))
            pixels = np.asarray(image.convert("L"))
        # Not a blank canvas: axes, lines and text were drawn.
        self.assertGreater(np.mean(pixels < 128), 0.005)
        single = os.path.join(directory, "single.png")
        plot_gradient_norms({"greedy": greedy}, single, when="end", dpi=40)
        with Image.open(single) as image:
            self.assertEqual(image.size, (400, 160))

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_dib.losses.dib import DIB
from keras_dib.losses.dib import LocalObjective
from keras_dib.losses.hsic import HSICBottleneck
from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.testing import TestCase
from tests.ops.kernels_test import gradient_of
from tests.ops.renyi_test import numpy_entropy


def numpy_gaussian_gram(x, sigma, num_neighbors=10):
    """Reference Gaussian Gram matrix; "knn": mean distance to k nearest."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    distances = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
    if sigma == "knn":
        k = min(num_neighbors, len(x) - 1)
        nearest = np.sort(distances + np.diag(np.full(len(x), np.inf)))[:, :k]
        sigma = np.mean(np.sqrt(nearest))
    return np.exp(-distances / (2 * sigma**2))


def numpy_hsic(gram_x, gram_y, normalized=False):
    n = gram_x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n

    def value(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    if normalized:
        return value(gram_x, gram_y) / np.sqrt(
            value(gram_x, gram_x) * value(gram_y, gram_y)
        )
    return value(gram_x, gram_y)


def numpy_hsic_bottleneck(
    inputs,
    block_inputs,
    features,
    labels,
    gamma,
    compression="input",
    normalized=False,
    sigma="knn",
    input_sigma="knn",
):
    """HSIC(X, T) - gamma HSIC(Y, T): Gaussian kernels, label kernel on Y."""
    target = inputs if compression == "input" else block_inputs
    gram_t = numpy_gaussian_gram(features, sigma)
    gram_x = numpy_gaussian_gram(target, input_sigma)
    gram_y = (labels[:, None] == labels[None]).astype(np.float64)
    return numpy_hsic(gram_x, gram_t, normalized) - gamma * numpy_hsic(
        gram_y, gram_t, normalized
    )


def fixed_batch(n=24, seed=0):
    """A fixed batch where T depends on X and on the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    inputs = rng.normal(size=(n, 4, 4, 3)).astype("float32")
    block_inputs = rng.normal(size=(n, 2, 2, 5)).astype("float32")
    centers = rng.normal(size=(4, 6))
    features = (
        centers[labels]
        + 0.3 * inputs.reshape(n, -1)[:, :6]
        + 0.2 * rng.normal(size=(n, 6))
    ).astype("float32")
    return inputs, block_inputs, features, labels.astype("int32")


class HSICBottleneckTest(TestCase):
    def test_regularization_matches_numpy(self):
        inputs, block_inputs, features, labels = fixed_batch()
        settings = [
            {},
            {"normalized": True},
            {"compression": "block_input", "gamma": 2.5},
            {"sigma": 1.5, "input_sigma": 3.0, "gamma": 0.5},
            {"gamma": 0.0},
        ]
        for kwargs in settings:
            objective = HSICBottleneck(**kwargs)
            actual = objective.regularization(
                inputs, block_inputs, features, labels
            )
            expected = numpy_hsic_bottleneck(
                inputs,
                block_inputs,
                features,
                labels,
                gamma=kwargs.get("gamma", 1.0),
                compression=kwargs.get("compression", "input"),
                normalized=kwargs.get("normalized", False),
                sigma=kwargs.get("sigma", "knn"),
                input_sigma=kwargs.get("input_sigma", "knn"),
            )
            self.assertAllClose(
                actual, expected, atol=1e-5, rtol=1e-4, msg=str(kwargs)
            )

    def test_label_formats_agree(self):
        inputs, block_inputs, features, labels = fixed_batch()
        objective = HSICBottleneck(gamma=2.0)
        expected = numpy_hsic_bottleneck(
            inputs, block_inputs, features, labels, gamma=2.0
        )
        for y_true in (
            labels,
            labels[:, None],
            np.eye(4, dtype="float32")[labels],
        ):
            self.assertAllClose(
                objective.regularization(
                    inputs, block_inputs, features, y_true
                ),
                expected,
                atol=1e-5,
                rtol=1e-4,
                msg=str(y_true.shape),
            )

    def test_label_term_rewards_label_dependence(self):
        # Features that are the labels' class centres have a large
        # HSIC(Y, T): the regulariser is lower than for random features.
        inputs, block_inputs, _, labels = fixed_batch()
        rng = np.random.default_rng(1)
        informative = np.eye(4, dtype="float32")[labels] * 3.0
        random = rng.normal(size=informative.shape).astype("float32")
        objective = HSICBottleneck(gamma=10.0)
        self.assertLess(
            float(
                objective.regularization(
                    inputs, block_inputs, informative, labels
                )
            ),
            float(
                objective.regularization(inputs, block_inputs, random, labels)
            ),
        )

    def test_cross_entropy_matches_numpy(self):
        rng = np.random.default_rng(2)
        logits = rng.normal(size=(6, 4)).astype("float32")
        labels = np.array([0, 1, 2, 3, 1, 0])
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        expected = -np.mean(log_softmax[np.arange(6), labels])
        self.assertAllClose(
            HSICBottleneck()(labels, logits), expected, atol=1e-5
        )

    def test_gradient_flows_to_features_only(self):
        inputs, block_inputs, features, labels = fixed_batch()
        objective = HSICBottleneck()
        gradient = gradient_of(
            lambda t: objective.regularization(inputs, block_inputs, t, labels),
            features,
        )
        self.assertAllFinite(gradient)
        self.assertGreater(
            float(np.max(np.abs(ops.convert_to_numpy(gradient)))), 0.0
        )
        # The Gram matrix of X carries no gradient (`0 * sum(x)` only keeps
        # x connected, so that every backend returns a gradient array).
        gradient = gradient_of(
            lambda x: (
                objective.regularization(x, block_inputs, features, labels)
                + 0.0 * ops.sum(x)
            ),
            inputs,
        )
        self.assertAllClose(gradient, np.zeros_like(inputs))

    def test_properties(self):
        objective = HSICBottleneck(beta=0.5)
        self.assertTrue(objective.uses_regularization)
        self.assertEqual(objective.regularization_name, "hsic")
        self.assertFalse(HSICBottleneck(beta=0).uses_regularization)

    def test_serialization(self):
        objective = HSICBottleneck(
            beta=0.3,
            gamma=2.0,
            compression="block_input",
            normalized=True,
            sigma=2.0,
            input_sigma="silverman",
            num_neighbors=5,
            label_smoothing=0.1,
            name="hsic_test",
        )
        revived = self.run_serialization_test(objective)
        for attribute in (
            "beta",
            "gamma",
            "compression",
            "normalized",
            "sigma",
            "input_sigma",
            "num_neighbors",
            "label_smoothing",
            "name",
        ):
            self.assertEqual(
                getattr(revived, attribute), getattr(objective, attribute)
            )
        revived = keras.losses.deserialize(keras.losses.serialize(objective))
        self.assertIsInstance(revived, HSICBottleneck)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`gamma` should be"):
            HSICBottleneck(gamma=-1.0)
        with pytest.raises(ValueError, match="`gamma` should be"):
            HSICBottleneck(gamma=float("nan"))
        with pytest.raises(ValueError, match="`beta` should be"):
            HSICBottleneck(beta=-0.1)
        with pytest.raises(ValueError, match="`compression` should be"):
            HSICBottleneck(compression="entropy")
        with pytest.raises(ValueError, match="`normalized` should be"):
            HSICBottleneck(normalized="yes")
        with pytest.raises(ValueError, match="`sigma` should be"):
            HSICBottleneck(sigma=0.0)
        with pytest.raises(ValueError, match="`sigma` should be"):
            HSICBottleneck(input_sigma="median")
        with pytest.raises(ValueError, match="`num_neighbors` should be"):
            HSICBottleneck(num_neighbors=0)
        with pytest.raises(ValueError, match="`label_smoothing` should be"):
            HSICBottleneck(label_smoothing=1.0)


@keras.saving.register_keras_serializable(package="keras_dib_tests")
class FeatureEnergy(LocalObjective):
    """A user's own objective: beta * mean squared activation."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    @property
    def regularization_name(self):
        return "compression"

    def regularization(self, inputs, block_inputs, features, y_true):
        features = ops.cast(features, "float32")
        return self.scale * ops.mean(ops.square(features))

    def get_config(self):
        config = super().get_config()
        config["scale"] = self.scale
        return config


def tiny_greedy_model():
    blocks = [
        keras.Sequential(
            [keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()]
        ),
        keras.Sequential(
            [keras.layers.Conv2D(4, 3, strides=2), keras.layers.ReLU()]
        ),
    ]
    return GreedyLayerwiseModel(
        blocks,
        head=AuxiliaryHead(3, grid_size=1),
        num_classes=3,
        input_shape=(8, 8, 3),
    )


class PluggableObjectivesTest(TestCase):
    """Every objective behind the one `LocalObjective` interface."""

    def objectives(self):
        return {
            "cross_entropy": LocalObjective(),
            "dib": DIB(alpha=2.0, beta=0.01),
            "hsic": HSICBottleneck(beta=0.1),
            "custom": FeatureEnergy(scale=2.0, beta=0.01),
        }

    def test_regularizations_match_numpy(self):
        inputs, block_inputs, features, labels = fixed_batch()
        gram_x = numpy_gaussian_gram(inputs, "knn")
        gram_t = numpy_gaussian_gram(features, "knn")
        joint = gram_x * gram_t
        expected = {
            "cross_entropy": 0.0,
            "dib": numpy_entropy(gram_x, 2.0)
            + numpy_entropy(gram_t, 2.0)
            - numpy_entropy(joint, 2.0),
            "hsic": numpy_hsic_bottleneck(
                inputs, block_inputs, features, labels, gamma=1.0
            ),
            "custom": 2.0 * np.mean(features.astype(np.float64) ** 2),
        }
        tensors = [
            ops.convert_to_tensor(value)
            for value in (inputs, block_inputs, features, labels)
        ]
        for key, objective in self.objectives().items():
            self.assertAllClose(
                objective.regularization(*tensors),
                expected[key],
                atol=1e-4,
                rtol=1e-4,
                msg=key,
            )

    def test_serialization_round_trips(self):
        for key, objective in self.objectives().items():
            revived = self.run_serialization_test(objective)
            self.assertEqual(revived.beta, objective.beta, msg=key)

    def test_each_trains_a_greedy_model(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
        y = (np.arange(32) % 3).astype("int32")
        expected_metric = {
            "cross_entropy": None,
            "dib": "compression",
            "hsic": ("hsic", "regularization"),
            "custom": "compression",
        }
        for key, objective in self.objectives().items():
            model = tiny_greedy_model()
            model.compile(optimizer="adam", loss=objective)
            # The first block only: the objective is the same for each.
            history = model.fit(
                x, y, batch_size=16, epochs=[1, 0], verbose=0
            ).history
            self.assertEqual(history["block"], [0], msg=key)
            self.assertTrue(np.all(np.isfinite(history["loss"])), msg=key)
            names = expected_metric[key]
            if names is None:
                self.assertNotIn("regularization", history, msg=key)
                continue
            names = (names,) if isinstance(names, str) else names
            reported = [name for name in names if name in history]
            self.assertEqual(len(reported), 1, msg=f"{key}: {history}")
            self.assertTrue(np.all(np.isfinite(history[reported[0]])))

    def test_compiled_objective_survives_keras_round_trip(self):
        objective = HSICBottleneck(beta=0.5, gamma=2.0, normalized=True)
        model = tiny_greedy_model()
        model.compile(optimizer="adam", loss=objective)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertIsInstance(restored.loss, HSICBottleneck)
        self.assertEqual(restored.loss.get_config(), objective.get_config())

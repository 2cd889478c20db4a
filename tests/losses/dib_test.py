"""Tests of keras_dib.losses.dib: the base objective, DIB and its mirror."""

import keras
import numpy as np
import pytest

from keras_dib.losses import DIB
from keras_dib.losses import InformationPreservation
from keras_dib.losses import LocalObjective
from keras_dib.testing import TestCase


def _softmax_cross_entropy(one_hot, logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -(one_hot * log_probs).sum(axis=-1)


def _knn_width(x, k):
    x = x.reshape(len(x), -1).astype(np.float64)
    distances = np.sqrt(
        np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0)
    )
    np.fill_diagonal(distances, np.inf)
    k = min(k, len(x) - 1)
    return np.sort(distances, axis=1)[:, :k].mean()


def _gaussian_gram(x, k):
    sigma = _knn_width(x, k)
    x = x.reshape(len(x), -1).astype(np.float64)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-squared / (2.0 * sigma**2))


def _renyi_entropy(gram, alpha):
    a = gram / np.trace(gram)
    eigenvalues = np.clip(np.linalg.eigvalsh(a), 0.0, None)
    return np.log2(np.sum(eigenvalues**alpha)) / (1.0 - alpha)


def _mutual_information(gram_c, gram_t, alpha):
    return (
        _renyi_entropy(gram_c, alpha)
        + _renyi_entropy(gram_t, alpha)
        - _renyi_entropy(gram_c * gram_t, alpha)
    )


class LocalObjectiveTest(TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.logits = rng.normal(size=(16, 5)).astype("float32")
        self.labels = rng.integers(0, 5, size=(16,)).astype("int32")
        self.one_hot = np.eye(5, dtype="float32")[self.labels]
        self.expected = _softmax_cross_entropy(self.one_hot, self.logits)

    def test_cross_entropy_integer_labels(self):
        for loss in (LocalObjective(), DIB()):
            self.assertAllClose(
                loss(self.labels, self.logits),
                self.expected.mean(),
                atol=1e-5,
                rtol=1e-5,
            )
            self.assertAllClose(
                loss(self.labels[:, None], self.logits),
                self.expected.mean(),
                atol=1e-5,
                rtol=1e-5,
            )

    def test_cross_entropy_one_hot_labels(self):
        for loss in (LocalObjective(), DIB()):
            self.assertAllClose(
                loss(self.one_hot, self.logits),
                self.expected.mean(),
                atol=1e-5,
                rtol=1e-5,
            )

    def test_cross_entropy_per_sample(self):
        loss = LocalObjective()
        self.assertAllClose(
            loss.call(self.labels, self.logits),
            self.expected,
            atol=1e-5,
            rtol=1e-5,
        )

    def test_label_smoothing(self):
        smoothing = 0.1
        smoothed = self.one_hot * (1 - smoothing) + smoothing / 5
        expected = _softmax_cross_entropy(smoothed, self.logits).mean()
        loss = LocalObjective(label_smoothing=smoothing)
        for labels in (self.labels, self.one_hot):
            self.assertAllClose(
                loss(labels, self.logits), expected, atol=1e-5, rtol=1e-5
            )

    def test_base_regularization_is_zero(self):
        loss = LocalObjective(beta=0.5)
        self.assertTrue(loss.uses_regularization)
        self.assertFalse(LocalObjective().uses_regularization)
        value = loss.regularization(
            self.logits, self.logits, self.logits, self.labels
        )
        self.assertAllClose(value, 0.0)

    def test_bad_arguments(self):
        for kwargs, name in (
            ({"beta": -1}, "beta"),
            ({"beta": float("nan")}, "beta"),
            ({"label_smoothing": 1}, "label_smoothing"),
            ({"label_smoothing": -0.1}, "label_smoothing"),
        ):
            with self.assertRaisesRegex(ValueError, name):
                LocalObjective(**kwargs)

    def test_serialization(self):
        revived = self.run_serialization_test(
            LocalObjective(beta=0.5, label_smoothing=0.1, name="local")
        )
        self.assertEqual(revived.beta, 0.5)
        self.assertEqual(revived.label_smoothing, 0.1)


class DIBTest(TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1)
        self.inputs = rng.normal(size=(24, 4, 4, 3)).astype("float32")
        self.block_inputs = rng.normal(size=(24, 4, 4, 2)).astype("float32")
        self.features = (
            self.block_inputs.reshape(24, -1)[:, :6] * 2.0
            + 0.3 * rng.normal(size=(24, 6))
        ).astype("float32")
        self.labels = rng.integers(0, 3, size=(24,)).astype("int32")

    def _regularization(self, **kwargs):
        loss = DIB(**kwargs)
        return keras.ops.convert_to_numpy(
            loss.regularization(
                # Tensors: on torch, numpy targets are not accepted (see
                # the report on DIB.regularization).
                keras.ops.convert_to_tensor(self.inputs),
                keras.ops.convert_to_tensor(self.block_inputs),
                keras.ops.convert_to_tensor(self.features),
                self.labels,
            )
        )

    def test_regularization_input_matches_numpy(self):
        for alpha in (1.01, 2.0):
            for k in (3, 10):
                expected = _mutual_information(
                    _gaussian_gram(self.inputs, k),
                    _gaussian_gram(self.features, k),
                    alpha,
                )
                actual = self._regularization(
                    alpha=alpha, compression="input", num_neighbors=k
                )
                self.assertAllClose(actual, expected, atol=2e-3, rtol=2e-3)

    def test_regularization_block_input_matches_numpy(self):
        for alpha in (1.01, 2.0):
            expected = _mutual_information(
                _gaussian_gram(self.block_inputs, 10),
                _gaussian_gram(self.features, 10),
                alpha,
            )
            actual = self._regularization(
                alpha=alpha, compression="block_input"
            )
            self.assertAllClose(actual, expected, atol=2e-3, rtol=2e-3)
            # Not the same as the input target on this batch.
            other = _mutual_information(
                _gaussian_gram(self.inputs, 10),
                _gaussian_gram(self.features, 10),
                alpha,
            )
            self.assertGreater(abs(expected - other), 1e-2)

    def test_regularization_entropy_matches_numpy(self):
        for alpha in (1.01, 2.0):
            expected = _renyi_entropy(_gaussian_gram(self.features, 10), alpha)
            actual = self._regularization(alpha=alpha, compression="entropy")
            self.assertAllClose(actual, expected, atol=2e-3, rtol=2e-3)

    def test_regularization_fixed_sigma(self):
        sigma = 1.5
        x = self.features.astype(np.float64)
        gram_t = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * sigma**2))
        expected = _renyi_entropy(gram_t, 2.0)
        actual = self._regularization(
            alpha=2.0, compression="entropy", sigma=sigma
        )
        self.assertAllClose(actual, expected, atol=2e-3, rtol=2e-3)

    def test_regularization_names(self):
        self.assertEqual(DIB().regularization_name, "compression")
        self.assertEqual(
            DIB(compression="block_input").regularization_name, "compression"
        )
        self.assertEqual(
            DIB(compression="entropy").regularization_name, "entropy"
        )
        self.assertFalse(DIB(beta=0).uses_regularization)

    def test_bad_arguments(self):
        for kwargs, name in (
            ({"alpha": 1}, "alpha"),
            ({"alpha": 0}, "alpha"),
            ({"beta": -1}, "beta"),
            ({"compression": "foo"}, "compression"),
            ({"sigma": 0}, "sigma"),
            ({"sigma": "foo"}, "sigma"),
            ({"target_sigma": -1.0}, "sigma"),
            ({"num_neighbors": 0}, "num_neighbors"),
            ({"num_neighbors": 2.5}, "num_neighbors"),
            ({"label_smoothing": 1}, "label_smoothing"),
        ):
            with self.assertRaisesRegex(ValueError, name, msg=str(kwargs)):
                DIB(**kwargs)

    def test_serialization(self):
        loss = DIB(
            alpha=2.0,
            beta=0.1,
            compression="block_input",
            sigma=1.5,
            target_sigma="silverman",
            num_neighbors=5,
            label_smoothing=0.05,
        )
        revived = self.run_serialization_test(loss)
        self.assertEqual(revived.alpha, 2.0)
        self.assertEqual(revived.compression, "block_input")
        self.assertEqual(revived.sigma, 1.5)
        self.assertEqual(revived.target_sigma, "silverman")
        self.assertEqual(revived.num_neighbors, 5)

    def test_get_by_registered_name(self):
        for name, cls in (
            ("keras_dib>DIB", DIB),
            ("keras_dib>LocalObjective", LocalObjective),
        ):
            self.assertIs(keras.saving.get_registered_object(name), cls)
            # A registered name deserializes to the class, as Keras does
            # for custom objects given by name.
            self.assertIs(keras.losses.deserialize(name), cls)
            self.assertIsInstance(
                keras.losses.get({"class_name": name, "config": {}}), cls
            )
        revived = keras.losses.get(
            keras.losses.serialize(DIB(alpha=2.0, beta=0.5))
        )
        self.assertIsInstance(revived, DIB)
        self.assertEqual((revived.alpha, revived.beta), (2.0, 0.5))


class InformationPreservationTest(TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(2)
        self.inputs = rng.normal(size=(20, 4, 4, 3)).astype("float32")
        self.features = (
            self.inputs.reshape(20, -1)[:, :5] + 0.5 * rng.normal(size=(20, 5))
        ).astype("float32")
        self.logits = rng.normal(size=(20, 3)).astype("float32")
        self.labels = rng.integers(0, 3, size=(20,)).astype("int32")

    def _terms(self, loss):
        terms = loss.compute_terms(
            self.labels,
            keras.ops.convert_to_tensor(self.logits),
            features=keras.ops.convert_to_tensor(self.features),
            block_inputs=keras.ops.convert_to_tensor(self.inputs),
            inputs=keras.ops.convert_to_tensor(self.inputs),
        )
        return {
            k: float(keras.ops.convert_to_numpy(v)) for k, v in terms.items()
        }

    def test_terms_and_total_match_numpy(self):
        loss = InformationPreservation(alpha=2.0, weight=0.5, num_neighbors=5)
        terms = self._terms(loss)
        information = _mutual_information(
            _gaussian_gram(self.inputs, 5),
            _gaussian_gram(self.features, 5),
            2.0,
        )
        cross_entropy = _softmax_cross_entropy(
            np.eye(3)[self.labels], self.logits.astype("float64")
        ).mean()
        self.assertAllClose(terms["preservation"], information, rtol=2e-3)
        self.assertAllClose(terms["cross_entropy"], cross_entropy, rtol=1e-4)
        self.assertGreater(terms["preservation"], 0.0)
        # The total rewards the information: CE - weight * I(X; T).
        self.assertEqual(
            loss.term_weights, {"cross_entropy": 1.0, "preservation": -0.5}
        )
        total = sum(loss.term_weights[k] * v for k, v in terms.items())
        self.assertAllClose(total, cross_entropy - 0.5 * information, rtol=2e-3)
        # DIB with the same settings penalises the same number.
        dib_terms = self._terms(DIB(alpha=2.0, beta=0.5, num_neighbors=5))
        self.assertAllClose(
            dib_terms["compression"], terms["preservation"], rtol=1e-5
        )
        # Without a weight, the objective is the cross-entropy alone.
        plain = InformationPreservation(weight=0.0)
        self.assertEqual(plain.term_weights, {"cross_entropy": 1.0})

    def test_bad_arguments(self):
        for kwargs, name in (
            ({"weight": -0.1}, "weight"),
            ({"weight": True}, "weight"),
            ({"target": "labels"}, "target"),
            ({"alpha": 1}, "alpha"),
            ({"num_neighbors": 0}, "num_neighbors"),
        ):
            with self.assertRaisesRegex(ValueError, name, msg=str(kwargs)):
                InformationPreservation(**kwargs)

    def test_serialization(self):
        loss = InformationPreservation(
            alpha=2.0, weight=0.05, target="block_input", num_neighbors=4
        )
        config = loss.get_config()
        self.assertEqual(config["weight"], 0.05)
        self.assertEqual(config["target"], "block_input")
        self.assertNotIn("beta", config)
        revived = self.run_serialization_test(loss)
        self.assertEqual(
            (revived.weight, revived.target), (0.05, "block_input")
        )
        self.assertEqual(revived.num_neighbors, 4)
        self.assertIs(
            keras.saving.get_registered_object(
                "keras_dib>InformationPreservation"
            ),
            InformationPreservation,
        )


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_regularization_is_scale_invariant_with_knn_width(alpha):
    # With the knn rule the Gram matrix of 2T equals that of T, so
    # I(X; 2X) = I(X; X) = 2 H(X) - H(X, X), as the NumPy reference says.
    rng = np.random.default_rng(3)
    x_numpy = rng.normal(size=(12, 5)).astype("float32")
    x = keras.ops.convert_to_tensor(x_numpy)
    loss = DIB(alpha=alpha)
    value = keras.ops.convert_to_numpy(loss.regularization(x, x, x * 2.0, None))
    same = keras.ops.convert_to_numpy(loss.regularization(x, x, x, None))
    gram = _gaussian_gram(x_numpy, 10)
    expected = _mutual_information(gram, gram, alpha)
    np.testing.assert_allclose(value, expected, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(value, same, atol=1e-4, rtol=1e-4)

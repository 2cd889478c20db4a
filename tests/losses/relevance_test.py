"""Tests of keras_dib.losses.relevance: InformationBottleneck, RelevanceDIB
and SimilarityMatching."""

import keras
import numpy as np
from keras import ops

import keras_dib
from keras_dib.losses import InformationBottleneck
from keras_dib.losses import InformationPreservation
from keras_dib.losses import RelevanceDIB
from keras_dib.losses import SimilarityMatching
from keras_dib.losses import relevance
from keras_dib.testing import TestCase
from tests.losses.dib_test import _gaussian_gram
from tests.losses.dib_test import _mutual_information
from tests.losses.dib_test import _softmax_cross_entropy
from tests.models.greedy_test import _data
from tests.models.greedy_test import _gradients
from tests.models.greedy_test import _is_zero
from tests.models.greedy_test import _loss_gradients
from tests.models.greedy_test import _model
from tests.models.greedy_test import _snapshot

NUM_CLASSES = 3
# Fixed kernel widths for the fits (TensorFlow may trace `fit` with a
# dynamic batch size), at the scale of the tiny model's features and
# inputs, so that the Gram matrices are not the identity.
FIT_WIDTHS = {"sigma": 10.0, "target_sigma": 16.0}


# === NumPy references (float64) ===


def _fixed_gram(x, sigma):
    x = x.reshape(len(x), -1).astype(np.float64)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-squared / (2.0 * sigma**2))


def _label_gram(one_hot, kernel="class_equality", label_sigma=1.0):
    one_hot = one_hot.astype(np.float64)
    if kernel == "class_equality":
        return one_hot @ one_hot.T
    return _fixed_gram(one_hot, label_sigma)


def _similarity_matrix(x, feature_map_std=False):
    x = x.astype(np.float64)
    if feature_map_std and x.ndim == 4 and x.shape[-1] > 3 and x.shape[1] > 1:
        x = x.reshape(len(x), -1, x.shape[-1]).std(axis=1, ddof=1)
    x = x.reshape(len(x), -1)
    centred = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred**2).sum(axis=1, keepdims=True))
    normalized = centred / (1e-8 + norm)
    return np.clip(normalized @ normalized.T, -1.0, 1.0)


def _numpy(value):
    return np.array(ops.convert_to_numpy(value))


class _Batch:
    def __init__(self, seed=1, n=24):
        rng = np.random.default_rng(seed)
        self.inputs = rng.normal(size=(n, 4, 4, 3)).astype("float32")
        self.block_inputs = rng.normal(size=(n, 4, 4, 2)).astype("float32")
        self.labels = rng.integers(0, NUM_CLASSES, size=(n,)).astype("int32")
        self.one_hot = np.eye(NUM_CLASSES, dtype="float32")[self.labels]
        # Features that carry the labels, partly.
        self.features = (
            self.block_inputs.reshape(n, -1)[:, :6]
            + 1.5 * self.one_hot @ rng.normal(size=(NUM_CLASSES, 6))
            + 0.3 * rng.normal(size=(n, 6))
        ).astype("float32")
        self.logits = rng.normal(size=(n, NUM_CLASSES)).astype("float32")
        self.cross_entropy = _softmax_cross_entropy(
            self.one_hot, self.logits
        ).mean()

    def terms(self, objective, labels=None, features=None):
        labels = self.labels if labels is None else labels
        features = self.features if features is None else features
        terms = objective.compute_terms(
            ops.convert_to_tensor(labels),
            ops.convert_to_tensor(self.logits),
            features=ops.convert_to_tensor(features),
            block_inputs=ops.convert_to_tensor(self.block_inputs),
            inputs=ops.convert_to_tensor(self.inputs),
        )
        return {name: _numpy(value) for name, value in terms.items()}


# === Terms against NumPy ===


class InformationBottleneckTest(TestCase):
    def setUp(self):
        super().setUp()
        self.batch = _Batch()

    def test_terms_match_numpy(self):
        batch = self.batch
        gram_t = _gaussian_gram(batch.features, 10)
        gram_x = _gaussian_gram(batch.inputs, 10)
        for alpha in (1.01, 2.0):
            for kernel in ("class_equality", "gaussian"):
                objective = InformationBottleneck(
                    alpha=alpha, beta=0.1, label_kernel=kernel, label_sigma=0.8
                )
                gram_y = _label_gram(batch.one_hot, kernel, 0.8)
                relevance_value = _mutual_information(gram_y, gram_t, alpha)
                compression = _mutual_information(gram_x, gram_t, alpha)
                # Integer, (n, 1) integer and one-hot labels alike.
                for labels in (
                    batch.labels,
                    batch.labels[:, None],
                    batch.one_hot,
                ):
                    terms = batch.terms(objective, labels)
                    msg = f"alpha={alpha}, {kernel}, {labels.shape}"
                    self.assertEqual(
                        list(terms),
                        ["cross_entropy", "relevance", "compression"],
                    )
                    self.assertAllClose(
                        terms["relevance"],
                        relevance_value,
                        atol=2e-3,
                        rtol=2e-3,
                        msg=msg,
                    )
                    self.assertAllClose(
                        terms["compression"],
                        compression,
                        atol=2e-3,
                        rtol=2e-3,
                        msg=msg,
                    )
                    self.assertAllClose(
                        terms["cross_entropy"],
                        batch.cross_entropy,
                        atol=1e-5,
                        rtol=1e-5,
                    )
                    for value in terms.values():
                        self.assertEqual(value.dtype, np.float32)
        # The features carry the labels: far above zero.
        self.assertGreater(relevance_value, 0.3)

    def test_class_equality_relevance_of_the_labels_is_their_entropy(self):
        # For T = Y (one-hot, fixed width), K_T is c + (1 - c) K_Y and
        # K_T o K_Y = K_Y, so I(T; Y) = H(T) and, for a small width,
        # H(T) = H(Y) = the label entropy of the class proportions.
        batch = self.batch
        objective = InformationBottleneck(alpha=2.0, beta=0.0, sigma=0.1)
        terms = batch.terms(objective, features=batch.one_hot)
        proportions = np.bincount(batch.labels) / len(batch.labels)
        expected = -np.log2(np.sum(proportions**2))
        self.assertAllClose(terms["relevance"], expected, atol=1e-4)
        self.assertEqual(list(terms), ["cross_entropy", "relevance"])

    def test_term_weights(self):
        self.assertEqual(
            InformationBottleneck().term_weights,
            {"cross_entropy": 1.0, "relevance": -1.0, "compression": 0.01},
        )
        self.assertEqual(
            InformationBottleneck(beta=0, gamma=2.5).term_weights,
            {"cross_entropy": 1.0, "relevance": -2.5},
        )
        self.assertTrue(InformationBottleneck.stop_head_gradient)

    def test_defaults(self):
        objective = InformationBottleneck()
        self.assertEqual(
            (objective.alpha, objective.beta, objective.gamma),
            (1.01, 0.01, 1.0),
        )
        self.assertEqual(objective.label_kernel, "class_equality")
        self.assertEqual(objective.sigma, "knn")

    def test_missing_block_tensors(self):
        objective = InformationBottleneck(sigma=1.0)
        batch = self.batch
        with self.assertRaisesRegex(ValueError, "inputs=None"):
            objective.compute_terms(
                batch.labels, batch.logits, features=batch.features
            )
        with self.assertRaisesRegex(ValueError, "features=None"):
            objective.compute_terms(batch.labels, batch.logits)


class RelevanceDIBTest(TestCase):
    def setUp(self):
        super().setUp()
        self.batch = _Batch(seed=2)

    def test_terms_match_numpy(self):
        batch = self.batch
        gram_t = _fixed_gram(batch.features, 2.0)
        gram_c = _gaussian_gram(batch.block_inputs, 5)
        for alpha in (1.01, 2.0):
            objective = RelevanceDIB(
                alpha=alpha,
                beta=0.05,
                gamma=0.5,
                compression="block_input",
                sigma=2.0,
                num_neighbors=5,
            )
            terms = batch.terms(objective, batch.one_hot)
            self.assertEqual(
                list(terms), ["cross_entropy", "compression", "relevance"]
            )
            self.assertAllClose(
                terms["relevance"],
                _mutual_information(_label_gram(batch.one_hot), gram_t, alpha),
                atol=2e-3,
                rtol=2e-3,
            )
            self.assertAllClose(
                terms["compression"],
                _mutual_information(gram_c, gram_t, alpha),
                atol=2e-3,
                rtol=2e-3,
            )
            self.assertAllClose(
                terms["cross_entropy"], batch.cross_entropy, atol=1e-5
            )

    def test_compression_matches_dib(self):
        batch = self.batch
        objective = RelevanceDIB(alpha=1.01, beta=0.01, gamma=0.1)
        dib = keras_dib.losses.DIB(alpha=1.01, beta=0.01)
        terms = batch.terms(objective)
        expected = dib.compute_terms(
            ops.convert_to_tensor(batch.labels),
            ops.convert_to_tensor(batch.logits),
            features=ops.convert_to_tensor(batch.features),
            block_inputs=ops.convert_to_tensor(batch.block_inputs),
            inputs=ops.convert_to_tensor(batch.inputs),
        )
        for name in ("cross_entropy", "compression"):
            self.assertAllClose(
                terms[name], expected[name], atol=1e-5, rtol=1e-5
            )

    def test_terms_omitted_with_zero_weights(self):
        batch = self.batch
        self.assertEqual(
            list(batch.terms(RelevanceDIB(beta=0.0))),
            ["cross_entropy", "relevance"],
        )
        self.assertEqual(
            list(batch.terms(RelevanceDIB(gamma=0.0))),
            ["cross_entropy", "compression"],
        )
        self.assertEqual(
            list(batch.terms(RelevanceDIB(beta=0.0, gamma=0.0))),
            ["cross_entropy"],
        )

    def test_term_weights(self):
        objective = RelevanceDIB()
        self.assertEqual(
            (objective.alpha, objective.beta, objective.gamma),
            (1.01, 0.01, 0.1),
        )
        self.assertEqual(
            objective.term_weights,
            {"cross_entropy": 1.0, "compression": 0.01, "relevance": -0.1},
        )
        self.assertEqual(
            RelevanceDIB(beta=0.0, gamma=0.0).term_weights,
            {"cross_entropy": 1.0},
        )
        self.assertFalse(RelevanceDIB.stop_head_gradient)


class SimilarityMatchingTest(TestCase):
    def setUp(self):
        super().setUp()
        self.batch = _Batch(seed=3)

    def test_terms_match_numpy(self):
        batch = self.batch
        objective = SimilarityMatching(beta=0.9)
        expected = np.mean(
            (
                _similarity_matrix(batch.features)
                - _similarity_matrix(batch.one_hot)
            )
            ** 2
        )
        for labels in (batch.labels, batch.labels[:, None], batch.one_hot):
            terms = batch.terms(objective, labels)
            self.assertEqual(list(terms), ["cross_entropy", "similarity"])
            self.assertAllClose(
                terms["similarity"], expected, atol=1e-5, rtol=1e-5
            )
            self.assertAllClose(
                terms["cross_entropy"], batch.cross_entropy, atol=1e-5
            )

    def test_label_similarity(self):
        # Centred one-hot rows: 1 within a class, -1 / (C - 1) across.
        labels = np.array([0, 1, 2, 0])
        value = relevance.similarity_matrix(np.eye(3, dtype="float32")[labels])
        same = labels[:, None] == labels[None, :]
        self.assertAllClose(
            value, np.where(same, 1.0, -0.5), atol=1e-6, rtol=1e-6
        )

    def test_feature_maps(self):
        rng = np.random.default_rng(4)
        maps = rng.normal(size=(10, 3, 3, 5)).astype("float32")
        labels = rng.integers(0, NUM_CLASSES, size=(10,))
        one_hot = np.eye(NUM_CLASSES)[labels]
        logits = rng.normal(size=(10, NUM_CLASSES)).astype("float32")
        for feature_map_std in (False, True):
            objective = SimilarityMatching(feature_map_std=feature_map_std)
            expected = np.mean(
                (
                    _similarity_matrix(maps, feature_map_std)
                    - _similarity_matrix(one_hot)
                )
                ** 2
            )
            value = objective.similarity(
                ops.convert_to_tensor(labels),
                ops.convert_to_tensor(logits),
                ops.convert_to_tensor(maps),
            )
            self.assertAllClose(value, expected, atol=1e-5, rtol=1e-5)
        # Three channels or fewer: flattened, as in the authors' code.
        few = maps[..., :3]
        self.assertAllClose(
            relevance.similarity_matrix(few, feature_map_std=True),
            _similarity_matrix(few),
            atol=1e-5,
        )

    def test_term_weights(self):
        self.assertEqual(SimilarityMatching().beta, 0.99)
        weights = SimilarityMatching(beta=0.75).term_weights
        self.assertEqual(weights, {"cross_entropy": 0.25, "similarity": 0.75})
        self.assertEqual(
            SimilarityMatching(beta=0).term_weights, {"cross_entropy": 1.0}
        )
        self.assertEqual(
            list(self.batch.terms(SimilarityMatching(beta=0))),
            ["cross_entropy"],
        )
        self.assertFalse(SimilarityMatching.stop_head_gradient)


# === Gradients ===


class GradientTest(TestCase):
    def _total(self, objective, batch, features):
        terms = objective.compute_terms(
            ops.convert_to_tensor(batch.labels),
            ops.convert_to_tensor(batch.logits),
            features=features,
            block_inputs=ops.convert_to_tensor(batch.block_inputs),
            inputs=ops.convert_to_tensor(batch.inputs),
        )
        weights = objective.term_weights
        return sum(weights[name] * value for name, value in terms.items())

    def test_gradients_are_finite(self):
        batch = _Batch(seed=5)
        features = batch.features.copy()
        # A sample of zeros and two identical samples (a dead ReLU sample,
        # coinciding features).
        features[0] = 0.0
        features[2] = features[1]
        maps = np.maximum(
            np.random.default_rng(6).normal(size=(24, 3, 3, 5)), 0.0
        ).astype("float32")
        maps[:, :, :, 0] = 0.0  # a dead channel
        maps[3] = 0.0
        cases = [
            (InformationBottleneck(), features),
            (InformationBottleneck(alpha=2.0, label_kernel="gaussian"), maps),
            (RelevanceDIB(gamma=0.5), features),
            (RelevanceDIB(alpha=0.5, compression="block_input"), maps),
            (SimilarityMatching(), features),
            (SimilarityMatching(feature_map_std=True), maps),
        ]
        for objective, value in cases:
            (gradients,) = _gradients(
                lambda values, objective=objective: [
                    self._total(objective, batch, values[0])
                ],
                [ops.convert_to_tensor(value)],
            )
            msg = objective.get_config()
            self.assertAllFinite(gradients[0], msg=str(msg))
            self.assertFalse(_is_zero(gradients[0]), msg)

    def test_information_bottleneck_cross_entropy_leaves_the_block(self):
        # In a training stage the head reads the block's output under
        # stop_gradient: the cross-entropy reaches the head alone, the
        # relevance (and compression) terms the block alone.
        model = _model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=InformationBottleneck(alpha=1.01, beta=0.01),
        )
        x, y = _data(16)
        model.enter_stage("sequential", block=0)
        objective = model.loss
        labels = ops.convert_to_tensor(y)
        inputs = ops.convert_to_tensor(x)

        def term(name):
            def loss(y_pred, trainable_values, non_trainable_values):
                local = y_pred["local"][0]
                return objective.compute_terms(
                    labels,
                    local["logits"],
                    features=local["features"],
                    block_inputs=local["block_inputs"],
                    inputs=inputs,
                )[name]

            return loss

        block = model.blocks[0].trainable_variables
        head = model.training_heads[0].trainable_variables
        cross_entropy, relevance_term, compression = _loss_gradients(
            model,
            x,
            [term("cross_entropy"), term("relevance"), term("compression")],
            block + head,
        )
        for variable in block:
            key = id(variable)
            self.assertTrue(_is_zero(cross_entropy[key]), variable.path)
            self.assertFalse(_is_zero(relevance_term[key]), variable.path)
            self.assertAllFinite(relevance_term[key])
            self.assertAllFinite(compression[key])
        for variable in head:
            key = id(variable)
            self.assertFalse(_is_zero(cross_entropy[key]), variable.path)
            self.assertTrue(_is_zero(relevance_term[key]), variable.path)
            self.assertTrue(_is_zero(compression[key]), variable.path)
        model.exit_stage()


# === Fits ===


class FitTest(TestCase):
    def _fit(self, objective, epochs=(1, 0, 1)):
        model = _model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=objective,
            metrics=["accuracy"],
        )
        x, y = _data()
        history = model.fit(x, y, batch_size=16, epochs=list(epochs), verbose=0)
        return model, history.history

    def _check_history(self, objective, history, num_epochs=2):
        weights = objective.term_weights
        for name in weights:
            self.assertIn(name, history)
            self.assertEqual(len(history[name]), num_epochs)
            self.assertAllFinite(history[name], msg=name)
        self.assertAllFinite(history["loss"])
        self.assertAllClose(
            history["loss"],
            sum(
                weight * np.array(history[name])
                for name, weight in weights.items()
            ),
            atol=1e-4,
            rtol=1e-4,
        )

    def test_fit_information_bottleneck(self):
        objective = InformationBottleneck(beta=0.01, **FIT_WIDTHS)
        model = _model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=objective)
        x, y = _data()
        layers = [model.blocks[0], model.training_heads[0]]
        before = _snapshot(layers)
        history = model.fit(
            x, y, batch_size=16, epochs=[1, 0, 1], verbose=0
        ).history
        after = _snapshot(layers)
        self._check_history(objective, history)
        self.assertGreater(min(history["relevance"]), 0.0)
        # The relevance trains the block, the cross-entropy the head.
        for old_new in ((before[0], after[0]), (before[1], after[1])):
            self.assertFalse(
                all(np.array_equal(a, b) for a, b in zip(*old_new))
            )

    def test_fit_relevance_dib(self):
        objective = RelevanceDIB(beta=0.01, gamma=0.1, **FIT_WIDTHS)
        _, history = self._fit(objective)
        self._check_history(objective, history)
        self.assertIn("accuracy", history)

    def test_fit_relevance_dib_gaussian_labels(self):
        objective = RelevanceDIB(
            alpha=2.0,
            beta=0.0,
            gamma=0.5,
            label_kernel="gaussian",
            label_sigma=0.5,
            **FIT_WIDTHS,
        )
        _, history = self._fit(objective, epochs=(1, 0, 0))
        self._check_history(objective, history, num_epochs=1)
        self.assertNotIn("compression", history)

    def test_fit_information_preservation(self):
        objective = InformationPreservation(weight=0.1, **FIT_WIDTHS)
        _, history = self._fit(objective)
        self._check_history(objective, history)
        self.assertGreater(min(history["preservation"]), 0.0)

    def test_fit_similarity_matching(self):
        for objective in (
            SimilarityMatching(),
            SimilarityMatching(beta=0.5, feature_map_std=True),
        ):
            _, history = self._fit(objective)
            self._check_history(objective, history)


# === Arguments and serialization ===


class ArgumentsTest(TestCase):
    def test_bad_arguments(self):
        for cls in (InformationBottleneck, RelevanceDIB):
            for kwargs, message in (
                ({"alpha": 1}, "alpha"),
                ({"alpha": 0}, "alpha"),
                ({"beta": -1}, "beta"),
                (
                    {"gamma": -1},
                    r"`gamma` should be a finite number >= 0\. "
                    r"Received: gamma=-1",
                ),
                ({"gamma": float("nan")}, "gamma"),
                ({"gamma": True}, "gamma"),
                ({"compression": "entropy"}, "compression"),
                ({"sigma": 0}, "sigma"),
                ({"sigma": "foo"}, "sigma"),
                ({"target_sigma": -1.0}, "sigma"),
                ({"label_kernel": "linear"}, "label_kernel"),
                ({"label_sigma": 0}, "label_sigma=0"),
                ({"label_sigma": "knn"}, "label_sigma"),
                ({"num_neighbors": 0}, "num_neighbors"),
                ({"label_smoothing": 1}, "label_smoothing"),
            ):
                with self.assertRaisesRegex(
                    ValueError, message, msg=f"{cls.__name__}{kwargs}"
                ):
                    cls(**kwargs)
        with self.assertRaisesRegex(ValueError, "no label signal"):
            InformationBottleneck(gamma=0)
        for kwargs, message in (
            ({"beta": -0.5}, "beta"),
            ({"beta": 1.0}, r"\[0, 1\)"),
            ({"beta": 2}, "beta=2"),
            ({"feature_map_std": 1}, "feature_map_std"),
            ({"label_smoothing": -0.1}, "label_smoothing"),
        ):
            with self.assertRaisesRegex(ValueError, message, msg=str(kwargs)):
                SimilarityMatching(**kwargs)

    def test_numpy_scalars(self):
        objective = RelevanceDIB(
            alpha=np.float32(2.0), beta=np.float64(0.5), gamma=np.float32(0.25)
        )
        self.assertEqual(objective.term_weights["relevance"], -0.25)
        self.assertIsInstance(objective.gamma, float)

    def test_serialization(self):
        for objective in (
            InformationBottleneck(
                alpha=2.0,
                beta=0.0,
                gamma=2.0,
                compression="block_input",
                sigma=1.5,
                target_sigma="silverman",
                label_kernel="gaussian",
                label_sigma=0.5,
                num_neighbors=5,
                label_smoothing=0.1,
            ),
            RelevanceDIB(gamma=0.3, label_kernel="gaussian", sigma=2.0),
            SimilarityMatching(beta=0.5, feature_map_std=True),
        ):
            revived = self.run_serialization_test(objective)
            self.assertEqual(revived.term_weights, objective.term_weights)
            self.assertEqual(
                revived.stop_head_gradient, objective.stop_head_gradient
            )

    def test_get_by_registered_name(self):
        for cls in (InformationBottleneck, RelevanceDIB, SimilarityMatching):
            name = f"keras_dib>{cls.__name__}"
            self.assertIs(keras.saving.get_registered_object(name), cls)
            self.assertIsInstance(
                keras.losses.get({"class_name": name, "config": {}}), cls
            )
            self.assertIs(getattr(keras_dib.losses, cls.__name__), cls)

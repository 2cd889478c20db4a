"""Tests of the local-objective protocol (keras_dib.losses.local_objective)."""

import keras
import numpy as np
from keras import ops

import keras_dib
from keras_dib.losses import local_objective
from keras_dib.testing import TestCase
from tests.models.greedy_test import _data
from tests.models.greedy_test import _model
from tests.models.greedy_test import _snapshot


@keras.saving.register_keras_serializable(package="keras_dib_tests")
class FeatureNorm(keras_dib.losses.LocalObjective):
    """An objective with a term of its own, defined outside the library."""

    def __init__(self, weight=0.5, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def compute_terms(self, y_true, logits, **block):
        terms = super().compute_terms(y_true, logits, **block)
        features = ops.cast(block["features"], "float32")
        terms["feature_norm"] = ops.mean(ops.square(features))
        return terms

    @property
    def term_weights(self):
        return {**super().term_weights, "feature_norm": self.weight}

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="keras_dib_tests")
class HeadOnly(keras_dib.losses.LocalObjective):
    stop_head_gradient = True


def _compile(model, loss):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)


class LocalObjectiveTest(TestCase):
    def test_terms_and_weights(self):
        objective = keras_dib.DIB(alpha=2.0, beta=0.25, sigma=1.0)
        rng = np.random.default_rng(0)
        features = rng.normal(size=(8, 4)).astype("float32")
        inputs = rng.normal(size=(8, 6)).astype("float32")
        logits = rng.normal(size=(8, 3)).astype("float32")
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
        terms = objective.compute_terms(
            y, logits, features=features, block_inputs=inputs, inputs=inputs
        )
        self.assertEqual(set(terms), {"cross_entropy", "compression"})
        self.assertEqual(
            objective.term_weights, {"cross_entropy": 1.0, "compression": 0.25}
        )
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        expected = -log_softmax[np.arange(8), y].mean()
        self.assertAllClose(terms["cross_entropy"], expected, atol=1e-5)
        self.assertAllClose(
            terms["compression"],
            objective.regularization(inputs, inputs, features, y),
        )
        cross_entropy_only = keras_dib.LocalObjective()
        self.assertEqual(
            set(cross_entropy_only.compute_terms(y, logits)), {"cross_entropy"}
        )

    def test_an_objective_with_a_new_term_in_a_test_file(self):
        model = _model()
        _compile(model, FeatureNorm(weight=0.5))
        x, y = _data()
        history = model.fit(x, y, batch_size=16, epochs=[1, 0, 1], verbose=0)
        self.assertIn("feature_norm", history.history)
        self.assertIn("cross_entropy", history.history)
        self.assertEqual(len(history.history["feature_norm"]), 2)
        self.assertAllFinite(history.history["feature_norm"])
        # The loss is the weighted sum of the terms (up to the epoch means
        # of the per-batch values, which are linear).
        self.assertAllClose(
            history.history["loss"],
            np.array(history.history["cross_entropy"])
            + 0.5 * np.array(history.history["feature_norm"]),
            rtol=1e-4,
        )

    def test_compute_loss_sums_weighted_terms(self):
        model = _model()
        _compile(model, FeatureNorm(weight=2.0))
        x, y = _data(16)
        model.enter_stage("sequential", block=1)
        outputs = model(x, training=False)
        total = model.compute_loss(x, y, outputs, training=False)
        local = outputs["local"][0]
        features = ops.convert_to_numpy(local["features"])
        logits = ops.convert_to_numpy(local["logits"])
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        expected = -log_softmax[np.arange(16), y].mean() + 2.0 * np.mean(
            np.square(features)
        )
        self.assertAllClose(total, expected, atol=1e-5, rtol=1e-5)
        model.exit_stage()

    def test_stop_head_gradient_trains_the_head_only(self):
        model = _model()
        _compile(model, HeadOnly())
        x, y = _data()
        before = _snapshot([model.blocks[0], model.training_heads[0]])
        model.fit(x, y, batch_size=16, epochs=[1, 0, 0], verbose=0)
        after = _snapshot([model.blocks[0], model.training_heads[0]])
        block = model.blocks[0]
        for variable, old, new in zip(block.weights, before[0], after[0]):
            if variable.trainable:
                self.assertAllClose(new, old, atol=0, rtol=0)
        self.assertFalse(
            all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))
        )

    def test_keras_loss_on_logits_is_one_term(self):
        model = _model()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        _compile(model, loss)
        x, y = _data()
        history = model.fit(x, y, batch_size=16, epochs=[1, 0, 0], verbose=0)
        self.assertIn("cross_entropy", history.history)
        self.assertAllClose(
            history.history["loss"], history.history["cross_entropy"]
        )

    def test_keras_loss_on_probabilities_is_refused_before_training(self):
        model = _model()
        _compile(model, keras.losses.SparseCategoricalCrossentropy())
        before = _snapshot(model.blocks)
        x, y = _data()
        with self.assertRaisesRegex(ValueError, "from_logits=False"):
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        after = _snapshot(model.blocks)
        for old, new in zip(before, after):
            for a, b in zip(old, new):
                self.assertAllClose(a, b, atol=0, rtol=0)

    def test_get_bad_loss(self):
        with self.assertRaisesRegex(ValueError, "Received: loss='mse'"):
            local_objective.get("mse")

    def test_serialization(self):
        self.run_serialization_test(FeatureNorm(weight=0.25, beta=0.0))
        wrapped = local_objective.KerasLossObjective(
            keras.losses.CategoricalCrossentropy(from_logits=True)
        )
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(wrapped)
        )
        self.assertEqual(restored.get_config(), wrapped.get_config())

import keras
import numpy as np
import pytest
from keras import ops

from keras_dib.ops import kernels
from keras_dib.testing import TestCase


def numpy_squared_distances(x, y):
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def gradient_of(fn, x):
    """Gradient of sum(fn(x)) w.r.t. x, with the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda v: ops.sum(fn(v)))(ops.convert_to_tensor(x))
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(v)
            value = ops.sum(fn(v))
        return tape.gradient(value, v)
    import torch

    v = torch.tensor(x, requires_grad=True)
    ops.sum(fn(v)).backward()
    return v.grad


class PairwiseSquaredDistancesTest(TestCase):
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(7, 2, 3)).astype("float32")
        y = rng.normal(size=(5, 6)).astype("float32")
        self.assertAllClose(
            kernels.pairwise_squared_distances(x, y),
            numpy_squared_distances(x, y),
            atol=1e-4,
            rtol=1e-4,
        )
        same = kernels.pairwise_squared_distances(x)
        self.assertAllClose(
            same, numpy_squared_distances(x, x), atol=1e-4, rtol=1e-4
        )
        self.assertAllClose(np.diag(ops.convert_to_numpy(same)), np.zeros(7))

    def test_non_negative_for_duplicates(self):
        x = np.ones((4, 3), dtype="float32") * 1e3
        distances = ops.convert_to_numpy(kernels.pairwise_squared_distances(x))
        self.assertTrue(np.all(distances >= 0))

    def test_gradient_finite_at_zero_distance(self):
        x = np.ones((4, 3), dtype="float32")
        gradient = gradient_of(lambda v: kernels.gaussian_gram(v, sigma=1.0), x)
        self.assertAllFinite(gradient)

    def test_feature_mismatch(self):
        with pytest.raises(ValueError, match="same number of features"):
            kernels.pairwise_squared_distances(np.ones((2, 3)), np.ones((2, 4)))


class KernelWidthTest(TestCase):
    def test_knn_matches_numpy(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(20, 5)).astype("float32")
        d = np.sqrt(numpy_squared_distances(x, x))
        np.fill_diagonal(d, np.inf)
        expected = np.sort(d, axis=1)[:, :3].mean()
        self.assertAllClose(
            kernels.kernel_width(x, "knn", num_neighbors=3),
            expected,
            atol=1e-4,
            rtol=1e-4,
        )

    def test_knn_small_batch_uses_all_others(self):
        x = np.array([[0.0], [1.0], [3.0]], dtype="float32")
        # Each sample's two neighbours: (1 + 3) / 2, (1 + 2) / 2, (3 + 2) / 2
        self.assertAllClose(
            kernels.kernel_width(x, "knn", num_neighbors=10), 2.0, atol=1e-5
        )

    @pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="only TensorFlow traces a dynamic batch size",
    )
    def test_knn_dynamic_batch_size(self):
        import tensorflow as tf

        width = tf.function(
            lambda x: kernels.kernel_width(x, "knn", num_neighbors=10),
            input_signature=[tf.TensorSpec((None, 5), "float32")],
        )
        rng = np.random.default_rng(3)
        for n in (4, 11, 30):
            x = rng.normal(size=(n, 5)).astype("float32")
            d = np.sqrt(numpy_squared_distances(x, x))
            np.fill_diagonal(d, np.inf)
            expected = np.sort(d, axis=1)[:, : min(10, n - 1)].mean()
            self.assertAllClose(width(x), expected, atol=1e-4, rtol=1e-4)

    def test_silverman_matches_numpy(self):
        rng = np.random.default_rng(2)
        x = rng.normal(size=(50, 4)).astype("float32")
        n, d = x.shape
        expected = (
            np.sqrt(x.var(axis=0).sum())
            * (4 / (d + 2)) ** (1 / (d + 4))
            * n ** (-1 / (d + 4))
        )
        self.assertAllClose(
            kernels.kernel_width(x, "silverman"), expected, rtol=1e-4
        )

    def test_constant_batch_falls_back_to_one(self):
        x = np.zeros((8, 3), dtype="float32")
        self.assertAllClose(kernels.kernel_width(x), 1.0)

    def test_bad_arguments(self):
        x = np.ones((4, 2))
        with pytest.raises(ValueError, match="`rule` should be one of"):
            kernels.kernel_width(x, rule="median")
        with pytest.raises(ValueError, match="`num_neighbors` should be"):
            kernels.kernel_width(x, num_neighbors=0)


class GaussianGramTest(TestCase):
    def test_matches_numpy(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(9, 2, 2)).astype("float32")
        expected = np.exp(-numpy_squared_distances(x, x) / (2 * 1.5**2))
        self.assertAllClose(
            kernels.gaussian_gram(x, sigma=1.5), expected, atol=1e-5
        )

    def test_rule_widths(self):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(16, 3)).astype("float32")
        sigma = ops.convert_to_numpy(kernels.kernel_width(x, "knn"))
        self.assertAllClose(
            kernels.gaussian_gram(x, sigma="knn"),
            kernels.gaussian_gram(x, sigma=float(sigma)),
            atol=1e-5,
        )

    def test_float32_under_mixed_inputs(self):
        x = np.ones((4, 3), dtype="float16")
        gram = kernels.gaussian_gram(x, sigma=1.0)
        self.assertEqual(keras.backend.standardize_dtype(gram.dtype), "float32")

    def test_bad_sigma(self):
        for sigma in (0, -1.0, float("nan"), "median", True, None):
            with pytest.raises(ValueError, match="`sigma` should be"):
                kernels.gaussian_gram(np.ones((3, 2)), sigma=sigma)


class LabelGramTest(TestCase):
    def test_integer_and_one_hot_agree(self):
        labels = np.array([0, 2, 1, 2])
        expected = (labels[:, None] == labels[None, :]).astype("float32")
        self.assertAllClose(kernels.label_gram(labels), expected)
        self.assertAllClose(kernels.label_gram(labels, num_classes=3), expected)
        self.assertAllClose(kernels.label_gram(labels[:, None]), expected)
        self.assertAllClose(kernels.label_gram(np.eye(3)[labels]), expected)

    def test_bad_rank(self):
        with pytest.raises(ValueError, match="`labels` should be"):
            kernels.label_gram(np.zeros((2, 2, 2)))

import numpy as np
import pytest
from keras import ops

from keras_dib.ops import kernels
from keras_dib.ops.hsic import center_gram
from keras_dib.ops.hsic import hsic
from keras_dib.ops.hsic import normalized_hsic
from keras_dib.testing import TestCase
from tests.ops.kernels_test import gradient_of


def numpy_hsic(gram_x, gram_y):
    """Reference: (n - 1)^-2 tr(K_X H K_Y H) with an explicit H, float64."""
    gram_x = np.asarray(gram_x, np.float64)
    gram_y = np.asarray(gram_y, np.float64)
    n = gram_x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(gram_x @ h @ gram_y @ h) / (n - 1) ** 2


def numpy_normalized_hsic(gram_x, gram_y):
    return numpy_hsic(gram_x, gram_y) / np.sqrt(
        numpy_hsic(gram_x, gram_x) * numpy_hsic(gram_y, gram_y)
    )


def numpy_linear_cka(x, y):
    """Linear CKA from features (Kornblith et al. 2019, Eq. 4)."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (
        np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    )


def random_gram(n, seed, rank=None):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, rank or n))
    return (features @ features.T / (rank or n)).astype("float32")


class CenterGramTest(TestCase):
    def test_matches_explicit_centering_matrix(self):
        rng = np.random.default_rng(0)
        # Not symmetric on purpose: H K H is defined for any square matrix.
        gram = rng.normal(size=(7, 7)).astype("float32")
        h = np.eye(7) - np.ones((7, 7)) / 7
        self.assertAllClose(
            center_gram(gram), h @ gram @ h, atol=1e-5, rtol=1e-5
        )

    def test_rows_and_columns_sum_to_zero(self):
        centered = ops.convert_to_numpy(center_gram(random_gram(9, 1)))
        self.assertAllClose(np.sum(centered, axis=0), np.zeros(9), atol=1e-5)
        self.assertAllClose(np.sum(centered, axis=1), np.zeros(9), atol=1e-5)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="square matrix"):
            center_gram(np.ones((3, 4), "float32"))


class HSICTest(TestCase):
    def test_matches_numpy_random_grams(self):
        for seed in range(3):
            gram_x = random_gram(12, seed)
            gram_y = random_gram(12, seed + 10, rank=3)
            self.assertAllClose(
                hsic(gram_x, gram_y),
                numpy_hsic(gram_x, gram_y),
                atol=1e-6,
                rtol=1e-4,
            )

    def test_matches_numpy_gaussian_and_label_grams(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(32, 2, 2, 3)).astype("float32")
        labels = np.arange(32) % 4
        gram_x = kernels.gaussian_gram(x, sigma=2.0)
        gram_y = kernels.label_gram(labels)
        flat = x.reshape(32, -1).astype(np.float64)
        distances = np.sum((flat[:, None] - flat[None]) ** 2, axis=-1)
        reference_x = np.exp(-distances / (2 * 2.0**2))
        reference_y = (labels[:, None] == labels[None]).astype(np.float64)
        self.assertAllClose(
            hsic(gram_x, gram_y),
            numpy_hsic(reference_x, reference_y),
            atol=1e-6,
            rtol=1e-4,
        )

    def test_symmetric_and_non_negative(self):
        gram_x, gram_y = random_gram(10, 4), random_gram(10, 5)
        forward = float(hsic(gram_x, gram_y))
        self.assertAllClose(hsic(gram_y, gram_x), forward, atol=1e-6)
        self.assertGreater(forward, 0.0)

    def test_constant_kernel_gives_zero(self):
        self.assertAllClose(
            hsic(np.ones((8, 8), "float32"), random_gram(8, 6)),
            0.0,
            atol=1e-6,
        )

    def test_dependence_exceeds_independence(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(64, 3)).astype("float32")
        noise = rng.normal(size=(64, 3)).astype("float32")
        gram_x = kernels.gaussian_gram(x, sigma=1.0)
        y = np.tanh(x) + 0.1 * noise
        dependent = hsic(gram_x, kernels.gaussian_gram(y, sigma=1.0))
        independent = hsic(gram_x, kernels.gaussian_gram(noise, sigma=1.0))
        self.assertGreater(float(dependent), 5 * float(independent))

    def test_bad_arguments(self):
        gram = random_gram(6, 0)
        with pytest.raises(ValueError, match="same number of samples"):
            hsic(gram, random_gram(5, 0))
        with pytest.raises(ValueError, match="`gram_x` should be a square"):
            hsic(np.ones((6, 5), "float32"), gram)
        with pytest.raises(ValueError, match="`gram_y` should be a square"):
            hsic(gram, np.ones((6,), "float32"))
        with pytest.raises(ValueError, match="at least 2 samples"):
            hsic(np.ones((1, 1), "float32"), np.ones((1, 1), "float32"))


class NormalizedHSICTest(TestCase):
    def test_matches_numpy(self):
        for seed in range(3):
            gram_x = random_gram(12, seed)
            gram_y = random_gram(12, seed + 10, rank=2)
            self.assertAllClose(
                normalized_hsic(gram_x, gram_y),
                numpy_normalized_hsic(gram_x, gram_y),
                atol=1e-5,
                rtol=1e-4,
            )

    def test_linear_kernels_give_linear_cka(self):
        rng = np.random.default_rng(8)
        x = rng.normal(size=(20, 6))
        y = x @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(20, 4))
        value = normalized_hsic(
            (x @ x.T).astype("float32"), (y @ y.T).astype("float32")
        )
        self.assertAllClose(value, numpy_linear_cka(x, y), atol=1e-5)

    def test_scale_invariant_and_one_for_proportional_grams(self):
        gram_x, gram_y = random_gram(10, 1), random_gram(10, 2, rank=3)
        self.assertAllClose(
            normalized_hsic(3.0 * gram_x, 0.5 * gram_y),
            normalized_hsic(gram_x, gram_y),
            atol=1e-6,
        )
        self.assertAllClose(
            normalized_hsic(gram_x, 4.0 * gram_x), 1.0, atol=1e-5
        )

    def test_constant_kernel_gives_zero_and_finite_gradient(self):
        gram = random_gram(8, 3)
        ones = np.ones((8, 8), "float32")
        self.assertAllClose(normalized_hsic(ones, gram), 0.0)
        self.assertAllClose(normalized_hsic(gram, ones), 0.0)
        gradient = gradient_of(lambda g: normalized_hsic(g, gram), ones)
        self.assertAllFinite(gradient)
        gradient = gradient_of(lambda g: normalized_hsic(g, gram), gram)
        self.assertAllFinite(gradient)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="same number of samples"):
            normalized_hsic(random_gram(4, 0), random_gram(5, 0))

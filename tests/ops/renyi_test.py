import math

import numpy as np
import pytest
from keras import ops

from keras_dib.ops import kernels
from keras_dib.ops import renyi
from keras_dib.testing import TestCase
from tests.ops.kernels_test import gradient_of

ALPHAS = (1.01, 2.0, 3.0, 0.5)


def numpy_entropy(gram, alpha):
    """Reference: eigvalsh in float64, clamped at 0."""
    gram = np.asarray(gram, dtype=np.float64)
    a = gram / np.trace(gram)
    eigenvalues = np.clip(np.linalg.eigvalsh(a), 0, None)
    return np.log2(np.sum(eigenvalues**alpha)) / (1 - alpha)


def random_gram(n, seed, rank=None):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, rank or n))
    return (features @ features.T).astype("float32")


def degenerate_grams(n=8):
    repeated = np.diag([2.0] * (n // 2) + [1.0] * (n - n // 2))
    vector = np.arange(1, n + 1, dtype="float64")
    return {
        "identity": np.eye(n),
        "repeated": repeated,
        "rank1": np.outer(vector, vector),
        "ones": np.ones((n, n)),
        "low_rank": random_gram(n, 5, rank=2),
    }


class RenyiEntropyTest(TestCase):
    def test_matches_numpy_random(self):
        for alpha in ALPHAS:
            for seed in range(3):
                gram = random_gram(12, seed)
                self.assertAllClose(
                    renyi.renyi_entropy(gram, alpha=alpha),
                    numpy_entropy(gram, alpha),
                    atol=2e-3,
                    rtol=2e-3,
                    msg=f"alpha={alpha}",
                )

    def test_matches_numpy_degenerate(self):
        for alpha in ALPHAS:
            for name, gram in degenerate_grams().items():
                self.assertAllClose(
                    renyi.renyi_entropy(gram.astype("float32"), alpha=alpha),
                    numpy_entropy(gram, alpha),
                    atol=2e-3,
                    rtol=2e-3,
                    msg=f"alpha={alpha}, gram={name}",
                )

    def test_closed_forms(self):
        for alpha in ALPHAS:
            # The normalised identity has n equal eigenvalues 1/n: log2 n.
            self.assertAllClose(
                renyi.renyi_entropy(np.eye(16), alpha=alpha),
                math.log2(16),
                atol=1e-4,
            )
            # A rank-one matrix has a single eigenvalue 1: entropy 0.
            self.assertAllClose(
                renyi.renyi_entropy(np.ones((16, 16)), alpha=alpha),
                0.0,
                atol=1e-4,
            )

    def test_integer_alpha_without_eigh_equals_eigh(self):
        gram = random_gram(10, 7)
        for alpha in (2, 3, 4):
            self.assertAllClose(
                renyi._log_power_trace(renyi.normalize_gram(gram), alpha),
                np.log(
                    np.sum(
                        np.clip(
                            np.linalg.eigvalsh(gram / np.trace(gram)), 0, None
                        )
                        ** alpha
                    )
                ),
                atol=1e-5,
                rtol=1e-4,
            )

    def test_finite_gradients(self):
        x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        x[1] = x[0]  # a repeated sample: repeated eigenvalues
        for alpha in ALPHAS:
            gradient = gradient_of(
                lambda v, a=alpha: renyi.renyi_entropy(
                    kernels.gaussian_gram(v, sigma=1.0), alpha=a
                ),
                x,
            )
            self.assertAllFinite(gradient, msg=f"alpha={alpha}")
        for name, gram in degenerate_grams().items():
            for alpha in ALPHAS:
                gradient = gradient_of(
                    lambda g, a=alpha: renyi.renyi_entropy(g, alpha=a),
                    gram.astype("float32"),
                )
                self.assertAllFinite(gradient, msg=f"{name}, alpha={alpha}")

    def test_non_finite_gram_gives_nan_not_an_error(self):
        gram = np.eye(4, dtype="float32")
        gram[0, 1] = gram[1, 0] = np.nan
        for alpha in (1.01, 0.5):
            value = ops.convert_to_numpy(renyi.renyi_entropy(gram, alpha=alpha))
            self.assertTrue(np.isnan(value))

    def test_bad_alpha(self):
        for alpha in (1, 1.0, 0, -2, float("inf"), "2", None, True):
            with pytest.raises(ValueError, match="`alpha` should be"):
                renyi.renyi_entropy(np.eye(3), alpha=alpha)

    def test_alpha_one_error_names_alpha(self):
        with pytest.raises(ValueError, match="Received: alpha=1"):
            renyi.renyi_entropy(np.eye(3), alpha=1)

    def test_not_square(self):
        with pytest.raises(ValueError, match="square matrix"):
            renyi.renyi_entropy(np.ones((3, 4)))


class JointAndMutualInformationTest(TestCase):
    def test_joint_matches_numpy(self):
        a, b = random_gram(10, 1), random_gram(10, 2)
        for alpha in ALPHAS:
            self.assertAllClose(
                renyi.joint_renyi_entropy([a, b], alpha=alpha),
                numpy_entropy(a * b, alpha),
                atol=2e-3,
                rtol=2e-3,
            )

    def test_self_information_bounded_by_entropy(self):
        # For a Gaussian kernel K o K is the kernel of width sigma/sqrt(2),
        # so I(T;T) = 2 H(K) - H(K o K) lies in (0, H(T)]; it equals H(T)
        # exactly for idempotent kernels (next test).
        x = np.random.default_rng(3).normal(size=(24, 4)).astype("float32")
        gram = kernels.gaussian_gram(x, sigma=1.0)
        for alpha in ALPHAS:
            information = float(
                ops.convert_to_numpy(
                    renyi.renyi_mutual_information(gram, gram, alpha=alpha)
                )
            )
            entropy = float(
                ops.convert_to_numpy(renyi.renyi_entropy(gram, alpha=alpha))
            )
            self.assertGreater(information, 0.5 * entropy)
            self.assertLessEqual(information, entropy + 1e-3)

    def test_self_information_exact_for_idempotent_kernel(self):
        # For a 0/1 label kernel K o K = K, so I(Y;Y) = H(Y) exactly.
        labels = np.repeat(np.arange(4), 6)
        gram = kernels.label_gram(labels)
        for alpha in ALPHAS:
            self.assertAllClose(
                renyi.renyi_mutual_information(gram, gram, alpha=alpha),
                renyi.renyi_entropy(gram, alpha=alpha),
                atol=1e-4,
            )
            self.assertAllClose(
                renyi.renyi_entropy(gram, alpha=alpha), 2.0, atol=1e-4
            )

    def test_independent_labels_and_features_near_zero(self):
        rng = np.random.default_rng(4)
        values = []
        for _ in range(20):
            labels = rng.integers(0, 2, size=64)
            x = rng.normal(size=(64, 2)).astype("float32")
            values.append(
                ops.convert_to_numpy(
                    renyi.renyi_mutual_information(
                        kernels.label_gram(labels),
                        kernels.gaussian_gram(x, sigma=1.0),
                        alpha=2.0,
                    )
                )
            )
        # Dependent features for comparison: the label itself, plus noise.
        labels = rng.integers(0, 2, size=64)
        x = labels[:, None] * 4.0 + rng.normal(size=(64, 2))
        dependent = renyi.renyi_mutual_information(
            kernels.label_gram(labels),
            kernels.gaussian_gram(x.astype("float32"), sigma=1.0),
            alpha=2.0,
        )
        mean_independent = float(np.mean(values))
        self.assertLess(abs(mean_independent), 0.1)
        self.assertGreater(float(ops.convert_to_numpy(dependent)), 0.5)

    def test_bad_grams(self):
        with pytest.raises(ValueError, match="non-empty list"):
            renyi.joint_renyi_entropy([])
        with pytest.raises(ValueError, match="same shape"):
            renyi.joint_renyi_entropy([np.eye(3), np.eye(4)])

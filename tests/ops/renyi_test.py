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


def gaussian_grams(seed=0):
    """Gaussian Gram matrices, well posed and ill conditioned (float32)."""
    rng = np.random.default_rng(seed)
    repeated = rng.normal(size=(64, 3)).astype("float32")
    repeated[32:] = repeated[:32]
    grams = {
        "100x4": kernels.gaussian_gram(
            rng.normal(size=(100, 4)).astype("float32"), sigma=1.0
        ),
        "100x4 knn": kernels.gaussian_gram(
            rng.normal(size=(100, 4)).astype("float32")
        ),
        "repeated": kernels.gaussian_gram(repeated, sigma=1.0),
        "1d": kernels.gaussian_gram(
            rng.normal(size=(200, 1)).astype("float32"), sigma=0.5
        ),
        "512x2": kernels.gaussian_gram(
            rng.normal(size=(512, 2)).astype("float32"), sigma=1.0
        ),
        "512x16 knn": kernels.gaussian_gram(
            rng.normal(size=(512, 16)).astype("float32")
        ),
    }
    return {name: ops.convert_to_numpy(g) for name, g in grams.items()}


class RenyiEntropyNumericsTest(TestCase):
    def test_well_posed_matches_float64_tightly(self):
        # 100 samples of 4-d data: real eigenvalues down to ~1e-6 matter.
        grams = gaussian_grams()
        for name in ("100x4", "100x4 knn"):
            for alpha in (1.01, 1.5, 2.5):
                self.assertAllClose(
                    renyi.renyi_entropy(grams[name], alpha=alpha),
                    numpy_entropy(grams[name], alpha),
                    atol=1e-4,
                    rtol=0,
                    msg=f"{name}, alpha={alpha}",
                )

    def test_ill_conditioned_matches_float64(self):
        for name, gram in gaussian_grams().items():
            for alpha in (1.01, 1.5, 2.5, 0.9, 0.5):
                # For alpha < 1 eigensolver noise (and the float32 rounding
                # of the Gram matrix) weighs more: lambda ** 0.5 of 1e-7.
                atol = 5e-4 if alpha > 1 else 1.5e-2
                self.assertAllClose(
                    renyi.renyi_entropy(gram, alpha=alpha),
                    numpy_entropy(gram, alpha),
                    atol=atol,
                    rtol=0,
                    msg=f"{name}, alpha={alpha}",
                )

    def test_high_alpha_is_finite_and_exact(self):
        for alpha in (4.5, 5.5, 10.0, 50.0, 300.0):
            self.assertAllClose(
                renyi.renyi_entropy(np.eye(128), alpha=alpha),
                7.0,
                atol=1e-4,
                msg=f"alpha={alpha}",
            )
        gram = gaussian_grams()["100x4"]
        for alpha in (4.5, 8.0, 30.0):
            self.assertAllClose(
                renyi.renyi_entropy(gram, alpha=alpha),
                numpy_entropy(gram, alpha),
                atol=1e-4,
                rtol=1e-4,
                msg=f"alpha={alpha}",
            )

    def test_all_zero_matrix_is_nan(self):
        for alpha in (2, 3, 1.01, 0.5, 5.5):
            value = ops.convert_to_numpy(
                renyi.renyi_entropy(np.zeros((6, 6)), alpha=alpha)
            )
            self.assertTrue(np.isnan(value), f"alpha={alpha}: {value}")

    def test_tiny_trace_is_scale_invariant(self):
        for alpha in (2, 1.01):
            self.assertAllClose(
                renyi.renyi_entropy(1e-14 * np.eye(4), alpha=alpha),
                2.0,
                atol=1e-4,
            )

    def test_finite_gradients_ill_conditioned(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(48, 3)).astype("float32")
        x[24:] = x[:24]  # every sample twice: 24 zero eigenvalues
        low = rng.normal(size=(48, 1)).astype("float32")
        for alpha in (1.01, 0.5, 0.9, 1.5, 2.5, 5.5, 30.0):
            for name, data in (("repeated", x), ("1d", low)):
                gradient = gradient_of(
                    lambda v, a=alpha: renyi.renyi_entropy(
                        kernels.gaussian_gram(v), alpha=a
                    ),
                    data,
                )
                self.assertAllFinite(gradient, msg=f"{name}, alpha={alpha}")

    def test_variables_are_accepted(self):
        import keras
        import tensorflow as tf

        for variable in (
            keras.Variable(np.eye(4, dtype="float32")),
            tf.Variable(np.eye(4, dtype="float32")),
        ):
            self.assertAllClose(
                renyi.renyi_entropy(variable, alpha=2), 2.0, atol=1e-5
            )
            self.assertAllClose(
                renyi.renyi_entropy(variable, alpha=1.5), 2.0, atol=1e-5
            )
            self.assertAllClose(
                renyi.joint_renyi_entropy([variable, variable], alpha=2),
                2.0,
                atol=1e-5,
            )
            self.assertAllClose(
                renyi.normalize_gram(variable), np.eye(4) / 4, atol=1e-7
            )

    def test_numpy_alpha_is_accepted(self):
        for alpha in (np.float32(2.0), np.float64(0.5), np.int64(3)):
            self.assertAllClose(
                renyi.renyi_entropy(np.eye(4), alpha=alpha), 2.0, atol=1e-5
            )
        with pytest.raises(ValueError, match="`alpha` should be"):
            renyi.renyi_entropy(np.eye(3), alpha=np.bool_(True))
        with pytest.raises(ValueError, match="Received: alpha=1.0"):
            renyi.renyi_entropy(np.eye(3), alpha=np.float32(1.0))


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
            # ... and strictly below it: I(A; A) = S(A) is false here.
            self.assertLess(information, entropy - 0.1)

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

import keras
import numpy as np
import pytest

from keras_dib import analysis
from keras_dib.analysis import information
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.testing import TestCase

# === NumPy references (float64) ===


def numpy_gaussian_gram(x, num_neighbors=10):
    """Gaussian Gram with the 'knn' width: mean distance to k neighbours."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    distances = np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0.0)
    k = min(num_neighbors, len(x) - 1)
    off_diagonal = distances + np.diag(np.full(len(x), np.inf))
    nearest = np.sort(off_diagonal, axis=1)[:, :k]
    sigma = np.sqrt(nearest).mean()
    sigma = sigma if sigma > 1e-12 else 1.0
    return np.exp(-distances / (2 * sigma**2))


def numpy_label_gram(y):
    y = np.asarray(y).reshape(-1)
    return (y[:, None] == y[None]).astype(np.float64)


def numpy_entropy(gram, alpha=1.01):
    a = gram / np.trace(gram)
    eigenvalues = np.clip(np.linalg.eigvalsh(a), 0, None)
    return np.log2(np.sum(eigenvalues**alpha)) / (1 - alpha)


def numpy_mutual_information(gram_a, gram_b, alpha=1.01):
    return (
        numpy_entropy(gram_a, alpha)
        + numpy_entropy(gram_b, alpha)
        - numpy_entropy(gram_a * gram_b, alpha)
    )


def numpy_quantities(x, y, t, alpha=1.01):
    gram_x, gram_y = numpy_gaussian_gram(x), numpy_label_gram(y)
    gram_t = numpy_gaussian_gram(t)
    return {
        "I_XT": numpy_mutual_information(gram_x, gram_t, alpha),
        "I_TY": numpy_mutual_information(gram_t, gram_y, alpha),
        "H_T": numpy_entropy(gram_t, alpha),
        "nHSIC_XT": numpy_normalized_hsic(gram_x, gram_t),
        "nHSIC_TY": numpy_normalized_hsic(gram_t, gram_y),
    }


def numpy_hsic(gram_a, gram_b):
    n = len(gram_a)
    centering = np.eye(n) - np.ones((n, n)) / n
    return np.trace(centering @ gram_a @ centering @ gram_b) / (n - 1) ** 2


def numpy_normalized_hsic(gram_a, gram_b):
    denominator = np.sqrt(
        numpy_hsic(gram_a, gram_a) * numpy_hsic(gram_b, gram_b)
    )
    return numpy_hsic(gram_a, gram_b) / denominator


# === Models and data ===


def dense_chain(input_dim=6):
    """A chain of deterministic layers that narrows down to one unit."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(12, activation="relu", name="dense_12"),
            keras.layers.Dense(6, activation="relu", name="dense_6"),
            keras.layers.Dense(3, activation="relu", name="dense_3"),
            keras.layers.Dense(2, name="dense_2"),
            keras.layers.Dense(1, name="dense_1"),
        ],
        name="chain",
    )


def tiny_greedy_model(num_classes=3):
    blocks = [
        keras.Sequential(
            [keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()],
            name="block_a",
        ),
        keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, strides=2, padding="same"),
                keras.layers.ReLU(),
            ],
            name="block_b",
        ),
        keras.Sequential(
            [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)],
            name="block_c",
        ),
    ]
    return GreedyLayerwiseModel(
        blocks,
        head=keras.layers.Dense(num_classes, name="head"),
        num_classes=num_classes,
        input_shape=(8, 8, 3),
    )


def vectors(n=64, dim=6, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype("float32")
    y = rng.integers(0, num_classes, size=n).astype("int32")
    return x, y


def images(n=32, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=n).astype("int32")
    return x, y


class ArrayBatches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


# === Tests ===


class LayerRepresentationsTest(TestCase):
    def test_sequential_layers_match_manual_forward(self):
        model = dense_chain()
        x, _ = vectors(16)
        features = information.layer_representations(model, x, batch_size=8)
        self.assertEqual(
            list(features),
            ["dense_12", "dense_6", "dense_3", "dense_2", "dense_1"],
        )
        expected = x
        for layer in model.layers:
            expected = layer(expected)
            self.assertAllClose(
                features[layer.name], expected, atol=1e-5, rtol=1e-5
            )

    def test_functional_subset_in_model_order(self):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(4, name="hidden")(inputs)
        outputs = keras.layers.Dense(2, name="out")(hidden)
        model = keras.Model(inputs, outputs)
        x, _ = vectors(8)
        features = information.layer_representations(
            model, x, layer_names=["out", "hidden"]
        )
        self.assertEqual(list(features), ["hidden", "out"])
        self.assertAllClose(
            features["out"], model.predict(x, verbose=0), atol=1e-5
        )

    def test_greedy_blocks_in_inference_mode(self):
        model = tiny_greedy_model()
        x, _ = images(8)
        features = information.layer_representations(model, x)
        self.assertEqual(list(features), ["block_a", "block_b", "block_c"])
        expected = x
        for block in model.blocks:
            expected = block(expected, training=False)
            self.assertAllClose(
                features[block.name], expected, atol=1e-5, rtol=1e-5
            )
        self.assertEqual(features["block_b"].shape, (8, 4, 4, 4))

    def test_greedy_head_on_request(self):
        model = tiny_greedy_model()
        x, _ = images(8)
        features = information.layer_representations(
            model, x, layer_names=["head"]
        )
        self.assertAllClose(
            features["head"], model.predict(x, verbose=0), atol=1e-5
        )

    def test_bad_layer_names(self):
        model, x = dense_chain(), vectors(4)[0]
        with pytest.raises(ValueError, match="Unknown layer 'nope'"):
            information.layer_representations(model, x, layer_names=["nope"])
        with pytest.raises(ValueError, match="list of layer names"):
            information.layer_representations(model, x, layer_names="dense_6")
        with pytest.raises(ValueError, match="should not be empty"):
            information.layer_representations(model, x, layer_names=[])

    def test_subclassed_model(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)

            def call(self, inputs):
                return self.dense(inputs)

        model = Subclassed()
        model(np.zeros((1, 3)))
        with pytest.raises(ValueError, match="Subclassed models"):
            information.layer_representations(model, np.zeros((4, 3)))

    def test_multi_input_model(self):
        first, second = keras.Input((2,)), keras.Input((2,))
        outputs = keras.layers.Dense(1)(
            keras.layers.Concatenate()([first, second])
        )
        model = keras.Model([first, second], outputs)
        with pytest.raises(ValueError, match="single input"):
            information.layer_representations(model, np.zeros((4, 2)))


class InformationPlaneTest(TestCase):
    def test_matches_numpy_averaged_over_batches(self):
        model = dense_chain()
        x, y = vectors(64)
        plane = analysis.information_plane(model, x, y, batch_size=32)
        features = information.layer_representations(model, x)
        for name, values in plane.items():
            self.assertEqual(set(values), {"I_XT", "I_TY", "H_T"})
            batches = [
                numpy_quantities(x[part], y[part], features[name][part])
                for part in (slice(0, 32), slice(32, 64))
            ]
            for key in ("I_XT", "I_TY", "H_T"):
                expected = np.mean([batch[key] for batch in batches])
                self.assertAllClose(
                    values[key], expected, atol=1e-2, rtol=0, msg=name + key
                )

    def test_data_processing_inequality_along_a_chain(self):
        model = dense_chain()
        x, y = vectors(64, seed=1)
        plane = analysis.information_plane(model, x, y, batch_size=64)
        i_xt = [values["I_XT"] for values in plane.values()]
        i_ty = [values["I_TY"] for values in plane.values()]
        # X -> T1 -> ... -> T5 is a Markov chain: I(X; T_l) cannot grow
        # with depth, nor can I(T_l; Y), up to the estimator's tolerance
        # (over 12 random chains and samples, the largest increase between
        # consecutive layers was 0.04 bits, of about 2.5 bits).
        tolerance = 0.1
        self.assertTrue(
            np.all(np.diff(i_xt) <= tolerance), f"I(X;T) along chain: {i_xt}"
        )
        self.assertTrue(
            np.all(np.diff(i_ty) <= tolerance), f"I(T;Y) along chain: {i_ty}"
        )
        # Narrowing to one unit loses information.
        self.assertLess(i_xt[-1], i_xt[0] - 0.3)

    def test_label_information_bounded_by_label_entropy(self):
        model = dense_chain()
        x, y = vectors(64, num_classes=4, seed=2)
        summary = analysis.information_summary(
            model, x, y, include=("renyi",), batch_size=32
        )
        h_y = np.mean(
            [
                numpy_entropy(numpy_label_gram(y[part]))
                for part in (slice(0, 32), slice(32, 64))
            ]
        )
        self.assertAllClose(summary["H_Y"], h_y, atol=1e-3)
        for name, values in summary["layers"].items():
            self.assertLessEqual(values["I_TY"], summary["H_Y"] + 1e-3, name)
            self.assertLessEqual(values["I_XT"], summary["H_X"] + 1e-3, name)
            self.assertGreaterEqual(values["I_TY"], -1e-3, name)

    def test_identity_and_constant_layers(self):
        inputs = keras.Input((6,))
        same = keras.layers.Identity(name="identity")(inputs)
        constant = keras.layers.Dense(
            3, kernel_initializer="zeros", name="constant"
        )(same)
        model = keras.Model(inputs, constant)
        x, y = vectors(32)
        summary = analysis.information_summary(model, x, y, batch_size=32)
        identity = summary["layers"]["identity"]
        # T = X: nHSIC(X; T) = 1 and H(T) = H(X).
        self.assertAllClose(identity["nHSIC_XT"], 1.0, atol=1e-5)
        self.assertAllClose(identity["H_T"], summary["H_X"], atol=1e-4)
        # A constant T carries nothing.
        for key in ("I_XT", "I_TY", "H_T", "nHSIC_XT", "nHSIC_TY"):
            self.assertAllClose(
                summary["layers"]["constant"][key], 0.0, atol=1e-3, msg=key
            )

    def test_greedy_model_blocks(self):
        model = tiny_greedy_model()
        x, y = images(32)
        plane = analysis.information_plane(model, x, y, batch_size=16)
        self.assertEqual(list(plane), ["block_a", "block_b", "block_c"])
        features = information.layer_representations(model, x)
        expected = np.mean(
            [
                numpy_quantities(x[p], y[p], features["block_b"][p])["I_XT"]
                for p in (slice(0, 16), slice(16, 32))
            ]
        )
        self.assertAllClose(plane["block_b"]["I_XT"], expected, atol=1e-2)

    def test_one_hot_labels_equal_integer_labels(self):
        model = dense_chain()
        x, y = vectors(32)
        with_integers = analysis.information_plane(model, x, y, batch_size=32)
        with_one_hot = analysis.information_plane(
            model, x, np.eye(3)[y], batch_size=32
        )
        for name in with_integers:
            self.assertAllClose(
                with_one_hot[name]["I_TY"],
                with_integers[name]["I_TY"],
                atol=1e-5,
            )

    def test_dataset_input(self):
        model = dense_chain()
        x, y = vectors(64)
        from_arrays = analysis.information_plane(
            model, x[:32], y[:32], batch_size=16
        )
        from_dataset = analysis.information_plane(
            model, ArrayBatches(x, y, 8), batch_size=16, num_batches=2
        )
        for name in from_arrays:
            self.assertAllClose(
                from_dataset[name]["I_XT"], from_arrays[name]["I_XT"]
            )

    def test_num_batches_and_remainder(self):
        model = dense_chain()
        x, y = vectors(70)
        summary = analysis.information_summary(model, x, y, batch_size=32)
        self.assertEqual(summary["num_batches"], 2)
        first = analysis.information_summary(
            model, x, y, batch_size=32, num_batches=1
        )
        alone = analysis.information_summary(
            model, x[:32], y[:32], batch_size=32
        )
        self.assertEqual(first["layers"], alone["layers"])


class HSICPlaneTest(TestCase):
    def test_matches_numpy(self):
        model = dense_chain()
        x, y = vectors(32)
        plane = analysis.hsic_plane(model, x, y, batch_size=32)
        features = information.layer_representations(model, x)
        for name, values in plane.items():
            self.assertEqual(set(values), {"nHSIC_XT", "nHSIC_TY"})
            expected = numpy_quantities(x, y, features[name])
            for key in values:
                self.assertAllClose(values[key], expected[key], atol=1e-4)
                self.assertGreaterEqual(values[key], 0.0)
                self.assertLessEqual(values[key], 1.0)


class MutualInformationMatrixTest(TestCase):
    def test_matches_numpy_and_is_symmetric(self):
        model = dense_chain()
        x, _ = vectors(32)
        matrix, names = analysis.mutual_information_matrix(
            model, x, batch_size=32
        )
        self.assertEqual(matrix.shape, (5, 5))
        self.assertEqual(names[0], "dense_12")
        self.assertAllClose(matrix, matrix.T)
        features = information.layer_representations(model, x)
        grams = [numpy_gaussian_gram(features[name]) for name in names]
        for i in range(5):
            self.assertAllClose(
                matrix[i, i], numpy_entropy(grams[i]), atol=1e-2
            )
            for j in range(i + 1, 5):
                self.assertAllClose(
                    matrix[i, j],
                    numpy_mutual_information(grams[i], grams[j]),
                    atol=1e-2,
                )

    def test_data_processing_inequality(self):
        model = dense_chain()
        x, _ = vectors(128, seed=3)
        matrix, _ = analysis.mutual_information_matrix(model, x, batch_size=64)
        # Largest violation over 12 random chains and samples: 0.06 bits.
        tolerance = 0.1
        for i in range(5):
            # Moving away from layer i along the chain loses information.
            right = matrix[i, i:]
            left = matrix[i, : i + 1][::-1]
            self.assertTrue(np.all(np.diff(right) <= tolerance), matrix)
            self.assertTrue(np.all(np.diff(left) <= tolerance), matrix)


class ArgumentsTest(TestCase):
    def test_bad_estimator_arguments(self):
        model = dense_chain()
        x, y = vectors(32)
        for kwargs, message in (
            ({"alpha": 1}, "alpha"),
            ({"sigma": "median"}, "sigma"),
            ({"num_neighbors": 0}, "num_neighbors"),
            ({"batch_size": 1}, "batch_size"),
            ({"num_batches": 0}, "num_batches"),
            ({"include": ("shannon",)}, "include"),
        ):
            with pytest.raises(ValueError, match=message):
                analysis.information_summary(model, x, y, **kwargs)

    def test_bad_samples(self):
        model = dense_chain()
        x, y = vectors(20)
        with pytest.raises(ValueError, match="at least 32 samples"):
            analysis.information_plane(model, x, y, batch_size=32)
        with pytest.raises(ValueError, match="at least 64 samples"):
            analysis.information_plane(
                model, x, y, batch_size=16, num_batches=4
            )
        with pytest.raises(ValueError, match="Labels are needed"):
            analysis.information_plane(model, x, batch_size=16)
        with pytest.raises(ValueError, match="same number of samples"):
            analysis.information_plane(model, x, y[:10], batch_size=16)
        with pytest.raises(ValueError, match="num_batches"):
            analysis.information_plane(model, ArrayBatches(x, y, 8))
        with pytest.raises(ValueError, match="`y` should be None"):
            analysis.information_plane(
                model, ArrayBatches(x, y, 8), y, num_batches=1
            )
        with pytest.raises(ValueError, match="one array of inputs"):
            analysis.information_plane(model, [x, x], y, batch_size=16)

    def test_sample_arrays(self):
        x, y = vectors(40)
        sample_x, sample_y = information.sample_arrays(
            ArrayBatches(x, y, 16), num_samples=20
        )
        self.assertAllClose(sample_x, x[:20])
        self.assertAllClose(sample_y, y[:20])
        sample_x, sample_y = information.sample_arrays(x, num_samples=5)
        self.assertEqual(sample_x.shape, (5, 6))
        self.assertIsNone(sample_y)

import keras
import numpy as np
import pytest
from keras import ops

from keras_dib.losses.dib import LocalObjective
from keras_dib.models.cutting import split_model
from keras_dib.models.greedy import GreedyLayerwiseModel
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.testing import TestCase


def residual_model(num_classes=5):
    """A small functional CNN with a residual branch, BN, dropout, an op."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_1")(inputs)
    x = keras.layers.BatchNormalization(name="batch_norm_1")(x)
    x = keras.layers.ReLU(name="relu_1")(x)
    branch = keras.layers.Conv2D(6, 3, padding="same", name="branch_conv")(x)
    branch = keras.layers.ReLU(name="branch_relu")(branch)
    x = keras.layers.Add(name="merge")([x, branch])
    x = ops.multiply(x, 0.5)  # a bare keras.ops operation in the graph
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv_2")(x)
    x = keras.layers.BatchNormalization(name="batch_norm_2")(x)
    x = keras.layers.ReLU(name="relu_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="user_model")


CUTS = ["relu_1", "merge", "relu_2"]


def batch(n=6, shape=(12, 12, 3), seed=0):
    return (
        np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")
    )


def train_briefly(model, x, num_classes=5):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LocalObjective())
    y = (np.arange(len(x)) % num_classes).astype("int32")
    return model.fit(x, y, batch_size=len(x) // 2, epochs=1, verbose=0)


class SplitModelTest(TestCase):
    def test_same_inference_outputs_as_original(self):
        model = residual_model()
        x = batch()
        expected = model.predict(x, verbose=0)
        greedy = split_model(model, CUTS)
        self.assertIsInstance(greedy, GreedyLayerwiseModel)
        self.assertEqual(greedy.num_blocks, 3)
        self.assertEqual(greedy.num_classes, 5)
        self.assertEqual(greedy.name, "user_model")
        self.assertAllClose(
            greedy.predict(x, verbose=0), expected, atol=1e-6, rtol=1e-6
        )
        # Block i ends with cut_after[i]; the head holds what follows.
        self.assertEqual(
            [layer.name for layer in greedy.blocks[1].layers],
            ["block_2_input", "branch_conv", "branch_relu", "merge"],
        )
        self.assertEqual(
            [layer.name for layer in greedy.head.layers],
            ["head_input", "pool", "dropout", "logits"],
        )

    def test_copied_weights_leave_the_original_untouched(self):
        model = residual_model()
        x = batch(8)
        expected = model.predict(x, verbose=0)
        greedy = split_model(model, CUTS)
        train_briefly(greedy, x)
        self.assertAllClose(model.predict(x, verbose=0), expected)
        self.assertGreater(
            np.max(np.abs(greedy.predict(x, verbose=0) - expected)), 1e-3
        )

    def test_shared_weights_train_the_original(self):
        model = residual_model()
        x = batch(8)
        greedy = split_model(model, CUTS, share_weights=True)
        self.assertIs(greedy.blocks[0].get_layer("conv_1"), model.layers[1])
        before = model.predict(x, verbose=0)
        train_briefly(greedy, x)
        after = model.predict(x, verbose=0)
        self.assertGreater(np.max(np.abs(after - before)), 1e-3)
        self.assertAllClose(greedy.predict(x, verbose=0), after, atol=1e-6)

    def test_sequential_model(self):
        model = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(8, activation="relu", name="dense_1"),
                keras.layers.Dense(8, activation="relu", name="dense_2"),
                keras.layers.Dense(3, name="logits"),
            ],
            name="mlp",
        )
        x = batch(4, shape=(10,))
        greedy = split_model(model, ["dense_1", "dense_2"])
        self.assertEqual(greedy.num_blocks, 2)
        self.assertAllClose(
            greedy.predict(x, verbose=0),
            model.predict(x, verbose=0),
            atol=1e-6,
        )

    def test_nested_model_as_a_block(self):
        stem = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, padding="same"),
                keras.layers.ReLU(),
            ],
            name="stem",
        )
        inputs = keras.Input((8, 8, 3))
        x = stem(inputs)
        x = keras.layers.Conv2D(4, 3, name="conv")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        outputs = keras.layers.Dense(3, name="logits")(x)
        model = keras.Model(inputs, outputs)
        x = batch(4, shape=(8, 8, 3))
        greedy = split_model(model, ["stem", "conv"])
        self.assertAllClose(
            greedy.predict(x, verbose=0),
            model.predict(x, verbose=0),
            atol=1e-6,
        )

    def test_keras_round_trip_after_greedy_training(self):
        model = residual_model()
        x = batch(8)
        greedy = split_model(model, CUTS)
        history = train_briefly(greedy, x)
        self.assertEqual(history.history["block"], [0, 1, 2])
        restored = self.run_model_saving_test(greedy, x, atol=1e-5)
        self.assertEqual(restored.num_blocks, 3)

    def test_auxiliary_heads(self):
        model = residual_model()
        heads = [
            AuxiliaryHead(5, grid_size=1, name="aux_a"),
            AuxiliaryHead(5, grid_size=3, name="aux_b"),
        ]
        greedy = split_model(model, CUTS, auxiliary_heads=heads, name="cut")
        self.assertEqual(greedy.name, "cut")
        self.assertEqual(
            [head.name for head in greedy.auxiliary_heads], ["aux_a", "aux_b"]
        )
        with pytest.raises(ValueError, match="`auxiliary_heads` should be"):
            split_model(model, CUTS, auxiliary_heads=heads[:1])

    def test_skip_connection_across_a_cut(self):
        model = residual_model()
        message = (
            "Cannot cut after layer 'branch_conv': the output of layer "
            "'relu_1', computed before the cut, is also used after it by "
            "layer 'merge'"
        )
        with pytest.raises(ValueError, match=message):
            split_model(model, ["branch_conv"])
        with pytest.raises(ValueError, match="output of layer 'relu_1'"):
            split_model(model, ["relu_1", "branch_relu"])

    def test_input_used_after_a_cut(self):
        inputs = keras.Input((6,))
        x = keras.layers.Dense(6, name="dense")(inputs)
        x = keras.layers.Concatenate(name="concat")([x, inputs])
        outputs = keras.layers.Dense(2, name="logits")(x)
        model = keras.Model(inputs, outputs)
        with pytest.raises(ValueError, match="the model input, computed"):
            split_model(model, ["dense"])
        self.assertEqual(split_model(model, ["concat"]).num_blocks, 1)

    def test_shared_layer(self):
        inputs = keras.Input((4,))
        shared = keras.layers.Dense(4, name="shared")
        x = shared(inputs)
        x = keras.layers.ReLU(name="relu")(x)
        x = shared(x)
        outputs = keras.layers.Dense(2, name="logits")(x)
        model = keras.Model(inputs, outputs)
        with pytest.raises(ValueError, match="applied 2 times"):
            split_model(model, ["shared"])
        with pytest.raises(ValueError, match="'shared' is applied in both"):
            split_model(model, ["relu"])

    def test_bad_cuts(self):
        model = residual_model()
        with pytest.raises(ValueError, match="in the order the network"):
            split_model(model, ["merge", "relu_1"])
        with pytest.raises(ValueError, match="No layer named 'conv_9'"):
            split_model(model, ["conv_9"])
        with pytest.raises(ValueError, match="the input layer 'image'"):
            split_model(model, ["image", "merge"])
        with pytest.raises(ValueError, match="leaves no layers for the head"):
            split_model(model, ["relu_1", "logits"])
        with pytest.raises(ValueError, match="each layer once"):
            split_model(model, ["relu_1", "relu_1"])
        with pytest.raises(ValueError, match="non-empty list of layer names"):
            split_model(model, [])
        with pytest.raises(ValueError, match="non-empty list of layer names"):
            split_model(model, [3])
        with pytest.raises(ValueError, match="`num_classes` should match"):
            split_model(model, CUTS, num_classes=10)
        with pytest.raises(ValueError, match="`share_weights` should be"):
            split_model(model, CUTS, share_weights="yes")

    def test_bad_models(self):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(4, name="hidden")(inputs)
        softmax = keras.Model(
            inputs, keras.layers.Dense(2, activation="softmax")(x)
        )
        with pytest.raises(ValueError, match="ends with a softmax"):
            split_model(softmax, ["hidden"])
        softmax = keras.Model(inputs, keras.layers.Softmax()(x))
        with pytest.raises(ValueError, match="ends with a softmax"):
            split_model(softmax, ["hidden"])
        with pytest.raises(ValueError, match="single input and a single"):
            split_model(keras.Model(inputs, [x, x]), ["hidden"])
        second = keras.Input((4,))
        joined = keras.layers.Add()([x, second])
        with pytest.raises(ValueError, match="single input and a single"):
            split_model(keras.Model([inputs, second], joined), ["hidden"])
        with pytest.raises(ValueError, match="class logits of shape"):
            split_model(
                keras.Model(inputs, keras.layers.Reshape((2, 2))(x)), ["hidden"]
            )
        unbuilt = keras.Sequential([keras.layers.Dense(2, name="hidden")])
        with pytest.raises(ValueError, match="built Sequential"):
            split_model(unbuilt, ["hidden"])

        class Subclassed(keras.Model):
            def call(self, inputs):
                return inputs

        with pytest.raises(ValueError, match="subclassed model"):
            split_model(Subclassed(), ["hidden"])
        with pytest.raises(ValueError, match="`model` should be a functional"):
            split_model(keras.layers.Dense(2), ["hidden"])


class FromBlocksTest(TestCase):
    """A user's own blocks (with skips inside them) go straight in."""

    def test_list_of_functional_blocks(self):
        def residual_block(channels, name):
            inputs = keras.Input((None, None, channels))
            x = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
            x = keras.layers.ReLU()(x)
            outputs = keras.layers.Add()([inputs, x])
            return keras.Model(inputs, outputs, name=name)

        stem = keras.Sequential(
            [keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()],
            name="stem",
        )
        blocks = [stem, residual_block(4, "res_1"), residual_block(4, "res_2")]
        greedy = GreedyLayerwiseModel(
            blocks,
            head=AuxiliaryHead(3, pooling="global_average"),
            num_classes=3,
            input_shape=(8, 8, 3),
        )
        x = batch(6, shape=(8, 8, 3))
        expected = greedy.head(
            blocks[2](blocks[1](blocks[0](x, training=False), training=False)),
            training=False,
        )
        self.assertAllClose(greedy.predict(x, verbose=0), expected, atol=1e-6)
        train_briefly(greedy, x, num_classes=3)
        self.run_model_saving_test(greedy, x, atol=1e-5)

"""Tests of `keras_dib.recipes`, the examples' and benchmarks' recipe."""

import json
import os

import keras
import numpy as np
import pytest

from keras_dib import recipes
from tests.datasets import fakes

BACKEND = keras.backend.backend()


def test_build_model_auxiliary_final_head(tmp_path):
    model = recipes.build_model(
        5,
        depth=11,
        width=4,
        final_head="auxiliary",
        head_conv_filters=4,
        head_grid_size=2,
    )
    head_config = model.head.get_config()
    auxiliary_config = model.auxiliary_heads[-1].get_config()
    assert head_config.pop("name") == "head"
    auxiliary_config.pop("name")
    # Each head draws its own dropout seed.
    head_config.pop("seed")
    auxiliary_config.pop("seed")
    assert head_config == auxiliary_config
    assert all(model.head is not h for h in model.auxiliary_heads)
    images = np.random.default_rng(0).uniform(size=(3, 32, 32, 3))
    images = images.astype("float32")
    features = images
    for block in model.blocks:
        features = block(features, training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(images, training=False)),
        keras.ops.convert_to_numpy(model.head(features, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.head.get_config()["conv_filters"] == 4
    np.testing.assert_allclose(
        restored.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="final_head"):
        recipes.build_model(5, width=4, final_head="dense")
    with pytest.raises(ValueError, match="architecture='mlp'"):
        recipes.build_model(5, width=4, architecture="mlp")


@pytest.mark.backend_free
def test_default_batch_size_is_smaller_on_small_training_sets():
    assert recipes.default_batch_size(2000) == 32
    assert recipes.default_batch_size(recipes.SMALL_TRAINING_SET - 1) == 32
    assert recipes.default_batch_size(recipes.SMALL_TRAINING_SET) == 128
    assert recipes.default_batch_size(39209) == 128


@pytest.mark.backend_free
def test_default_settings_and_bad_settings():
    settings = recipes.default_settings(mode="greedy_ce", epochs_per_block=1)
    assert settings["mode"] == "greedy_ce"
    assert settings["epochs_per_block"] == 1
    assert settings["alpha"] == 1.01 and settings["beta"] == 0.01
    # A copy: the defaults themselves do not change.
    assert recipes.DEFAULT_SETTINGS["mode"] == "greedy_dib"
    recipes.check_settings(settings)
    with pytest.raises(ValueError, match=r"Unknown settings \['epoch'\]"):
        recipes.default_settings(epoch=3)
    for name, value, message in [
        ("epochs_per_block", 0, "epochs_per_block=0"),
        ("epochs", -1, "epochs=-1"),
        ("width", 0, "width=0"),
        ("train_size", -5, "train_size=-5"),
    ]:
        with pytest.raises(ValueError, match=message):
            recipes.check_settings(recipes.default_settings(**{name: value}))
    with pytest.raises(ValueError, match="validation_size"):
        recipes.check_settings(
            recipes.default_settings(select_depth="val_accuracy")
        )
    selecting = recipes.default_settings(
        select_depth="val_accuracy", validation_size=100
    )
    recipes.check_settings(dict(selecting, depth_patience=2))
    for patience, select in [(0, True), (True, True), (1.5, True), (2, False)]:
        bad = dict(selecting, depth_patience=patience)
        if not select:
            bad["select_depth"] = None
        with pytest.raises(ValueError, match="depth_patience="):
            recipes.check_settings(bad)
    preservation = recipes.make_objective(
        "greedy_dib", "information_preservation", beta=0.05
    )
    assert preservation.get_config()["weight"] == 0.05
    assert recipes.make_objective("greedy_ce").term_weights == {
        "cross_entropy": 1.0
    }
    with pytest.raises(ValueError, match="objective='dob'"):
        recipes.make_objective("greedy_dib", objective="dob")


@pytest.mark.backend_free
def test_parse_conv_filters():
    assert recipes.parse_conv_filters("0") is None
    assert recipes.parse_conv_filters("") is None
    assert recipes.parse_conv_filters("32") == 32
    assert recipes.parse_conv_filters("16,32") == [16, 32]
    assert recipes.parse_conv_filters("auglocal") == "auglocal"


@pytest.mark.backend_free
def test_validation_split_keeps_groups_whole():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 30)  # 40 tracks of 30 frames
    x = rng.integers(0, 255, size=(len(groups), 2, 2, 3), dtype="uint8")
    y = groups % 7
    (x_train, y_train), (x_val, y_val) = recipes._validation_split(
        x, y, groups, size=100, seed=3
    )
    assert len(x_train) + len(x_val) == len(x)
    # Whole tracks: at least the size asked for, less than a track more.
    assert 100 <= len(x_val) < 130
    # No frame on both sides (the images are distinct rows of the input).
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_val)
    # Without groups: exactly `size` samples.
    _, (x_val, _) = recipes._validation_split(x, y, None, size=100, seed=3)
    assert len(x_val) == 100


def test_activation_memory_against_the_layers_outputs():
    # Block 1's head pools its 16x16 map to 8x8 (`head_downsample_size`).
    model = recipes.build_model(
        5,
        depth=11,
        width=4,
        head_conv_filters=4,
        head_grid_size=2,
        head_downsample_size=8,
    )
    assert model.training_heads[0].downsample_size == 8
    batch = 2
    end_to_end, blocks = recipes.activation_memory(model, batch)

    # Reference: run every leaf layer on a batch and add up the float32
    # sizes of its outputs (NumPy), instead of the layers' output shapes.
    def leaves(layer):
        children = getattr(layer, "layers", None) or getattr(
            layer, "head_layers", None
        )
        if not children:
            return [layer]
        return [leaf for child in children for leaf in leaves(child)]

    def outputs_bytes(layer, x):
        total = 0
        size = getattr(layer, "downsample_size", None)
        if size is not None and x.shape[1] > size:
            # The documented downsampling: an average pooling by
            # `height // downsample_size`, in NumPy.
            pool = x.shape[1] // size
            x = keras.ops.convert_to_numpy(x)
            n, h, w, c = x.shape
            x = x.reshape(n, h // pool, pool, w // pool, pool, c).mean((2, 4))
            total += x.size * 4
        for leaf in leaves(layer):
            x = leaf(x, training=False)
            total += keras.ops.convert_to_numpy(x).size * 4
        return total, x

    x = np.zeros((batch, 32, 32, 3), "float32")
    expected_blocks, expected_end_to_end = [], 0
    for block, head in zip(model.blocks, model.training_heads):
        block_bytes, y = outputs_bytes(block, x)
        head_bytes, _ = outputs_bytes(head, y)
        expected_blocks.append(x.size * 4 + block_bytes + head_bytes)
        expected_end_to_end += block_bytes
        x = keras.ops.convert_to_numpy(y)
    expected_end_to_end += outputs_bytes(model.head, x)[0]
    assert blocks == expected_blocks
    assert end_to_end == expected_end_to_end


def test_run_on_a_small_archive_with_a_validation_split(tmp_path):
    # CIFAR-100 in the official format, a few hundred images: the whole
    # recipe (load, hold out, normalise in the model, fit greedily with
    # depth selection, evaluate, save), in-process.
    data_dir, _ = fakes.write_cifar100(
        str(tmp_path), num_train=200, num_test=40
    )
    settings = recipes.default_settings(
        data_dir=data_dir,
        mode="greedy_ce",
        width=4,
        granularity="stage",
        epochs_per_block=1,
        batch_size=32,
        validation_size=64,
        select_depth="val_accuracy",
    )
    output_dir = str(tmp_path / "run")
    model, summary, _, validation = recipes.run(
        "cifar100", settings, output_dir=output_dir, verbose=0
    )
    assert validation is not None
    assert summary["train_images"] == 136
    assert summary["validation_images"] == 64
    assert summary["test_images"] == 40
    assert summary["backend"] == BACKEND
    assert 1 <= summary["inference_blocks"] <= model.num_blocks
    assert len(summary["block_history"]) == model.num_blocks == 5
    name = recipes.output_name("cifar100", "greedy_ce")
    assert name == f"cifar100_{BACKEND}_greedy_ce"
    with open(os.path.join(output_dir, f"{name}.json")) as f:
        assert json.load(f)["test_accuracy"] == summary["test_accuracy"]
    restored = keras.saving.load_model(
        os.path.join(output_dir, f"{name}.keras")
    )
    # The model takes raw 0-255 images: it normalises them itself.
    images = np.full((2, 32, 32, 3), 128.0, "float32")
    np.testing.assert_allclose(
        restored.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="cache_prefix"):
        recipes.run(
            "cifar100",
            dict(settings, mode="end_to_end", cache_prefix=True),
        )

    # The depth chosen on the validation split (the blocks after the best
    # one by one are not trained), then a fresh network fit on all 200
    # training images up to that depth.
    model, summary, _, validation = recipes.run(
        "cifar100",
        dict(settings, refit_selected_depth=True, depth_patience=1),
        verbose=0,
    )
    selection = summary["selection"]
    depth = selection["inference_blocks"]
    assert depth <= selection["trained_blocks"] <= min(depth + 1, 5)
    assert summary["trained_blocks"] is None
    assert validation is None
    assert summary["train_images"] == 200
    assert selection["train_images"] == 136
    assert selection["validation_images"] == summary["validation_images"] == 64
    assert summary["validation_accuracy"] == selection["validation_accuracy"]
    assert model.inference_blocks == summary["inference_blocks"] == depth
    trained = [b for b in summary["block_history"] if b.get("loss")]
    assert len(trained) == depth
    assert summary["wall_time_s"] >= selection["wall_time_s"]
    with pytest.raises(ValueError, match="refit_selected_depth"):
        recipes.run(
            "cifar100",
            dict(settings, refit_selected_depth=True, select_depth=None),
        )

"""Smoke tests of the example scripts (`examples/*.py --quick`)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_dib.testing.test_case import shared_data_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


def _shared_dir(dataset):
    shared = shared_data_dir()
    path = shared and os.path.join(shared, dataset)
    return path if path and os.path.isdir(path) else None


def _gtsrb_dir():
    return _shared_dir("gtsrb")


def _run_example(script, arguments):
    """Runs `examples/<script>` on this backend; returns the process."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script)] + arguments,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.large
@pytest.mark.backend_free  # flag parsing and checks, before any training
def test_help_lists_flags_and_bad_epochs_are_refused(tmp_path):
    completed = _run_example("gtsrb.py", ["--help"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    for flag in ("--epochs_per_block", "--mode", "--data_dir", "--quick"):
        assert flag in completed.stdout, flag
    output_dir = tmp_path / "run"
    completed = _run_example(
        "gtsrb.py", ["--epochs_per_block=0", f"--output_dir={output_dir}"]
    )
    assert completed.returncode != 0
    assert "`epochs_per_block` should be a positive integer" in (
        completed.stderr
    )
    assert not output_dir.exists()


@pytest.mark.large
@pytest.mark.backend_free
@pytest.mark.parametrize("script", ["cifar10.py", "cifar100.py"])
def test_cifar_help(script):
    # The CIFAR scripts share gtsrb.py's flags (`examples/common.py`); the
    # training they run is `keras_dib.recipes.run`, tested in-process on a
    # CIFAR-100 archive (tests/recipes_test.py) and through cifar10.py on
    # the real data below.
    completed = _run_example(script, ["--help"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    for flag in ("--epochs_per_block", "--mode", "--data_dir", "--quick"):
        assert flag in completed.stdout, flag


@pytest.mark.large
@pytest.mark.skipif(_gtsrb_dir() is None, reason="no shared GTSRB data")
def test_gtsrb_quick(tmp_path):
    output_dir = str(tmp_path / "run")
    completed = _run_example(
        "gtsrb.py",
        [
            "--quick",
            f"--data_dir={_gtsrb_dir()}",
            f"--output_dir={output_dir}",
            # Kept short: alpha=2 needs no eigendecomposition (a faster
            # compile), and 4 epochs a block (instead of --quick's 3) let
            # the batch-normalization moving averages settle enough for
            # the test accuracy to be clearly above chance.
            "--alpha=2",
            "--epochs_per_block=4",
            # The head and validation flags must reach the model and the
            # summary (small values: they barely lengthen the run; heads
            # pooled to 8x8 before their convolution make it much shorter,
            # on torch above all).
            "--head_conv_filters=4",
            "--head_hidden_units=8",
            "--head_downsample_size=8",
            "--validation_size=300",
            "--verbose=0",
        ],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        # Quiet by default: none of TensorFlow's start-up lines (oneDNN,
        # CUDA probes) nor absl's INFO lines.
        for noise in ("oneDNN", "cuda", "cuInit", "I0000", "xla_bridge"):
            assert noise not in completed.stderr, completed.stderr[-2000:]
    assert os.path.isfile(
        os.path.join(output_dir, f"gtsrb_{BACKEND}_greedy_dib.keras")
    )
    with open(
        os.path.join(output_dir, f"gtsrb_{BACKEND}_greedy_dib.json")
    ) as f:
        summary = json.load(f)
    assert summary["backend"] == keras.backend.backend()
    assert summary["mode"] == "greedy_dib"
    assert summary["settings"]["quick"] is True
    # --quick's settings, except the flags given explicitly.
    assert summary["settings"]["width"] == 8
    assert summary["settings"]["epochs_per_block"] == 4
    assert summary["settings"]["alpha"] == 2
    # No --depth: the architecture's default (VGG-11).
    assert summary["settings"]["depth"] == 11
    assert summary["model"].startswith("VGG-11-BN width 8")
    assert summary["train_images"] == 2000
    assert summary["test_images"] == 1000
    # Whole GTSRB tracks are held out, so at least the requested number.
    assert summary["validation_images"] >= 300
    # A fraction of the validation images, better than chance.
    correct = summary["validation_accuracy"] * summary["validation_images"]
    assert correct == pytest.approx(round(correct), abs=1e-2)
    assert summary["validation_accuracy"] > 1.0 / 43
    # Greedy, no augmentation: the prefix cache is on by default.
    assert summary["settings"]["cache_prefix"] is True
    # Validation metrics were recorded after every epoch of every block.
    assert all(
        len(block["val_accuracy"]) == 4 for block in summary["block_history"]
    )
    model = keras.saving.load_model(
        os.path.join(output_dir, f"gtsrb_{BACKEND}_greedy_dib.keras")
    )
    head_config = model.training_heads[0].get_config()
    assert head_config["conv_filters"] == 4
    assert head_config["hidden_units"] == 8
    assert head_config["downsample_size"] == 8
    assert summary["settings"]["head_downsample_size"] == 8
    # One history per greedy block (VGG-11 has 5 stages).
    assert len(summary["block_history"]) == 5
    # Better than chance (1/43) on the held-out test images.
    assert summary["test_accuracy"] > 1.0 / 43


@pytest.mark.large
@pytest.mark.skipif(_shared_dir("cifar10") is None, reason="no CIFAR-10")
def test_cifar10_quick(tmp_path):
    # The JPEG copy of CIFAR-10 in the development data folder.
    dataset, mode, num_classes = "cifar10", "greedy_dib", 10
    data_dir = _shared_dir("cifar10")
    output_dir = str(tmp_path / "run")
    completed = _run_example(
        f"{dataset}.py",
        [
            "--quick",
            f"--data_dir={data_dir}",
            f"--output_dir={output_dir}",
            f"--mode={mode}",
            # The smallest run that still goes through every stage.
            "--train_size=256",
            "--test_size=40",
            "--epochs_per_block=1",
            "--epochs=1",
            "--alpha=2",
            "--verbose=0",
        ],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    with open(
        os.path.join(output_dir, f"{dataset}_{BACKEND}_{mode}.json")
    ) as f:
        summary = json.load(f)
    assert summary["mode"] == mode
    assert summary["backend"] == keras.backend.backend()
    assert summary["settings"]["quick"] is True
    assert summary["train_images"] == 256
    assert summary["test_images"] == 40
    # A fraction of the 40 test images.
    correct = summary["test_accuracy"] * 40
    assert correct == pytest.approx(round(correct), abs=1e-2)
    # VGG-11 cut per stage (--quick): 5 greedy blocks.
    assert len(summary["block_history"]) == 5
    model = keras.saving.load_model(
        os.path.join(output_dir, f"{dataset}_{BACKEND}_{mode}.keras")
    )
    images = np.zeros((2, 32, 32, 3), "float32")
    assert model.predict(images, verbose=0).shape == (2, num_classes)


@pytest.mark.backend_free
def test_quick_runs_keep_the_full_batch_size():
    # --quick is a smoke run on 2,000 images: it keeps a batch of 128
    # instead of the small-data default of 32 (`recipes.default_batch_size`).
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import common
    finally:
        sys.path.pop(0)
    assert common.QUICK["batch_size"] == 128
    assert common.QUICK["train_size"] < common.SMALL_TRAINING_SET

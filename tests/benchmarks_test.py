"""Smoke tests of `benchmarks/memory.py`, `speed.py` and `accuracy.py`.

Each script runs in a subprocess on the test's backend with a tiny setting
(width 4, block 1 and end to end, batch 16, two steps) and writes into a
temporary folder; the tests check the JSON lines' fields and numbers and
that the plot was written. On TensorFlow and torch the memory benchmark
reports the RSS only: XLA's memory analysis of the train step is JAX-only
(its fields are null there, which is checked).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_dib.testing.test_case import shared_data_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--width=4", "--blocks=1", "--steps=2"]


def _data_flags():
    """Real GTSRB when the shared copy is there, else synthetic images."""
    shared = shared_data_dir()
    gtsrb = shared and os.path.join(shared, "gtsrb")
    if gtsrb and os.path.isdir(gtsrb):
        return ["--data=gtsrb", f"--data_dir={gtsrb}"]
    return ["--data=synthetic"]


def _script(script, flags):
    """Runs `benchmarks/<script>` with `flags` on the test's backend."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *flags],
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=keras.backend.backend()),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run(script, flags, output_dir):
    completed = _script(script, [*flags, f"--output_dir={output_dir}"])
    assert completed.returncode == 0, completed.stderr[-4000:]
    name = script.replace(".py", "")
    with open(os.path.join(output_dir, f"{name}.jsonl")) as f:
        records = [json.loads(line) for line in f]
    printed = [
        json.loads(line)
        for line in completed.stdout.splitlines()
        if line.startswith("{")
    ]
    # One printed line per configuration, the same as appended.
    assert [r["stage"] for r in printed] == [r["stage"] for r in records]
    assert os.path.isfile(os.path.join(output_dir, f"{name}_cpu.png"))
    return records


def _check_common(record, benchmark):
    assert record["benchmark"] == benchmark
    assert record["backend"] == keras.backend.backend()
    assert record["setting"] == "cpu"
    assert record["model"].startswith("VGG-11-BN width 4 (8 blocks")
    assert record["cpu_count"] >= 1
    assert record["versions"]["keras"] == keras.__version__


@pytest.mark.large
def test_memory(tmp_path):
    output_dir = str(tmp_path / "memory")
    # The simultaneous configuration on JAX only (the benchmark's backend;
    # elsewhere it is the same `fit` path, and CI time is counted).
    jax = keras.backend.backend() == "jax"
    records = _run(
        "memory.py",
        TINY + ["--batch_sizes=16", f"--simultaneous={jax}"] + _data_flags(),
        output_dir,
    )
    stages = ["end_to_end", "block_1"] + ["simultaneous"] * jax
    assert [r["stage"] for r in records] == stages
    end_to_end, block = records[:2]
    for record in records:
        _check_common(record, "memory")
        assert record["batch_size"] == 16
        assert record["steps"] == 2
        assert set(record["method"]) == {
            "training",
            "device_peak",
            "xla",
            "rss_compile",
            "rss_first_step",
            "rss_fit",
            "ru_maxrss",
        }
        assert record["rss_before_training_bytes"] > 0
        assert record["ru_maxrss_minus_before_bytes"] >= 0
        assert record["trainable_parameters"] > 0
        assert record["peak_bytes"] > 0
        assert record["loss_finite"] is True
    assert block["schedule"] == "sequential"
    assert end_to_end["schedule"] == "end_to_end"
    if jax:
        simultaneous = records[2]
        assert simultaneous["schedule"] == "simultaneous"
        # Simultaneous training updates every block and every auxiliary
        # head.
        assert (
            simultaneous["trainable_parameters"]
            > end_to_end["trainable_parameters"]
        )
    # The first stage trains block 1 and its auxiliary head only: fewer
    # parameters than the whole network (at width 4 the head, not the
    # block, holds most of them).
    assert block["trainable_parameters"] < end_to_end["trainable_parameters"]
    # Ratios are to the end-to-end record's numbers (None without one).
    reference = end_to_end["ru_maxrss_minus_before_bytes"]
    for record in records:
        ratio = record["ratio_to_end_to_end"]["ru_maxrss"]
        if reference:
            assert ratio == pytest.approx(
                record["ru_maxrss_minus_before_bytes"] / reference, abs=1e-4
            )
        else:
            assert ratio is None
    if keras.backend.backend() == "jax":
        for record in records:
            xla = record["xla"]
            assert record["peak_method"] == "xla"
            assert record["peak_bytes"] == xla["step"]
            assert xla["temp"] > 0 and xla["argument"] > 0
            assert xla["step"] == (
                xla["argument"] + xla["output"] - xla["alias"] + xla["temp"]
            )
            assert record["compile_seconds"] > 0
            assert record["rss_first_step_peak_minus_before_bytes"] > 0
            assert record["rss_fit_peak_minus_before_bytes"] is None
        # The claim, in XLA's static analysis: training block 1 alone
        # holds less than end-to-end training on the same batch.
        assert 0 < block["ratio_to_end_to_end"]["xla_step"] < 1
    else:
        for record in records:
            assert record["xla"] is None
            assert record["rss_first_step_peak_minus_before_bytes"] is None
            assert record["fit_seconds"] > 0
            assert record["peak_method"] in ("rss_fit", "device_peak")


@pytest.mark.large
def test_speed(tmp_path):
    output_dir = str(tmp_path / "speed")
    records = _run(
        "speed.py",
        TINY
        + [
            "--epochs=2",
            "--repeats=1",
            "--batch_size=16",
            "--batch_sizes=16",
            "--objectives=ce,dib_2",
            "--share_blocks=1",
        ]
        + _data_flags(),
        output_dir,
    )
    throughput = [r for r in records if r["part"] == "throughput"]
    shares = [r for r in records if r["part"] == "renyi_share"]
    assert [(r["stage"], r["objective"]) for r in throughput] == [
        ("block_1", "ce"),
        ("block_1", "dib_2"),
        ("end_to_end", "ce"),
    ]
    for record in throughput:
        _check_common(record, "speed")
        assert record["batch_size"] == 16
        assert record["images_per_s"] > 0
        assert record["step_ms"] > 0
        assert record["step_ms_median"] >= record["step_ms"]
        assert record["cpu_ms_per_step"] > 0
        assert record["first_epoch_s"] > 0
        # One run of two epochs, the second timed: 2 steps of 16 images.
        (epoch_seconds,) = record["epoch_seconds"]
        assert len(epoch_seconds) == 2
        assert record["images_per_s"] == pytest.approx(
            32 / epoch_seconds[1], rel=0.01
        )
        assert len(record["one_minute_load_per_run"]) == 1
        (fit_seconds,) = record["fit_seconds"]
        assert fit_seconds >= sum(epoch_seconds)
    assert len(shares) == 1
    share = shares[0]
    _check_common(share, "speed")
    assert share["alpha"] == 2.0 and share["block"] == 1
    assert share["dib_step_ms"] > 0 and share["ce_step_ms"] > 0
    # The same measurements as the throughput lines of block 1.
    assert share["ce_step_ms"] == throughput[0]["step_ms"]
    assert share["dib_step_ms"] == throughput[1]["step_ms"]
    assert share["ce_cpu_ms_per_step"] == throughput[0]["cpu_ms_per_step"]
    assert share["renyi_share_cpu_time"] < 1
    assert share["renyi_share"] == pytest.approx(
        (share["dib_step_ms"] - share["ce_step_ms"]) / share["dib_step_ms"],
        abs=1e-3,
    )


def _gtsrb_dir():
    shared = shared_data_dir()
    gtsrb = shared and os.path.join(shared, "gtsrb")
    return gtsrb if gtsrb and os.path.isdir(gtsrb) else None


@pytest.mark.large
@pytest.mark.skipif(_gtsrb_dir() is None, reason="no shared GTSRB data")
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the accuracy benchmark runs on JAX (the GPU machine's backend); "
    "the schedules themselves are tested on every backend in tests/models",
)
def test_accuracy_resnet_simultaneous(tmp_path):
    """ResNet-18 rows: simultaneous DIB and end to end, then a re-plot."""
    results_dir = str(tmp_path / "accuracy")
    command = [
        f"--data_dir={_gtsrb_dir()}",
        f"--results_dir={results_dir}",
        "--architecture=resnet",
        "--width=4",
        "--train_size=256",
        "--test_size=128",
        "--epochs=1",
        "--verbose=0",
    ]
    completed = _script(
        "accuracy.py", command + ["--modes=simultaneous_dib,end_to_end"]
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    with open(os.path.join(results_dir, "accuracy_cpu.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["mode"] for r in records] == ["simultaneous_dib", "end_to_end"]
    simultaneous, end_to_end = records
    for record in records:
        assert (
            record["model"] == "ResNet-18 width 4 (8 blocks, granularity block)"
        )
        assert record["backend"] == keras.backend.backend()
        assert record["train_images"] == 256 and record["test_images"] == 128
        # A fraction of the 128 test images.
        correct = record["test_accuracy"] * 128
        assert correct == pytest.approx(round(correct), abs=1e-2)
        assert record["settings"]["epochs"] == 1
        # Only the sequential greedy modes may cache the frozen prefix.
        assert record["settings"]["cache_prefix"] is False
    # Every block's head was trained and evaluated; the last one is the
    # network's own classifier.
    assert len(simultaneous["block_test_accuracy"]) == 8
    assert simultaneous["block_test_accuracy"][-1] == pytest.approx(
        simultaneous["test_accuracy"], abs=1e-4
    )
    assert end_to_end["block_test_accuracy"] is None
    # Test accuracy after every epoch (one here) against training time.
    for record in records:
        ((seconds, accuracy, block),) = record["epoch_test_curve"]
        assert 0 < seconds <= record["wall_time_s"] + 0.01
        assert block == 1
        # The last epoch's evaluation is the final model's.
        assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-4)
        reached = record["seconds_to_test_accuracy"]
        assert set(reached) == {"0.8", "0.9", "0.95"}
        for threshold, value in reached.items():
            assert value == (seconds if accuracy >= float(threshold) else None)
    assert os.path.isfile(os.path.join(results_dir, "accuracy_cpu.png"))
    # Re-plotting keeps only full-training-set records: none here.
    completed = _script(
        "accuracy.py",
        command + ["--plot_variants=baseline", "--plot_name=again.png"],
    )
    assert completed.returncode != 0
    assert "No full-data test records" in completed.stderr
    # An unknown mode is refused before any training.
    completed = _script(
        "accuracy.py", command + ["--modes=greedy_dib,backprop"]
    )
    assert completed.returncode != 0
    assert "backprop" in completed.stderr


def test_bn_recalibration_sets_exact_statistics():
    """`benchmarks/bn_recalibration.py`: batch norm gets its inputs' moments."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bn_recalibration",
        os.path.join(ROOT, "benchmarks", "bn_recalibration.py"),
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conv = keras.layers.Conv2D(3, 3, padding="same")
    norm = keras.layers.BatchNormalization()
    relu = keras.layers.ReLU()
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(300, 6, 6, 2))
    x = x.astype("float32")
    outputs = module._recalibrate([conv, norm, relu], x)
    # NumPy reference: the moments of the convolution's outputs.
    conv_out = keras.ops.convert_to_numpy(conv(x)).reshape(-1, 3)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(norm.moving_mean),
        conv_out.mean(0),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(norm.moving_variance),
        conv_out.var(0),
        rtol=1e-4,
    )
    # After recalibration the normalized features have zero mean and unit
    # variance per channel (before the ReLU: gamma 1, beta 0).
    normalized = keras.ops.convert_to_numpy(norm(conv(x), training=False))
    normalized = normalized.reshape(-1, 3)
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalized.std(0), 1.0, atol=1e-2)
    assert outputs.shape == (300, 6, 6, 3)
    assert outputs.min() >= 0

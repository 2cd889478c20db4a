import os
import subprocess
import sys

import keras
import pytest

from keras_dib.testing import TestCase

pytestmark = pytest.mark.large

SCRIPT = r"""
import os, sys
import numpy as np
import keras
import keras_dib

def run(parallel):
    keras.utils.set_random_seed(0)
    if parallel:
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices)
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=64)
    model = keras_dib.build_vgg(11, num_classes=3, input_shape=(32, 32, 3),
                                width=4, granularity="stage")
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras_dib.DIB(alpha=2.0, beta=0.01))
    model.fit(x, y, batch_size=16, epochs=[1, 1, 0, 0, 1], verbose=0,
              shuffle=False)
    out = model.predict(x, verbose=0)
    keras.distribution.set_distribution(None)
    return out

single = run(False)
parallel = run(True)
np.testing.assert_allclose(parallel, single, atol=1e-4, rtol=1e-4)
print("MATCH")
"""


# TensorFlow: the same greedy fit under tf.distribute.MirroredStrategy over
# two logical CPU devices (declared before TensorFlow initialises, hence the
# subprocess). The model is built and compiled in `strategy.scope()`; `fit`
# runs inside and outside it (the per-block optimizers must still be
# mirrored). The objective adds a per-sample regulariser, which must be
# scaled per replica like the cross-entropy. No batch normalization (in the
# blocks, nor in the heads' convolutions: head_conv_filters=None) and no
# Gram-matrix term: per-replica batch statistics and per-replica Gram
# matrices (DIB) are other estimators than the full batch's.
MIRRORED_SCRIPT = r"""
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras
import keras_dib
from keras import ops


@keras.saving.register_keras_serializable(package="distribution_test")
class SquaredFeatures(keras_dib.losses.LocalObjective):
    def regularization(self, inputs, block_inputs, features, y_true):
        return ops.mean(ops.square(features))


def run(strategy, fit_in_scope):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=32)
    with strategy.scope():
        model = keras_dib.build_vgg(11, num_classes=3, input_shape=(32, 32, 3),
                                    width=4, granularity="stage",
                                    batch_norm=False, head_conv_filters=None)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=SquaredFeatures(beta=0.1))
    fit = lambda: model.fit(x, y, batch_size=8, epochs=[1, 1, 0, 0, 1],
                            verbose=0, shuffle=False)
    if fit_in_scope:
        with strategy.scope():
            history = fit()
    else:
        history = fit()
    assert history.history["block"] == [0, 1, 4], history.history
    return model.get_weights(), history.history


single_weights, single = run(tf.distribute.get_strategy(), True)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
for fit_in_scope in (True, False):
    weights, history = run(strategy, fit_in_scope)
    for key in ("loss", "cross_entropy", "regularization"):
        np.testing.assert_allclose(history[key], single[key], atol=1e-5,
                                   rtol=1e-5, err_msg=key)
    assert len(weights) == len(single_weights)
    for actual, expected in zip(weights, single_weights):
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
assert any(not np.allclose(w, 0.0) for w in weights)
print("MATCH")
"""


def _assert_script_matches(test, script, **environment):
    """Runs `script` in a fresh Python with `environment`; expects MATCH."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, **environment),
        capture_output=True,
        text=True,
        timeout=600,
    )
    test.assertEqual(result.returncode, 0, result.stderr[-3000:])
    test.assertIn("MATCH", result.stdout)


class DataParallelTest(TestCase):
    def test_greedy_fit_on_two_devices_matches_one(self):
        if keras.backend.backend() != "jax":
            pytest.skip("keras.distribution.DataParallel runs on JAX")
        _assert_script_matches(
            self,
            SCRIPT,
            KERAS_BACKEND="jax",
            XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
            + " --xla_force_host_platform_device_count=2",
        )


class MirroredStrategyTest(TestCase):
    def test_greedy_fit_on_two_replicas_matches_one(self):
        if keras.backend.backend() != "tensorflow":
            pytest.skip("tf.distribute.MirroredStrategy runs on TensorFlow")
        _assert_script_matches(
            self,
            MIRRORED_SCRIPT,
            KERAS_BACKEND="tensorflow",
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
        )

import os
import subprocess
import sys

import keras
import pytest

from keras_dib.testing import TestCase

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


class DataParallelTest(TestCase):
    def test_greedy_fit_on_two_devices_matches_one(self):
        if keras.backend.backend() != "jax":
            pytest.skip("keras.distribution.DataParallel runs on JAX")
        env = dict(
            os.environ,
            KERAS_BACKEND="jax",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        )
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("MATCH", result.stdout)

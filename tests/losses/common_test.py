"""Tests of keras_dib.losses._common: the shared argument checks."""

import numpy as np
import pytest

from keras_dib.losses import DIB
from keras_dib.losses import HSICBottleneck
from keras_dib.losses import _common
from keras_dib.testing import TestCase


class CheckNonNegativeTest(TestCase):
    def test_accepts_python_and_numpy_reals(self):
        for value in (0, 0.01, np.float32(0.01), np.float64(2.5), np.int64(3)):
            self.assertEqual(
                _common.check_non_negative("beta", value), float(value)
            )

    def test_refuses_bools_non_numbers_and_bad_values(self):
        for value in (
            True,
            np.bool_(True),
            "0.1",
            None,
            np.array([0.1]),
            -0.5,
            np.float32(-1.0),
            float("nan"),
            np.float32("inf"),
        ):
            with pytest.raises(ValueError, match="`beta` should be"):
                _common.check_non_negative("beta", value)

    def test_losses_accept_numpy_weights(self):
        loss = DIB(alpha=np.float32(1.01), beta=np.float32(0.01))
        self.assertIsInstance(loss.beta, float)
        self.assertAlmostEqual(loss.beta, 0.01, places=6)
        HSICBottleneck(beta=np.float64(0.1), gamma=np.float32(2.0))

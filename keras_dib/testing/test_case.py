"""One TestCase base for keras_dib's tests: closeness, serialization, saving."""

import os
import tempfile
import unittest

import keras
import numpy as np


def shared_data_dir():
    """Path of the read-only real data sets (`../shared/data`), or None.

    Looks at `$KERAS_DIB_SHARED_DATA` first, then at `shared/data` beside and
    above the repository root.

    Returns:
        The folder as a string, or None if it cannot be found.
    """
    env = os.environ.get("KERAS_DIB_SHARED_DATA")
    if env:
        return env if os.path.isdir(env) else None
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for candidate in (
        os.path.join(root, "..", "shared", "data"),
        os.path.join(root, "shared", "data"),
    ):
        if os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return None


class TestCase(unittest.TestCase):
    """Base class with NumPy-closeness and Keras round-trip assertions."""

    def setUp(self):
        super().setUp()
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(1337)

    def get_temp_dir(self):
        temp_dir = tempfile.mkdtemp()
        self.addCleanup(
            lambda: __import__("shutil").rmtree(temp_dir, ignore_errors=True)
        )
        return temp_dir

    def assertAllClose(self, actual, expected, atol=1e-6, rtol=1e-6, msg=None):
        actual = keras.ops.convert_to_numpy(actual)
        expected = keras.ops.convert_to_numpy(expected)
        np.testing.assert_allclose(
            actual, expected, atol=atol, rtol=rtol, err_msg=msg or ""
        )

    def assertAllFinite(self, value, msg=None):
        for leaf in keras.tree.flatten(value):
            array = keras.ops.convert_to_numpy(leaf)
            self.assertTrue(
                np.all(np.isfinite(array)), msg or f"not finite: {array}"
            )

    def run_serialization_test(self, instance):
        """Checks that get_config/from_config and serialize round-trip."""
        config = instance.get_config()
        revived = instance.__class__.from_config(config)
        self.assertEqual(config, revived.get_config())
        serialized = keras.saving.serialize_keras_object(instance)
        revived = keras.saving.deserialize_keras_object(serialized)
        self.assertEqual(config, revived.get_config())
        self.assertIs(type(revived), type(instance))
        return revived

    def run_model_saving_test(self, model, inputs, atol=1e-6):
        """Saves `model` to `.keras`, reloads it, compares predictions."""
        expected = model.predict(inputs, verbose=0)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertIs(type(restored), type(model))
        actual = restored.predict(inputs, verbose=0)
        self.assertAllClose(actual, expected, atol=atol, rtol=atol)
        return restored

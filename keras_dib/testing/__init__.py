"""Test helpers shared by keras_dib's own tests (and usable by users')."""

from keras_dib.testing.test_case import TestCase
from keras_dib.testing.test_case import shared_data_dir

__all__ = ["TestCase", "shared_data_dir"]

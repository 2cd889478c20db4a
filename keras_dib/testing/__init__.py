"""Test helpers shared by keras_dib's own tests (and usable by users')."""

from keras_dib.testing.test_case import TestCase

__all__ = ["TestCase"]

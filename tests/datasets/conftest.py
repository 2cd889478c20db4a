"""Shared fixtures: the real data sets (loaded once), an isolated cache."""

import os

import pytest

from keras_dib.testing.test_case import shared_data_dir
from tests import shared_data


def _shared(name):
    root = shared_data_dir()
    path = os.path.join(root, name) if root else None
    if not path or not os.path.isdir(path):
        pytest.skip(f"real data ../shared/data/{name} not available")
    return path


@pytest.fixture(scope="session")
def gtsrb_dir():
    return _shared("gtsrb")


@pytest.fixture(scope="session")
def cifar10_dir():
    return _shared("cifar10")


@pytest.fixture(scope="session")
def real_gtsrb(gtsrb_dir):
    # The copy the model and export tests decode too (once per process).
    return shared_data.gtsrb()


@pytest.fixture(scope="session")
def real_cifar10(cifar10_dir):
    from keras_dib.datasets import load_cifar10

    return load_cifar10(cifar10_dir, cache=False)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Keeps every test away from the user's ~/.keras and data folders."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KERAS_DIB_DATA", raising=False)

"""The real data in ../shared/data: counts, shapes, dtypes, labels, balance."""

import numpy as np
import pytest

import keras_dib.datasets
from keras_dib.datasets import gtsrb_data
from keras_dib.datasets import pipeline

pytestmark = [pytest.mark.large, pytest.mark.backend_free]


def test_gtsrb_counts_shapes_dtypes(real_gtsrb):
    (x_train, y_train, tracks), (x_test, y_test) = real_gtsrb
    assert x_train.shape == (39209, 32, 32, 3)
    assert x_test.shape == (12630, 32, 32, 3)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == tracks.dtype == np.int32
    assert y_train.shape == tracks.shape == (39209,)
    assert y_test.shape == (12630,)
    assert set(np.unique(y_train)) == set(range(43))
    assert set(np.unique(y_test)) == set(range(43))
    # Not constant images: real pixels.
    assert 30 < x_train.mean() < 200 and x_train.std() > 20


def test_gtsrb_class_balance_and_tracks(real_gtsrb):
    (_, y_train, tracks), (_, y_test) = real_gtsrb
    counts = np.bincount(y_train, minlength=43)
    # GTSRB is imbalanced: 210 to 2250 training images per class.
    assert counts.min() == 210 and counts.max() == 2250
    assert counts.sum() == 39209
    assert np.bincount(y_test, minlength=43).min() >= 60
    # Track ids encode the class, and every track has 30 images.
    np.testing.assert_array_equal(tracks // 10000, y_train)
    # 1307 tracks of 30 images of one physical sign, one of them with 29.
    _, per_track = np.unique(tracks, return_counts=True)
    assert len(per_track) == 1307
    assert np.sum(per_track == 30) == 1306 and per_track.min() == 29


def test_gtsrb_validation_split_by_track(real_gtsrb):
    (_, y_train, tracks), _ = real_gtsrb
    train_idx, val_idx = pipeline.group_split(y_train, tracks, 0.1, seed=0)
    assert len(train_idx) + len(val_idx) == len(y_train)
    assert not set(tracks[train_idx]) & set(tracks[val_idx])
    assert set(y_train[val_idx]) == set(range(43))  # stratified by class
    assert 0.07 < len(val_idx) / len(y_train) < 0.13


def test_cifar10_jpeg_copy(real_cifar10):
    (x_train, y_train), (x_test, y_test) = real_cifar10
    assert x_train.shape == (50000, 32, 32, 3)
    assert x_test.shape == (10000, 32, 32, 3)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int32
    assert y_train.min() == 0 and y_train.max() == 9
    np.testing.assert_array_equal(np.bincount(y_train), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    # Known CIFAR-10 channel means (official: 125.3, 123.0, 113.9), up to
    # the JPEG re-encoding.
    mean, std = pipeline.channel_mean_std(x_train)
    np.testing.assert_allclose(mean, [125.3, 123.0, 113.9], atol=1.5)
    np.testing.assert_allclose(std, [63.0, 62.1, 66.7], atol=2.0)


def test_gtsrb_pipeline_on_real_data(real_gtsrb, monkeypatch):
    monkeypatch.setattr(gtsrb_data, "load_gtsrb", lambda data_dir: real_gtsrb)
    train, val, test = keras_dib.datasets.gtsrb(
        batch_size=256, augment=True, validation_split=0.1, backend="numpy"
    )
    x, y = train[0]
    assert x.shape == (256, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (256,) and y.dtype == np.int32
    assert abs(float(x.mean())) < 0.5  # standardised with train statistics
    num_val = sum(len(val[i][1]) for i in range(len(val)))
    assert len(train) == (39209 - num_val) // 256  # remainder dropped
    assert sum(len(test[i][1]) for i in range(len(test))) == 12630

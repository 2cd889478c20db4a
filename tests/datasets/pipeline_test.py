"""Input pipelines: tf.data == PyDataset, augmentation, splits, arguments."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_dib.datasets
from keras_dib.datasets import make_pipeline
from keras_dib.datasets import pipeline


def _data(num_samples=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (num_samples, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, num_samples).astype(np.int32)
    return x, y


def _tf_epochs(dataset, num_epochs):
    return [
        [(np.asarray(x), np.asarray(y)) for x, y in dataset]
        for _ in range(num_epochs)
    ]


def _numpy_epochs(dataset, num_epochs):
    epochs = []
    for _ in range(num_epochs):
        epochs.append([dataset[i] for i in range(len(dataset))])
        dataset.on_epoch_end()
    return epochs


CONFIGS = {
    "train_augment_flip": dict(training=True, augment=True, flip=True),
    "train_augment": dict(training=True, augment=True),
    "train_plain": dict(training=True),
    "eval": dict(training=False, augment=True, flip=True),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_numpy_path_equals_tf_data_path(name):
    pytest.importorskip("tensorflow")
    x, y = _data()
    kwargs = dict(
        batch_size=8, seed=7, mean=[120.0, 110.0, 100.0], std=[60, 61, 62]
    )
    kwargs.update(CONFIGS[name])
    tf_batches = _tf_epochs(
        make_pipeline(x, y, backend="tensorflow", **kwargs), 2
    )
    np_batches = _numpy_epochs(
        make_pipeline(x, y, backend="numpy", **kwargs), 2
    )
    for tf_epoch, np_epoch in zip(tf_batches, np_batches):
        assert len(tf_epoch) == len(np_epoch)
        for (tf_x, tf_y), (np_x, np_y) in zip(tf_epoch, np_epoch):
            assert tf_x.dtype == np_x.dtype == np.float32
            assert tf_y.dtype == np_y.dtype == np.int32
            np.testing.assert_array_equal(tf_x, np_x)
            np.testing.assert_array_equal(tf_y, np_y)
    sizes = [len(b[1]) for b in np_batches[0]]
    if CONFIGS[name]["training"]:
        assert sizes == [8] * 6  # 50 // 8, remainder dropped
        # Reshuffled every epoch.
        assert not np.array_equal(np_batches[0][0][1], np_batches[1][0][1])
    else:
        assert sizes == [8] * 6 + [2]  # every sample kept, in order
        np.testing.assert_array_equal(
            np.concatenate([b[1] for b in np_batches[0]]), y
        )


def test_deterministic_for_a_seed():
    x, y = _data()
    first = _numpy_epochs(
        make_pipeline(
            x, y, 8, augment=True, flip=True, seed=3, backend="numpy"
        ),
        2,
    )
    again = _numpy_epochs(
        make_pipeline(
            x, y, 8, augment=True, flip=True, seed=3, backend="numpy"
        ),
        2,
    )
    other = _numpy_epochs(
        make_pipeline(
            x, y, 8, augment=True, flip=True, seed=4, backend="numpy"
        ),
        1,
    )
    for a, b in zip(first, again):
        for (ax, ay), (bx, by) in zip(a, b):
            np.testing.assert_array_equal(ax, bx)
            np.testing.assert_array_equal(ay, by)
    assert not np.array_equal(first[0][0][0], other[0][0][0])


def test_augmentation_is_pad_crop_and_optional_flip():
    x, y = _data(16)
    for flip in (False, True):
        dataset = make_pipeline(
            x, y, 16, augment=True, flip=flip, seed=5, backend="numpy"
        )
        images, _ = dataset[0]
        assert images.shape == (16, 32, 32, 3)
        indices, offsets, flips = dataset.plan.batch(0, 0)
        assert flips.any() == flip
        padded = np.pad(x[indices], ((0, 0), (4, 4), (4, 4), (0, 0)))
        for k in range(16):
            dy, dx = offsets[k]
            expected = padded[k, dy : dy + 32, dx : dx + 32]
            if flips[k]:
                expected = expected[:, ::-1]
            np.testing.assert_array_equal(images[k], expected)
    # Offsets cover [0, 8], and 4 (no shift) is the identity.
    assert set(np.unique(dataset.plan.epoch(0)[1])) <= set(range(9))
    no_shift = pipeline.augment_numpy(
        x[:2], np.full((2, 2), 4, np.int32), np.zeros(2, bool)
    )
    np.testing.assert_array_equal(no_shift, x[:2])


def test_normalizations(tmp_path):
    from tests.datasets import fakes

    fakes.write_cifar10(str(tmp_path), per_batch=20)
    (x_train, _), _ = keras_dib.datasets.load_cifar10(str(tmp_path))
    for normalization, check in (
        ("unit", lambda v: 0 <= v.min() and v.max() <= 1),
        (None, lambda v: v.max() > 200 and float(v.max()).is_integer()),
    ):
        train, test = keras_dib.datasets.cifar10(
            str(tmp_path),
            batch_size=100,
            normalization=normalization,
            backend="numpy",
            shuffle=False,
        )
        assert check(train[0][0]) and check(test[0][0])
    train, _ = keras_dib.datasets.cifar10(
        str(tmp_path), batch_size=100, backend="numpy"
    )
    values = train[0][0]
    np.testing.assert_allclose(values.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(values.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_stratified_split():
    y = np.repeat(np.arange(4), 25)
    train_idx, val_idx = pipeline.stratified_split(y, 0.2, seed=1)
    np.testing.assert_array_equal(np.bincount(y[val_idx]), [5] * 4)
    assert not set(train_idx) & set(val_idx)
    again = pipeline.stratified_split(y, 0.2, seed=1)[1]
    np.testing.assert_array_equal(val_idx, again)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(batch_size=0),
            "`batch_size` should be a positive integer. Received: batch_size=0",
        ),
        (dict(batch_size=2.5), "batch_size=2.5"),
        (dict(validation_split=1.0), r"validation_split=1\.0"),
        (dict(validation_split=-0.1), r"in \[0, 1\)"),
        (dict(normalization="zscore"), "normalization='zscore'"),
        (dict(backend="jax"), "backend='jax'"),
        (dict(seed=-1), "seed=-1"),
    ],
)
def test_bad_arguments_fail_before_loading(kwargs, message):
    for build in (
        keras_dib.datasets.gtsrb,
        keras_dib.datasets.cifar10,
        keras_dib.datasets.cifar100,
    ):
        with pytest.raises(ValueError, match=message):
            build("/nonexistent", **kwargs)


def test_make_pipeline_bad_inputs():
    x, y = _data(10)
    with pytest.raises(ValueError, match="at most the number of training"):
        make_pipeline(x, y, batch_size=11, backend="numpy")
    with pytest.raises(ValueError, match="uint8 images"):
        make_pipeline(x.astype("float32"), y, backend="numpy")
    with pytest.raises(ValueError, match="one label per image"):
        make_pipeline(x, y[:5], backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_model_fit_accepts_the_pipelines(backend):
    if backend == "tensorflow":
        pytest.importorskip("tensorflow")
    x, y = _data(64)
    train = make_pipeline(x, y, 16, augment=True, flip=True, backend=backend)
    test = make_pipeline(x, y, 16, training=False, backend=backend)
    if backend == "numpy":
        train.workers = 2  # batches built in a thread pool
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    history = model.fit(train, epochs=2, validation_data=test, verbose=0)
    assert len(history.history["loss"]) == 2


@pytest.mark.large
@pytest.mark.backend_free
def test_without_tensorflow():
    """`import keras_dib.datasets` and the PyDataset path need no TF."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # as if not installed
        import numpy as np
        import keras_dib.datasets as datasets
        x = np.zeros((20, 32, 32, 3), np.uint8)
        y = np.zeros(20, np.int32)
        ds = datasets.make_pipeline(x, y, 4, augment=True)
        assert type(ds).__name__ == "ArrayBatches", type(ds)
        assert ds[0][0].shape == (4, 32, 32, 3)
        try:
            datasets.make_pipeline(x, y, 4, backend="tensorflow")
        except ImportError as e:
            assert "backend='numpy'" in str(e), e
        else:
            raise AssertionError("no ImportError")
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    if "jax" not in sys.modules and not _importable("jax"):
        env["KERAS_BACKEND"] = "torch"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[
        -3000:
    ]


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None

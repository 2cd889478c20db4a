"""CIFAR-10/100 from the official python format and from image trees."""

import os
import pickle
import zipfile

import numpy as np
import pytest

import keras_dib.datasets
from keras_dib.datasets import cifar
from keras_dib.datasets import load_cifar10
from keras_dib.datasets import load_cifar100
from tests.datasets import fakes

pytestmark = pytest.mark.backend_free


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar10_official_format(tmp_path, as_tar):
    path, rows, labels = fakes.write_cifar10(str(tmp_path), as_tar=as_tar)
    # A known pixel at a known position: image 0 of data_batch_1, row 5,
    # column 7 is data[0, 5*32+7] (red), +1024 (green), +2048 (blue).
    (x_train, y_train), (x_test, y_test) = load_cifar10(
        str(tmp_path), cache=False
    )
    assert x_train.shape == (30, 32, 32, 3) and x_test.shape == (6, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
    position = 5 * 32 + 7
    expected = rows[0, [position, 1024 + position, 2048 + position]]
    np.testing.assert_array_equal(x_train[0, 5, 7], expected)
    np.testing.assert_array_equal(x_train, fakes.rows_to_images(rows[:30]))
    np.testing.assert_array_equal(x_test, fakes.rows_to_images(rows[30:]))
    np.testing.assert_array_equal(y_train, labels[:30])
    np.testing.assert_array_equal(y_test, labels[30:])


def test_cifar10_archive_path_itself(tmp_path):
    path, rows, _ = fakes.write_cifar10(str(tmp_path))
    (x_train, _), _ = load_cifar10(path, cache=False)
    np.testing.assert_array_equal(x_train, fakes.rows_to_images(rows[:30]))


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar100_fine_and_coarse(tmp_path, as_tar):
    _, expected = fakes.write_cifar100(str(tmp_path), as_tar=as_tar)
    (x_train, y_fine), (x_test, y_test) = load_cifar100(
        str(tmp_path), cache=False
    )
    _, (_, y_coarse_test) = load_cifar100(
        str(tmp_path), label_mode="coarse", cache=False
    )
    rows, fine, _ = expected["train"]
    np.testing.assert_array_equal(x_train, fakes.rows_to_images(rows))
    np.testing.assert_array_equal(y_fine, fine)
    np.testing.assert_array_equal(y_test, expected["test"][1])
    np.testing.assert_array_equal(y_coarse_test, expected["test"][2])
    assert x_test.shape == (5, 32, 32, 3)


def test_cifar10_label_out_of_range(tmp_path):
    labels = [[0] * 6] * 6
    labels = [list(b) for b in labels]
    labels[2][3] = 10
    fakes.write_cifar10(str(tmp_path), labels=labels)
    with pytest.raises(ValueError, match=r"data_batch_3.*\[0, 10\).*label=10"):
        load_cifar10(str(tmp_path), cache=False)


def test_cifar10_incomplete_and_corrupt(tmp_path):
    folder, _, _ = fakes.write_cifar10(str(tmp_path), as_tar=False)
    with open(os.path.join(folder, "data_batch_2"), "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueError, match="Corrupt CIFAR batch.*data_batch_2"):
        load_cifar10(str(tmp_path), cache=False)
    os.remove(os.path.join(folder, "data_batch_4"))
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_cifar10(str(tmp_path), cache=False)


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    folder, _, _ = fakes.write_cifar10(str(tmp_path), as_tar=False)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({b"data": os.getcwd}, f)
    with pytest.raises(ValueError, match="refusing to load global"):
        load_cifar10(str(tmp_path), cache=False)


def _write_tree(root, class_names, per_class, as_zip=False, prefix="imgs"):
    """A train/<class>/*.png, test/<class>/*.jpg tree; returns images."""
    rng = np.random.default_rng(1)
    files, expected = {}, {"train": [], "test": []}
    for split, fmt in (("train", "PNG"), ("test", "JPEG")):
        for name in class_names:
            for i in range(per_class):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                ext = "png" if fmt == "PNG" else "jpg"
                rel = f"{prefix}/{split}/{name}/{i:04d}.{ext}"
                files[rel] = fakes.png_bytes(image, fmt)
                expected[split].append((name, image))
    if as_zip:
        with zipfile.ZipFile(os.path.join(root, "tree.zip"), "w") as z:
            for rel, data in files.items():
                z.writestr(rel, data)
    else:
        for rel, data in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    return expected


@pytest.mark.parametrize("as_zip", [False, True])
def test_cifar10_image_tree_uses_official_order(tmp_path, as_zip):
    # Folder names sort differently from the official label order.
    names = list(reversed(fakes.CIFAR10_NAMES))
    expected = _write_tree(str(tmp_path), names, 2, as_zip=as_zip)
    (x_train, y_train), (x_test, y_test) = load_cifar10(
        str(tmp_path), cache=False
    )
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    for name, image in expected["train"]:
        label = fakes.CIFAR10_NAMES.index(name)
        matches = np.flatnonzero(
            np.all(x_train == image, axis=(1, 2, 3))
        )  # PNG is lossless
        assert len(matches) == 1 and y_train[matches[0]] == label
    np.testing.assert_array_equal(np.bincount(y_test), [2] * 10)


def test_cifar10_image_tree_wrong_class_count(tmp_path):
    _write_tree(str(tmp_path), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="Expected 10 class folders"):
        load_cifar10(str(tmp_path), cache=False)


def test_cifar10_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(str(tmp_path / "nowhere"), cache=False)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="No CIFAR-10 data found"):
        load_cifar10(str(tmp_path), cache=False)


def test_corrupt_jpeg_is_named(tmp_path):
    _write_tree(str(tmp_path), fakes.CIFAR10_NAMES, 1)
    bad = tmp_path / "imgs" / "test" / "cat" / "0000.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"Corrupt.*test/cat/0000\.jpg"):
        load_cifar10(str(tmp_path), cache=False)


def test_load_image_folder(tmp_path):
    expected = _write_tree(str(tmp_path), ["b", "a"], 2)
    x, y, class_names = keras_dib.datasets.load_image_folder(
        str(tmp_path / "imgs" / "train")
    )
    assert class_names == ["a", "b"]
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    np.testing.assert_array_equal(x[2], expected["train"][0][1])
    with pytest.raises(ValueError, match="not all one folder below"):
        keras_dib.datasets.load_image_folder(str(tmp_path / "imgs"))


def test_bad_label_mode():
    with pytest.raises(ValueError, match="`label_mode` should be one of"):
        load_cifar100("unused", label_mode="medium")
    with pytest.raises(ValueError, match="label_mode='medium'"):
        keras_dib.datasets.cifar100("unused", label_mode="medium")


def test_cifar10_pipeline_end_to_end(tmp_path):
    fakes.write_cifar10(str(tmp_path), per_batch=20)
    train, val, test = keras_dib.datasets.cifar10(
        str(tmp_path),
        batch_size=8,
        augment=True,
        validation_split=0.2,
        backend="numpy",
    )
    x, y = train[0]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
    assert len(train) == 80 // 8
    assert sum(len(val[i][1]) for i in range(len(val))) == 20
    assert sum(len(test[i][1]) for i in range(len(test))) == 20


def _write_jpeg_copy(root, per_class, archives=("train", "test")):
    """The JPEG copy's archive names over a tiny tree (10 classes)."""
    source = os.path.join(root, "src")
    os.makedirs(source)
    _write_tree(
        source, fakes.CIFAR10_NAMES, per_class, prefix="CIFAR-10-images"
    )
    data = os.path.join(root, "data")
    os.makedirs(data)
    for split in archives:
        name = f"CIFAR-10-images_{split}.zip"
        with zipfile.ZipFile(os.path.join(data, name), "w") as z:
            top = os.path.join(source, "CIFAR-10-images", split)
            for folder, _, files in os.walk(top):
                for file in sorted(files):
                    path = os.path.join(folder, file)
                    z.write(path, os.path.relpath(path, source))
    return data


def test_jpeg_copy_missing_archive_is_named(tmp_path):
    data = _write_jpeg_copy(str(tmp_path), 1, archives=("train",))
    with pytest.raises(FileNotFoundError, match="CIFAR-10-images_test.zip"):
        load_cifar10(data, cache=False)


def test_jpeg_copy_needs_the_official_counts_and_is_not_cached(tmp_path):
    data = _write_jpeg_copy(str(tmp_path), 2)
    with pytest.raises(
        ValueError, match=r"20 train images instead of 50000.*\{0: 2, 1: 2"
    ):
        load_cifar10(data)
    cache_dir = tmp_path / "keras_home" / "datasets" / "keras_dib_cache"
    assert not cache_dir.exists() or not [
        e for e in os.listdir(cache_dir) if e.endswith(".npz")
    ]


def test_official_batches_need_the_official_counts(tmp_path):
    folder, _, _ = fakes.write_cifar10(str(tmp_path), as_tar=False)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        batch[b"batch_label"] = (
            f"training batch {k + 1} of 5" if k < 5 else "testing batch 1 of 1"
        ).encode()
        with open(path, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with pytest.raises(ValueError, match="30 train images instead of 50000"):
        load_cifar10(str(tmp_path))
    arrays = {
        "official": np.asarray(True),
        "y_train": np.repeat(np.arange(10), 5000).astype(np.int32),
        "y_test": np.repeat(np.arange(10), 1000).astype(np.int32),
    }
    cifar._check_complete(arrays, "cifar10", 10, "somewhere")
    arrays["y_test"] = arrays["y_test"][arrays["y_test"] != 3]
    with pytest.raises(ValueError, match=r"no test images of class\(es\) \[3"):
        cifar._check_complete(arrays, "cifar10", 10, "somewhere")

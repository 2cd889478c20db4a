"""TensorFlow Datasets: `from_tfds` and the GTSRB builder, offline.

Catalogue data sets are mocked (`tfds.testing.mock_data`); the GTSRB
builder is prepared from a tiny GTSRB in the official layout (default
tier) and from the real archives in ../shared/data (`large`). Every TFDS
data folder is a temporary one.
"""

import os
import posixpath
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_dib
from keras_dib.datasets import tfds_data
from tests.datasets import fakes

tfds = pytest.importorskip("tensorflow_datasets")
tfds.disable_progress_bar()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture(autouse=True)
def isolated_tfds(tmp_path, monkeypatch):
    """Keeps TFDS away from ~/tensorflow_datasets."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))


def _manual_kwargs(manual_dir):
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    return {"download_config": config}


@pytest.fixture(scope="module")
def fake_gtsrb(tmp_path_factory):
    """A tiny GTSRB (3 classes of 3 tracks of 2 images; 7 test images).

    Prepared once for the module, in a TFDS data folder of its own.
    """
    tmp_path = tmp_path_factory.mktemp("fake_gtsrb")
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    fakes.write_gtsrb(str(manual_dir), as_zip=True)
    data_dir = str(tmp_path / "tfds")
    builder = tfds.builder("gtsrb", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return manual_dir, data_dir


def _examples(images, labels, tracks=None):
    """Order-free view of a split: sorted (label, track, image bytes)."""
    if tracks is None:
        tracks = np.full(len(labels), -1)
    return sorted(
        (int(label), int(track), image.tobytes())
        for image, label, track in zip(images, labels, tracks)
    )


# === The GTSRB builder ===


@pytest.mark.backend_free
def test_gtsrb_is_registered_after_importing_keras_dib():
    builder_cls = tfds.builder_cls("gtsrb")
    assert builder_cls.__module__ == "keras_dib.datasets.tfds_gtsrb"
    assert "gtsrb" in tfds.core.registered.list_imported_builders()


@pytest.mark.backend_free
def test_gtsrb_builder_reads_the_archives_like_load_gtsrb(fake_gtsrb):
    manual_dir, data_dir = fake_gtsrb
    builder = tfds.builder("gtsrb", data_dir=data_dir)
    info = builder.info
    assert info.features["image"].shape == (32, 32, 3)
    assert info.features["label"].num_classes == 43
    assert info.supervised_keys == ("image", "label")
    assert info.splits["train"].num_examples == 18
    assert info.splits["test"].num_examples == 7
    (x_train, y_train, tracks), (x_test, y_test) = (
        keras_dib.datasets.load_gtsrb(str(manual_dir), cache=False)
    )
    for split, expected in (
        ("train", _examples(x_train, y_train, tracks)),
        ("test", _examples(x_test, y_test)),
    ):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        got = _examples(data["image"], data["label"], data["track"])
        assert got == expected, split
    # And through `tfds.load`, prepared data reused (manual folder ignored).
    x, y = tfds.as_numpy(
        tfds.load(
            "gtsrb",
            split="test",
            data_dir=data_dir,
            as_supervised=True,
            batch_size=-1,
        )
    )
    assert _examples(x, y) == _examples(x_test, y_test)


@pytest.mark.backend_free
def test_gtsrb_builder_missing_manual_dir_names_the_expected_files(
    tmp_path,
):
    with pytest.raises(AssertionError, match="GTSRB_Final_Training_Images"):
        tfds.load(
            "gtsrb",
            data_dir=str(tmp_path / "tfds"),
            download_and_prepare_kwargs=_manual_kwargs(tmp_path / "missing"),
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not GTSRB")
    with pytest.raises(
        FileNotFoundError, match="GTSRB32_Final_Training_Images_part1.zip"
    ):
        tfds.load(
            "gtsrb",
            data_dir=str(tmp_path / "tfds"),
            download_and_prepare_kwargs=_manual_kwargs(empty),
        )


def _subset_member(member, data, num_test):
    """The member's bytes in the subset (None: left out)."""
    base = posixpath.basename(member)
    if base == "GT-final_test.csv":
        lines = data().decode().splitlines()[: num_test + 1]
    elif base.startswith("GT-") and "/Final_Training/" in member:
        lines = data().decode().splitlines()
        lines = lines[:1] + [x for x in lines[1:] if x.startswith("00000_")]
    elif base.endswith(".ppm") and "/Final_Test/Images/" in member:
        return data() if int(base[:5]) < num_test else None
    elif base.endswith(".ppm") and "/Final_Training/" in member:
        return data() if base.startswith("00000_") else None
    else:
        return None
    return ("\n".join(lines) + "\n").encode()


def _real_gtsrb_subset(gtsrb_dir, destination, num_test=400):
    """Writes track 0 of every class and some test images of the real data.

    One zip in the official layout, read from the official archives (the
    whole set takes a minute to prepare on a loaded 2-core machine).
    """
    subset = os.path.join(destination, "gtsrb_subset.zip")
    with zipfile.ZipFile(subset, "w") as out:
        for name in sorted(os.listdir(gtsrb_dir)):
            if not name.endswith(".zip"):
                continue
            with zipfile.ZipFile(os.path.join(gtsrb_dir, name)) as archive:
                for member in archive.namelist():
                    data = _subset_member(
                        member, lambda m=member: archive.read(m), num_test
                    )
                    if data is not None:
                        out.writestr(member, data)
    return subset


@pytest.mark.large
@pytest.mark.backend_free
def test_gtsrb_builder_prepares_the_real_archives(tmp_path, gtsrb_dir):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    _real_gtsrb_subset(gtsrb_dir, str(manual_dir))
    (x_train, y_train, tracks), (x_test, y_test) = (
        keras_dib.datasets.load_gtsrb(str(manual_dir), cache=False)
    )
    assert len(np.unique(y_train)) == 43 and len(y_test) == 400
    builder = tfds.builder("gtsrb", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    assert builder.info.splits["train"].num_examples == len(y_train)
    assert builder.info.splits["test"].num_examples == 400
    for split, expected in (
        ("train", _examples(x_train, y_train, tracks)),
        ("test", _examples(x_test, y_test)),
    ):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        got = _examples(data["image"], data["label"], data["track"])
        assert got == expected, split


@pytest.mark.large
@pytest.mark.backend_free
def test_import_keras_dib_then_tfds_registers_gtsrb():
    # `import keras_dib` must not import TensorFlow Datasets (about a
    # second), yet `tfds.load("gtsrb")` must work once it is imported.
    script = (
        "import importlib.util\n"
        "import sys\n"
        "import keras_dib\n"
        "assert 'tensorflow_datasets' not in sys.modules\n"
        "assert importlib.util.find_spec('tensorflow_datasets')\n"
        "import tensorflow_datasets as tfds\n"
        "print(tfds.builder_cls('gtsrb').__module__)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="numpy")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "keras_dib.datasets.tfds_gtsrb"


# === from_tfds ===


@pytest.mark.backend_free
def test_from_tfds_builds_the_library_pipelines(fake_gtsrb):
    _, data_dir = fake_gtsrb
    (train, validation, test), info = keras_dib.datasets.from_tfds(
        "gtsrb",
        data_dir=data_dir,
        batch_size=4,
        augment=True,
        validation_split=0.2,
        backend="numpy",
        with_info=True,
    )
    assert info.features["label"].num_classes == 43
    # 18 training images, 3 classes of 6: 1 a class held out -> 15 -> 3
    # fixed-size batches; validation and test keep every image.
    assert len(train) == 3
    assert len(validation) == 1 and len(validation[0][1]) == 3
    assert sum(len(test[i][1]) for i in range(len(test))) == 7
    x, y = train[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert y.dtype == np.int32
    # Standardised with the training split's statistics.
    all_train = np.concatenate([train[i][0] for i in range(len(train))])
    assert abs(float(all_train.mean())) < 0.5
    # The tf.data path gives the same batches for the same seed.
    tf_train, _, _ = keras_dib.datasets.from_tfds(
        "gtsrb",
        data_dir=data_dir,
        batch_size=4,
        augment=True,
        validation_split=0.2,
        backend="tensorflow",
    )
    for (x_tf, y_tf), i in zip(tf_train, range(len(train))):
        np.testing.assert_array_equal(np.asarray(x_tf), train[i][0])
        np.testing.assert_array_equal(np.asarray(y_tf), train[i][1])


@pytest.mark.backend_free
def test_from_tfds_group_key_holds_out_whole_tracks(fake_gtsrb):
    _, data_dir = fake_gtsrb
    train, validation, _ = keras_dib.datasets.from_tfds(
        "gtsrb",
        data_dir=data_dir,
        batch_size=4,
        validation_split=0.2,
        group_key="track",
        backend="numpy",
        normalization=None,
    )
    # 1 of the 3 tracks of each class (2 images each) is held out.
    assert len(validation) == 2
    assert sum(len(validation[i][1]) for i in range(2)) == 6
    assert len(train) == 3  # 12 images left
    with pytest.raises(ValueError, match="`group_key` should name"):
        keras_dib.datasets.from_tfds(
            "gtsrb", data_dir=data_dir, group_key="image"
        )


def test_from_tfds_mock_cifar10_trains_a_greedy_vgg(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        (train, validation, test), info = keras_dib.datasets.from_tfds(
            "cifar10",
            data_dir=str(tmp_path / "tfds"),
            batch_size=8,
            augment=True,
            flip=True,
            validation_split=0.2,
            with_info=True,
        )
    num_classes = info.features["label"].num_classes
    assert num_classes == 10
    for x, y in train.take(1):
        assert tuple(x.shape) == (8, 32, 32, 3)
        assert tuple(y.shape) == (8,)
    model = keras_dib.build_vgg(
        11,
        num_classes=num_classes,
        input_shape=(32, 32, 3),
        width=4,
        granularity="stage",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras_dib.DIB(alpha=2.0, beta=0.01),
    )
    # One block trained (the others' epochs are 0): each block compiles
    # its own step, which dominates the time of this test.
    epochs = [1] + [0] * (model.num_blocks - 1)
    history = model.fit(
        train, validation_data=validation, epochs=epochs, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(history.history["val_loss"]))
    assert len(test) == 5  # 40 mock test images, every one kept


# === Bad arguments ===


@pytest.mark.backend_free
@pytest.mark.parametrize(
    "split", ["train", ("train",), ("train", ""), ("train", "test", "x")]
)
def test_from_tfds_rejects_a_split_that_is_not_a_pair(split):
    with pytest.raises(ValueError, match="`split` should be a pair"):
        keras_dib.datasets.from_tfds("gtsrb", split=split)


@pytest.mark.backend_free
def test_from_tfds_checks_pipeline_arguments_before_reading():
    with pytest.raises(ValueError, match="`batch_size` should be"):
        keras_dib.datasets.from_tfds("no_such_data_set", batch_size=0)
    with pytest.raises(ValueError, match="`validation_split` should be"):
        keras_dib.datasets.from_tfds("no_such_data_set", validation_split=1)


@pytest.mark.backend_free
def test_from_tfds_unknown_split_names_the_known_ones(fake_gtsrb):
    _, data_dir = fake_gtsrb
    with pytest.raises(
        ValueError, match=r"Unknown split 'validation'.*\['test', 'train'\]"
    ):
        keras_dib.datasets.from_tfds(
            "gtsrb", split=("train", "validation"), data_dir=data_dir
        )


@pytest.mark.backend_free
def test_from_tfds_refuses_a_data_set_that_is_not_image_classification(
    tmp_path,
):
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(
            ValueError, match="image classification.*imdb_reviews"
        ):
            keras_dib.datasets.from_tfds(
                "imdb_reviews", data_dir=str(tmp_path / "tfds")
            )


@pytest.mark.backend_free
def test_from_tfds_missing_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="`manual_dir` does not"):
        keras_dib.datasets.from_tfds(
            "gtsrb",
            data_dir=str(tmp_path / "tfds"),
            manual_dir=str(tmp_path / "missing"),
        )
    with pytest.raises(ValueError, match="download=True"):
        keras_dib.datasets.from_tfds(
            "gtsrb", manual_dir=str(tmp_path), download=False
        )


@pytest.mark.backend_free
def test_require_tfds_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r'pip install "keras-dib\[tfds\]"'):
        tfds_data.require_tfds()

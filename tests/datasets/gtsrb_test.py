"""GTSRB in the official layout: folders, zips, resizing, errors."""

import os
import shutil
import zipfile

import numpy as np
import pytest

import keras_dib.datasets
from keras_dib.datasets import _io
from keras_dib.datasets import gtsrb_data
from keras_dib.datasets import load_gtsrb
from tests.datasets import fakes

pytestmark = pytest.mark.backend_free


@pytest.mark.parametrize("as_zip", [False, True])
def test_official_layout(tmp_path, as_zip):
    expected = fakes.write_gtsrb(str(tmp_path), as_zip=as_zip)
    for data_dir in (
        (tmp_path, tmp_path / "GTSRB") if not as_zip else [tmp_path]
    ):
        (x, y, tracks), (x_test, y_test) = load_gtsrb(
            str(data_dir), cache=False
        )
        assert x.shape == (18, 32, 32, 3) and x.dtype == np.uint8
        assert y.dtype == tracks.dtype == y_test.dtype == np.int32
        for i, (image, label, track) in enumerate(expected["train"]):
            np.testing.assert_array_equal(x[i], image)
            assert y[i] == label and tracks[i] == label * 10000 + track
        for i, (image, label) in enumerate(expected["test"]):
            np.testing.assert_array_equal(x_test[i], image)
            assert y_test[i] == label


def test_split_zips_and_official_test_gt_location(tmp_path):
    """Training split over several zips; GT CSV at the top of its own zip."""
    source = tmp_path / "src"
    source.mkdir()
    expected = fakes.write_gtsrb(str(source))
    data = tmp_path / "zips"
    data.mkdir()
    for k, classes in enumerate(([0, 1], [2])):
        with zipfile.ZipFile(data / f"part{k}.zip", "w") as z:
            for label in classes:
                folder = source / f"GTSRB/Final_Training/Images/{label:05d}"
                for name in sorted(os.listdir(folder)):
                    z.write(
                        folder / name,
                        f"GTSRB/Final_Training/Images/{label:05d}/{name}",
                    )
    with zipfile.ZipFile(data / "GTSRB_Final_Test_Images.zip", "w") as z:
        for name in sorted(os.listdir(source / "GTSRB/Final_Test/Images")):
            z.write(
                source / "GTSRB/Final_Test/Images" / name,
                f"GTSRB/Final_Test/Images/{name}",
            )
    with zipfile.ZipFile(data / "GTSRB_Final_Test_GT.zip", "w") as z:
        z.write(
            source / "GTSRB/Final_Test/GT-final_test.csv", "GT-final_test.csv"
        )
    (x, y, _), (x_test, y_test) = load_gtsrb(str(data), cache=False)
    assert len(x) == 18 and len(x_test) == 7
    np.testing.assert_array_equal(y, [e[1] for e in expected["train"]])
    np.testing.assert_array_equal(y_test, [e[1] for e in expected["test"]])


def test_original_sizes_are_resized(tmp_path):
    fakes.write_gtsrb(str(tmp_path), size=45)
    (x, _, _), (x_test, _) = load_gtsrb(str(tmp_path), cache=False)
    assert x.shape[1:] == (32, 32, 3) and x_test.shape[1:] == (32, 32, 3)


def test_ppm_decoder():
    image = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.testing.assert_array_equal(_io.decode_ppm(fakes.ppm_bytes(image)), image)
    np.testing.assert_array_equal(
        _io.decode_image(fakes.ppm_bytes(image, comment=False)), image
    )
    with pytest.raises(ValueError, match="x.ppm: truncated PPM"):
        _io.decode_ppm(fakes.ppm_bytes(image)[:-5], "x.ppm")
    with pytest.raises(ValueError, match="expected a binary PPM header"):
        _io.decode_ppm(b"P6\nbad", "x.ppm")


def test_missing_layout(tmp_path):
    (tmp_path / "something.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="Final_Training/Images"):
        load_gtsrb(str(tmp_path), cache=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gtsrb(str(tmp_path / "missing"), cache=False)


def test_missing_csv_and_test_labels(tmp_path):
    fakes.write_gtsrb(str(tmp_path))
    os.remove(tmp_path / "GTSRB/Final_Test/GT-final_test.csv")
    with pytest.raises(FileNotFoundError, match="GT-final_test.csv"):
        load_gtsrb(str(tmp_path), cache=False)
    os.remove(tmp_path / "GTSRB/Final_Training/Images/00001/GT-00001.csv")
    with pytest.raises(FileNotFoundError, match="00001"):
        load_gtsrb(str(tmp_path), cache=False)


def test_missing_image(tmp_path):
    fakes.write_gtsrb(str(tmp_path))
    os.remove(tmp_path / "GTSRB/Final_Test/Images/00003.ppm")
    with pytest.raises(FileNotFoundError, match="00003.ppm"):
        load_gtsrb(str(tmp_path), cache=False)


def test_label_out_of_range(tmp_path):
    fakes.write_gtsrb(str(tmp_path), test_labels=[0, 1, 50, 2, 0, 1, 2])
    with pytest.raises(
        ValueError, match=r"GT-final_test.csv.*\[0, 43\).*ClassId=50"
    ):
        load_gtsrb(str(tmp_path), cache=False)


def test_corrupt_image_is_named(tmp_path):
    fakes.write_gtsrb(str(tmp_path))
    bad = tmp_path / "GTSRB/Final_Training/Images/00002/00001_00000.ppm"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"00002/00001_00000\.ppm"):
        load_gtsrb(str(tmp_path), cache=False)


def test_pipeline_split_by_track_and_no_flip(tmp_path):
    fakes.write_gtsrb(str(tmp_path), num_classes=2, tracks_per_class=5)
    train, val, test = keras_dib.datasets.gtsrb(
        str(tmp_path),
        batch_size=4,
        augment=True,
        validation_split=0.2,
        normalization=None,
        backend="numpy",
    )
    # One of 5 tracks per class held out: 2 tracks x 2 images.
    assert sum(len(val[i][1]) for i in range(len(val))) == 4
    assert len(train) == 16 // 4
    assert not train.plan.flip and train.plan.augment
    assert not np.any(train.plan.epoch(0)[2])


def _cache_entries(tmp_path):
    cache_dir = tmp_path / "keras_home" / "datasets" / "keras_dib_cache"
    return sorted(os.listdir(cache_dir)) if cache_dir.exists() else []


@pytest.mark.parametrize("missing_class", [0, 1, 2])
def test_missing_training_class_is_reported_and_not_cached(
    tmp_path, missing_class
):
    data = tmp_path / "data"
    data.mkdir()
    fakes.write_gtsrb(str(data))
    shutil.rmtree(data / f"GTSRB/Final_Training/Images/{missing_class:05d}")
    with pytest.raises(
        FileNotFoundError,
        match=rf"no training images of class\(es\) 0000"
        rf"{missing_class}\b",
    ):
        load_gtsrb(str(data))
    assert not [e for e in _cache_entries(tmp_path) if e.endswith(".npz")]


def _write_split_zips(tmp_path, parts=(1, 2, 3)):
    """The 32x32 copy's archive names, over a tiny 3-class GTSRB."""
    source = tmp_path / "src"
    source.mkdir()
    fakes.write_gtsrb(str(source))
    data = tmp_path / "zips"
    data.mkdir()
    for part in parts:
        label = part - 1
        name = f"GTSRB32_Final_Training_Images_part{part}.zip"
        with zipfile.ZipFile(data / name, "w") as z:
            folder = source / f"GTSRB/Final_Training/Images/{label:05d}"
            for file in sorted(os.listdir(folder)):
                z.write(
                    folder / file,
                    f"GTSRB/Final_Training/Images/{label:05d}/{file}",
                )
    with zipfile.ZipFile(data / "GTSRB32_Final_Test.zip", "w") as z:
        test = source / "GTSRB/Final_Test"
        for path in sorted(test.rglob("*")):
            if path.is_file():
                z.write(path, f"GTSRB/{path.relative_to(source / 'GTSRB')}")
    return data


def test_missing_split_training_archive_is_named(tmp_path):
    data = _write_split_zips(tmp_path, parts=(1, 2))
    with pytest.raises(
        FileNotFoundError, match="GTSRB32_Final_Training_Images_part3.zip"
    ):
        load_gtsrb(str(data))
    assert not [e for e in _cache_entries(tmp_path) if e.endswith(".npz")]


def test_official_archives_need_official_classes_and_counts(tmp_path):
    # Recognised as the official data by its archive names, a 3-class,
    # 18-image set is incomplete: classes 3 to 42 and images are missing.
    data = _write_split_zips(tmp_path)
    with pytest.raises(FileNotFoundError, match="00003-00042"):
        load_gtsrb(str(data))
    arrays = {
        "y_train": np.repeat(np.arange(43), 2).astype(np.int32),
        "y_test": np.arange(43).astype(np.int32),
    }
    with pytest.raises(ValueError, match="official 39209 training"):
        gtsrb_data._check_complete(arrays, "somewhere", official=True)
    gtsrb_data._check_complete(arrays, "somewhere", official=False)


def test_corrupt_zip_member_is_named(tmp_path):
    fakes.write_gtsrb(str(tmp_path), as_zip=True)
    archive = tmp_path / "gtsrb.zip"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    rebuilt = tmp_path / "rebuilt.zip"
    member = "GTSRB/Final_Training/Images/00001/00000_00000.ppm"
    with (
        zipfile.ZipFile(archive) as old,
        zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as new,
    ):
        for name in names:
            new.writestr(name, old.read(name))
    raw = bytearray(rebuilt.read_bytes())
    with zipfile.ZipFile(rebuilt) as z:
        header = z.getinfo(member).header_offset
    start = (
        header
        + 30
        + int.from_bytes(raw[header + 26 : header + 28], "little")
        + int.from_bytes(raw[header + 28 : header + 30], "little")
    )
    raw[start : start + 8] = b"\xff" * 8
    archive.unlink()
    rebuilt.unlink()
    (tmp_path / "gtsrb.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{member}.*gtsrb\.zip"):
        load_gtsrb(str(tmp_path), cache=False)

"""GTSRB (German Traffic Sign Recognition Benchmark): loader and pipelines.

(Not named `gtsrb.py`: the package exports the function `gtsrb`, which
would shadow a module of that name.)

Reads the official layout, as folders or inside zips (the official
`GTSRB_Final_Training_Images.zip`, `GTSRB_Final_Test_Images.zip` and
`GTSRB_Final_Test_GT.zip`, or 32x32 copies of them):

- `Final_Training/Images/NNNNN/TTTTT_IIIII.ppm` with `GT-NNNNN.csv` per
  class folder (`;`-separated, `ClassId` column); file `TTTTT_IIIII.ppm` is
  image `IIIII` of track `TTTTT` (about 30 images of one physical sign);
- `Final_Test/Images/NNNNN.ppm` with labels in `GT-final_test.csv` (found
  anywhere: beside the images, in `Final_Test/`, or at the top level as in
  `GTSRB_Final_Test_GT.zip`).

Images are decoded from PPM with NumPy and resized to 32x32 (bilinear,
whole image, no ROI crop) when they are not 32x32 already.

Completeness is checked before anything is returned or cached:

- every archive of a split set: the 32x32 copy's training images come in
  `GTSRB32_Final_Training_Images_part1..3.zip`; with one, all are needed;
- every class present: the training set has images of every class from 0
  to the largest label seen (in training or test), so a missing training
  archive (part 3 holds classes 30 to 42) cannot go unnoticed;
- for the official data, recognised by its archive names (the official
  zips or the 32x32 copy), all 43 classes and the official counts, 39209
  training and 12630 test images. Other trees (for example small test
  fixtures) are checked for the classes only.

References:
    - Stallkamp, Schlipsing, Salmen & Igel, "Man vs. computer: Benchmarking
      machine learning algorithms for traffic sign recognition", Neural
      Networks 32, 2012. https://doi.org/10.1016/j.neunet.2012.02.016
    - https://benchmark.ini.rub.de/gtsrb_dataset.html
"""

import csv
import os
import posixpath
import re

import numpy as np

from keras_dib.datasets import _io
from keras_dib.datasets import folder
from keras_dib.datasets import pipeline

NUM_CLASSES = 43
IMAGE_SIZE = (32, 32)
_TRACK_STRIDE = 10000
_TRAIN_CSV = r"(?:^|/)Final_Training/Images/(\d{5})/GT-\d{5}\.csv$"
_TRAIN_IMAGE = r"(?:^|/)Final_Training/Images/(\d{5})/[^/]+\.ppm$"
_TEST_IMAGE = r"(?:^|/)Final_Test/Images/[^/]+\.ppm$"
_TEST_CSV = "GT-final_test.csv"
_TRACK_NAME = re.compile(r"^(\d+)_(\d+)\.ppm$")
OFFICIAL_COUNTS = {"train": 39209, "test": 12630}
# Archives that together hold the training images: one needs the others.
_SPLIT_TRAINING_ARCHIVES = tuple(
    f"GTSRB32_Final_Training_Images_part{part}.zip" for part in (1, 2, 3)
)
# Archive names that mark the official data (full size or the 32x32 copy).
_OFFICIAL_ARCHIVES = (
    "GTSRB_Final_Training_Images.zip",
    *_SPLIT_TRAINING_ARCHIVES,
)


def _read_csv(index, rel):
    """Rows of a GTSRB annotation CSV as dicts; checks the columns."""
    where = index.describe(rel)
    try:
        text = index.read(rel).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"Corrupt annotation file {where}: {e}") from e
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if not rows or "Filename" not in rows[0] or "ClassId" not in rows[0]:
        raise ValueError(
            f"Unexpected annotation file {where}: expected a ';'-separated "
            "header with 'Filename' and 'ClassId'. Received: "
            f"{rows[0] if rows else 'an empty file'}"
        )
    header = rows[0]
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(
                f"Malformed line {number} of {where}: expected "
                f"{len(header)} fields. Received: {';'.join(row)!r}"
            )
        record = dict(zip(header, row))
        record["line"] = number
        records.append(record)
    return records


def _class_id(record, where):
    value = record["ClassId"]
    try:
        label = int(value)
    except ValueError:
        label = None
    if label is None or not 0 <= label < NUM_CLASSES:
        raise ValueError(
            f"Label out of range at line {record['line']} of {where} "
            f"({record['Filename']}): expected ClassId in [0, "
            f"{NUM_CLASSES}). Received: ClassId={value}"
        )
    return label


def _layout_error(index, what):
    return FileNotFoundError(
        f"No GTSRB {what} found in {index.path}. Expected the official "
        "layout (folders or zips): GTSRB/Final_Training/Images/NNNNN/*.ppm "
        "with GT-NNNNN.csv, GTSRB/Final_Test/Images/*.ppm and "
        f"GT-final_test.csv. Found: {index.sample()}"
    )


def _locate(index):
    """Paths of the training CSVs, the test CSV and the test image folder."""
    train_csvs = index.find(_TRAIN_CSV)
    image_classes = {}
    for rel in index.find(_TRAIN_IMAGE):
        image_classes.setdefault(posixpath.dirname(rel), rel)
    if not train_csvs:
        if image_classes:
            raise FileNotFoundError(
                f"GTSRB training images found in {index.path} but no "
                "GT-NNNNN.csv annotation files: expected one GT-NNNNN.csv "
                "in each Final_Training/Images/NNNNN/ folder."
            )
        raise _layout_error(index, "training data (Final_Training/Images)")
    roots = {rel.split("Final_Training/")[0] for rel in train_csvs}
    if len(roots) > 1:
        raise ValueError(
            f"Several GTSRB training trees found in {index.path}: "
            f"{sorted(roots)}. Pass the folder of one as `data_dir`."
        )
    csv_folders = {posixpath.dirname(rel) for rel in train_csvs}
    missing = sorted(set(image_classes) - csv_folders)
    if missing:
        raise FileNotFoundError(
            f"Missing GT-NNNNN.csv in GTSRB class folder(s) {missing[:5]} "
            f"of {index.path}: expected one annotation file per folder."
        )
    test_csvs = [
        rel for rel in index.files if posixpath.basename(rel) == _TEST_CSV
    ]
    if not test_csvs:
        raise _layout_error(
            index, "test labels (GT-final_test.csv, from GTSRB_Final_Test_GT)"
        )
    test_dirs = sorted(
        {posixpath.dirname(rel) for rel in index.find(_TEST_IMAGE)}
    )
    if not test_dirs:
        raise _layout_error(index, "test images (Final_Test/Images/*.ppm)")
    if len(test_dirs) > 1:
        raise ValueError(
            f"Several GTSRB test image folders found in {index.path}: "
            f"{test_dirs}. Pass the folder of one as `data_dir`."
        )
    return train_csvs, test_csvs[0], test_dirs[0]


def _archive_names(index):
    return {os.path.basename(source) for source in index.sources}


def _check_archives(index):
    """Raises if some, not all, of the split training archives are there."""
    names = _archive_names(index)
    present = [name for name in _SPLIT_TRAINING_ARCHIVES if name in names]
    missing = [name for name in _SPLIT_TRAINING_ARCHIVES if name not in names]
    if present and missing:
        raise FileNotFoundError(
            f"Incomplete GTSRB in {index.path}: missing {missing}. The "
            "training images are split over "
            f"{list(_SPLIT_TRAINING_ARCHIVES)}; found only {present}."
        )


def _class_ranges(classes):
    """`[0, 1, 2, 5]` -> `"00000-00002, 00005"`."""
    parts, start = [], None
    for i, label in enumerate(classes):
        if start is None:
            start = label
        if i + 1 == len(classes) or classes[i + 1] != label + 1:
            parts.append(
                f"{start:05d}" if start == label else f"{start:05d}-{label:05d}"
            )
            start = None
    return ", ".join(parts)


def _check_complete(arrays, where, official):
    """Raises unless every class (and, if `official`, every image) is there.

    Args:
        arrays: the decoded arrays (`y_train`, `y_test`, ...).
        where: the data folder, for the message.
        official: whether the data is the official set (all 43 classes and
            the official counts are then required).
    """
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    largest = max(
        int(y_train.max()) if y_train.size else -1,
        int(y_test.max()) if y_test.size else -1,
    )
    expected = NUM_CLASSES if official else largest + 1
    missing = sorted(set(range(expected)) - {int(c) for c in y_train})
    if missing:
        raise FileNotFoundError(
            f"Incomplete GTSRB in {where}: no training images of class(es) "
            f"{_class_ranges(missing)} (Final_Training/Images/NNNNN), out of "
            f"{expected}. Is a training archive or class folder missing? "
            "Found classes: "
            f"{_class_ranges(sorted({int(c) for c in y_train})) or 'none'}."
        )
    if official:
        counts = {"train": len(y_train), "test": len(y_test)}
        if counts != OFFICIAL_COUNTS:
            raise ValueError(
                f"Incomplete GTSRB in {where}: expected the official "
                f"{OFFICIAL_COUNTS['train']} training and "
                f"{OFFICIAL_COUNTS['test']} test images. Received: "
                f"{counts['train']} training and {counts['test']} test "
                "images."
            )


def _decode_training(index, train_csvs):
    rels, labels, tracks = [], [], []
    for csv_rel in train_csvs:
        where = index.describe(csv_rel)
        directory = posixpath.dirname(csv_rel)
        folder_class = int(posixpath.basename(directory))
        for record in _read_csv(index, csv_rel):
            label = _class_id(record, where)
            if label != folder_class:
                raise ValueError(
                    f"Inconsistent label at line {record['line']} of {where}"
                    f": the file is in class folder {folder_class:05d}. "
                    f"Received: ClassId={label}"
                )
            match = _TRACK_NAME.match(record["Filename"])
            if not match:
                raise ValueError(
                    f"Unexpected training file name at line {record['line']}"
                    f" of {where}: expected TTTTT_NNNNN.ppm. Received: "
                    f"{record['Filename']!r}"
                )
            rels.append(posixpath.join(directory, record["Filename"]))
            labels.append(label)
            tracks.append(label * _TRACK_STRIDE + int(match.group(1)))
    images = folder.decode_files(index, rels, IMAGE_SIZE)
    return images, np.asarray(labels, np.int32), np.asarray(tracks, np.int32)


def _decode_test(index, test_csv, test_dir):
    where = index.describe(test_csv)
    rels, labels = [], []
    for record in _read_csv(index, test_csv):
        labels.append(_class_id(record, where))
        rels.append(posixpath.join(test_dir, record["Filename"]))
    images = folder.decode_files(index, rels, IMAGE_SIZE)
    return images, np.asarray(labels, np.int32)


def load_gtsrb(data_dir=None, *, cache=True):
    """Loads GTSRB as NumPy arrays, 32x32 RGB (no TensorFlow needed).

    Args:
        data_dir: a folder holding the official zips (or the 32x32 copies
            of them), an extracted `GTSRB/` tree, or its
            parent. Default None: `$KERAS_DIB_DATA/gtsrb`, else the Keras
            cache (`~/.keras/datasets/gtsrb`), else the three official zips
            are downloaded there (MD5 checked).
        cache: keep the decoded arrays in an `.npz` in the Keras cache
            (one entry per source folder, keyed on the source files' sizes
            and times; complete data only). Default True.

    Returns:
        `(x_train, y_train, tracks_train), (x_test, y_test)`: uint8 images
        `(N, 32, 32, 3)`, int32 labels in [0, 43), and int32 track ids
        `class * 10000 + track` (unique across classes) for track-wise
        validation splits. 39209 training and 12630 test images for the
        official data.

    Raises:
        FileNotFoundError: if files or folders of the layout are missing, or
            the data is incomplete (a class without training images, one of
            the split training archives missing); the message says what.
        ValueError: on a corrupt image, CSV or archive member, a label out
            of range, or official data with other than the official counts.

    Example:

    ```python
    (x_train, y_train, tracks), (x_test, y_test) = (
        keras_dib.datasets.load_gtsrb("data/gtsrb")
    )
    ```
    """
    path = _io.resolve_data_dir("gtsrb", data_dir)
    with _io.FileIndex(path) as index:
        _check_archives(index)
        train_csvs, test_csv, test_dir = _locate(index)
        official = bool(_archive_names(index) & set(_OFFICIAL_ARCHIVES))

        def compute():
            x_train, y_train, tracks = _decode_training(index, train_csvs)
            x_test, y_test = _decode_test(index, test_csv, test_dir)
            return dict(
                x_train=x_train,
                y_train=y_train,
                tracks_train=tracks,
                x_test=x_test,
                y_test=y_test,
            )

        arrays = _io.cached_arrays(
            "gtsrb",
            index,
            compute,
            cache=cache,
            validate=lambda arrays: _check_complete(arrays, path, official),
        )
    return (arrays["x_train"], arrays["y_train"], arrays["tracks_train"]), (
        arrays["x_test"],
        arrays["y_test"],
    )


def gtsrb(
    data_dir=None,
    batch_size=128,
    augment=False,
    validation_split=0.0,
    seed=0,
    normalization="standardize",
    shuffle=True,
    backend="auto",
):
    """GTSRB input pipelines, ready for `model.fit`.

    Decoded, normalised, shuffled each epoch (training only), batched with
    a fixed batch size (the training remainder is dropped), prefetched.

    Normalisation, per channel `c`, images as float32:
    - "standardize": `(x - mean_c) / std_c`, with the mean and standard
      deviation of the training split (0..255 scale);
    - "unit": `x / 255`, in [0, 1];
    - None: `x` as float32 in [0, 255].

    Args:
        data_dir: see `load_gtsrb`. Default None (cache or download).
        batch_size: positive int. Default 128.
        augment: zero-pad 4 pixels and random 32x32 crop on the training
            split. Never flipped: a mirrored sign can mean another sign
            (keep left / keep right). Default False.
        validation_split: fraction in [0, 1) of the training TRACKS held
            out, per class (seeded): all images of one physical sign land
            on the same side, so validation accuracy is not inflated by
            near-duplicates. Default 0.
        seed: non-negative int for the split, shuffling and augmentation.
        normalization: "standardize" (default), "unit" or None.
        shuffle: reshuffle the training split each epoch. Default True.
        backend: "auto" (`tf.data` if TensorFlow is installed, else a
            `keras.utils.PyDataset`), "tensorflow" or "numpy".

    Returns:
        `(train, test)`, or `(train, validation, test)` when
        `validation_split > 0`; each yields `(images, labels)` batches,
        float32 `(batch, 32, 32, 3)` and int32 `(batch,)` (sparse labels).

    Example:

    ```python
    train, val, test = keras_dib.datasets.gtsrb(
        "data/gtsrb", augment=True, validation_split=0.1
    )
    model.fit(train, validation_data=val, epochs=10)
    ```
    """
    return pipeline.dataset_pipelines(
        lambda: load_gtsrb(data_dir),
        batch_size=batch_size,
        augment=augment,
        flip=False,
        validation_split=validation_split,
        seed=seed,
        normalization=normalization,
        shuffle=shuffle,
        backend=backend,
    )

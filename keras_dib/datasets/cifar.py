"""CIFAR-10 and CIFAR-100: array loaders and input pipelines.

Sources, looked for in this order inside `data_dir` (a folder, or an
archive):

1. the official python version: `cifar-10-python.tar.gz` /
   `cifar-100-python.tar.gz`, or their extracted folders
   (`cifar-10-batches-py/data_batch_1..5`, `test_batch`;
   `cifar-100-python/train`, `test`, `meta`);
2. a class-per-folder image tree `train/<class>/*.jpg|png` and
   `test/<class>/...`, as folders or inside zips (such as the CIFAR-10
   JPEG copy `CIFAR-10-images_train.zip` / `CIFAR-10-images_test.zip`).

Completeness: the official python version needs every batch file; a tree
needs the train/ and test/ splits with every class folder in both, and the
CIFAR-10 JPEG copy (`CIFAR-10-images_train.zip` and `_test.zip`) needs both
archives. The official data, recognised by the official batches' own
labels ("training batch 1 of 5", ...) or by the JPEG copy's archive names,
must also have the official counts, 50000 training and 10000 test images
(CIFAR-10: 5000 and 1000 a class); the message names the classes that fall
short. Other data (for example small test fixtures) is not count-checked.
Incomplete data is never cached.

References:
    - Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
      2009. https://www.cs.toronto.edu/~kriz/cifar.html
"""

import os
import posixpath
import re

import numpy as np

from keras_dib.datasets import _io
from keras_dib.datasets import folder
from keras_dib.datasets import pipeline

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_IMAGE_SIZE = (32, 32)
_LABEL_MODES = ("fine", "coarse")
OFFICIAL_COUNTS = {"train": 50000, "test": 10000}
# The official batches label themselves "training batch 1 of 5", ...
_OFFICIAL_BATCH_LABEL = re.compile(rb"^(training|testing) batch \d+ of \d+$")
# A class-per-folder JPEG copy of CIFAR-10 in two archives: both needed.
_JPEG_COPY_ARCHIVES = (
    "CIFAR-10-images_train.zip",
    "CIFAR-10-images_test.zip",
)


# === Official python version ===


def _decode_batch(index, rel, label_key, num_classes):
    """Images `(N, 32, 32, 3)` and labels `(N,)` of one official batch."""
    where = index.describe(rel)
    batch = _io.load_pickle(index.read(rel), where)
    if b"data" not in batch or label_key not in batch:
        raise ValueError(
            f"Corrupt CIFAR batch {where}: expected keys b'data' and "
            f"{label_key!r}. Received keys: {sorted(batch)}"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"Corrupt CIFAR batch {where}: expected b'data' of uint8 and "
            f"shape (N, 3072). Received: dtype={data.dtype}, "
            f"shape={data.shape}"
        )
    if labels.shape != (len(data),):
        raise ValueError(
            f"Corrupt CIFAR batch {where}: expected {len(data)} labels. "
            f"Received: shape={labels.shape}"
        )
    _check_labels(labels, num_classes, where)
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    official = bool(
        _OFFICIAL_BATCH_LABEL.match(bytes(batch.get(b"batch_label", b"")))
    )
    return np.ascontiguousarray(images), labels.astype(np.int32), official


def _check_labels(labels, num_classes, where):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(
            f"Label out of range in {where}: expected labels in "
            f"[0, {num_classes}). Received: label={int(bad)}"
        )


def _load_official(index, directory, split_files, label_key, num_classes):
    """The two splits, and whether every batch says it is official."""
    splits = []
    official = True
    for files in split_files:
        parts = [
            _decode_batch(
                index, posixpath.join(directory, name), label_key, num_classes
            )
            for name in files
        ]
        official = official and all(p[2] for p in parts)
        splits.append(
            (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        )
    return splits, official


def _check_jpeg_copy_archives(index):
    names = {os.path.basename(source) for source in index.sources}
    present = [name for name in _JPEG_COPY_ARCHIVES if name in names]
    missing = [name for name in _JPEG_COPY_ARCHIVES if name not in names]
    if present and missing:
        raise FileNotFoundError(
            f"Incomplete CIFAR-10 JPEG copy in {index.path}: missing "
            f"{missing} (found {present}); both archives are needed."
        )
    return bool(present)


def _check_complete(arrays, name, num_classes, where):
    """For official data: every class, and the official counts."""
    if not bool(arrays.get("official", False)):
        return
    problems = []
    for split in ("train", "test"):
        labels = arrays[f"y_{split}"]
        counts = np.bincount(labels, minlength=num_classes)
        missing = [c for c in range(num_classes) if counts[c] == 0]
        if missing:
            problems.append(
                f"no {split} images of class(es) {missing[:20]}"
                + (" ..." if len(missing) > 20 else "")
            )
        if len(labels) != OFFICIAL_COUNTS[split]:
            per_class = OFFICIAL_COUNTS[split] // num_classes
            short = {
                c: int(counts[c])
                for c in range(num_classes)
                if counts[c] < per_class
            }
            problems.append(
                f"{len(labels)} {split} images instead of "
                f"{OFFICIAL_COUNTS[split]}"
                + (
                    f" (classes short of {per_class}, with their counts: "
                    f"{dict(list(short.items())[:20])})"
                    if short and name == "cifar10"
                    else ""
                )
            )
    if problems:
        raise ValueError(
            f"Incomplete {name.upper().replace('CIFAR', 'CIFAR-')} in "
            f"{where}: " + "; ".join(problems) + ". Delete it and "
            "download or copy it again."
        )


def _find_official(index, anchor, required):
    """Folder holding `anchor` and all `required` files, or None."""
    candidates = index.find(rf"(^|/){anchor}$")
    for rel in candidates:
        directory = posixpath.dirname(rel)
        paths = [posixpath.join(directory, name) for name in required]
        missing = [p for p in paths if p not in index.files]
        if not missing:
            return directory
        if len(candidates) == 1:
            raise FileNotFoundError(
                f"Incomplete CIFAR python version in {index.path}: missing "
                f"{missing}. Expected {required} in one folder."
            )
    return None


# === Class-per-folder tree ===


def _load_tree(index, tree, num_classes, official_order):
    prefix, train_classes, test_classes = tree
    names = set(train_classes)
    where = f"{index.path} ({prefix or '.'})"
    if names != set(test_classes):
        raise ValueError(
            f"The train/ and test/ class folders in {where} differ: "
            f"only in train: {sorted(names - set(test_classes))}, only in "
            f"test: {sorted(set(test_classes) - names)}."
        )
    if len(names) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class folders in {where}. Received "
            f"{len(names)}: {sorted(names)[:12]}"
        )
    if official_order and names == set(official_order):
        class_names = list(official_order)
    else:
        class_names = sorted(names)
    splits = []
    for classes in (train_classes, test_classes):
        rels, labels = [], []
        for label, name in enumerate(class_names):
            rels.extend(classes[name])
            labels.extend([label] * len(classes[name]))
        images = folder.decode_files(index, rels, _IMAGE_SIZE)
        splits.append((images, np.asarray(labels, np.int32)))
    return splits


# === Array loaders ===


def _load(name, data_dir, cache, label_mode=None):
    path = _io.resolve_data_dir(
        name,
        data_dir,
        extra_cache_names=(
            ("cifar-10-batches-py-target", "cifar-10-batches-py")
            if name == "cifar10"
            else ("cifar-100-python-target", "cifar-100-python")
        ),
    )
    with _io.FileIndex(path) as index:
        jpeg_copy = name == "cifar10" and _check_jpeg_copy_archives(index)
        if name == "cifar10":
            num_classes = 10
            batches = [f"data_batch_{i}" for i in range(1, 6)]
            directory = _find_official(
                index, "data_batch_1", batches + ["test_batch"]
            )
            official = (batches, ["test_batch"])
            label_key = b"labels"
            order = CIFAR10_CLASS_NAMES
        else:
            num_classes = 100 if label_mode == "fine" else 20
            directory = _find_official(index, "train", ["train", "test"])
            official = (["train"], ["test"])
            label_key = f"{label_mode}_labels".encode()
            order = None

        def compute():
            if directory is not None:
                splits, is_official = _load_official(
                    index, directory, official, label_key, num_classes
                )
            else:
                tree = folder.find_split_trees(index)
                if tree is None:
                    raise FileNotFoundError(_missing_message(name, index))
                splits = _load_tree(index, tree, num_classes, order)
                is_official = jpeg_copy
            (x_train, y_train), (x_test, y_test) = splits
            return dict(
                x_train=x_train,
                y_train=y_train,
                x_test=x_test,
                y_test=y_test,
                official=np.asarray(is_official),
            )

        cache_name = f"{name}_{label_mode}" if label_mode else name
        arrays = _io.cached_arrays(
            cache_name,
            index,
            compute,
            cache=cache,
            validate=lambda arrays: _check_complete(
                arrays, name, num_classes, path
            ),
        )
    return (arrays["x_train"], arrays["y_train"]), (
        arrays["x_test"],
        arrays["y_test"],
    )


def _missing_message(name, index):
    archive = (
        "cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ with "
        "data_batch_1..5 and test_batch)"
        if name == "cifar10"
        else "cifar-100-python.tar.gz (or its extracted cifar-100-python/ "
        "with train and test)"
    )
    return (
        f"No {name.upper().replace('CIFAR', 'CIFAR-')} data found in "
        f"{index.path}. Expected {archive}, or a class-per-folder tree "
        "train/<class>/*.jpg|png and test/<class>/... (or zips of one). "
        f"Found: {index.sample()}"
    )


def load_cifar10(data_dir=None, *, cache=True):
    """Loads CIFAR-10 as NumPy arrays (no TensorFlow needed).

    Args:
        data_dir: a folder or archive holding the official
            `cifar-10-python.tar.gz`, its extracted `cifar-10-batches-py/`
            folder, or a class-per-folder tree `train/<class>/*.jpg|png`,
            `test/<class>/...` (folders or zips, like the CIFAR-10 JPEG
            copy). For a tree, labels follow the official CIFAR-10 order
            when the folders are named after its classes, else sorted
            folder names. Default None: `$KERAS_DIB_DATA/cifar10`, else the
            Keras cache (`~/.keras/datasets/cifar10`), else the official
            archive is downloaded there (SHA-256 checked).
        cache: keep the decoded arrays in an `.npz` in the Keras cache
            (one entry per source folder, keyed on the source files' sizes
            and times; complete data only). Default True.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images
        `(N, 32, 32, 3)` and int32 labels `(N,)` in [0, 10); 50000 and
        10000 images for the official data.

    Raises:
        FileNotFoundError: if no CIFAR-10 data is found, or one of the
            JPEG copy's two archives is missing.
        ValueError: on a corrupt file or a label out of range, or official
            data short of the official counts (see the module docstring).

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = keras_dib.datasets.load_cifar10(
        "data/cifar10"
    )
    ```
    """
    return _load("cifar10", data_dir, cache)


def load_cifar100(data_dir=None, label_mode="fine", *, cache=True):
    """Loads CIFAR-100 as NumPy arrays (no TensorFlow needed).

    Args:
        data_dir: a folder or archive holding the official
            `cifar-100-python.tar.gz`, its extracted `cifar-100-python/`
            folder, or a class-per-folder tree (`train/<class>/...`,
            `test/<class>/...`, classes in sorted order: 100 folders for
            "fine", 20 for "coarse"). Default None: `$KERAS_DIB_DATA/
            cifar100`, else the Keras cache, else downloaded there.
        label_mode: "fine" (100 classes) or "coarse" (20 superclasses).
        cache: keep the decoded arrays in an `.npz` cache. Default True.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images
        `(N, 32, 32, 3)` and int32 labels `(N,)`.

    Raises:
        FileNotFoundError: if no CIFAR-100 data is found.
        ValueError: on a bad `label_mode`, a corrupt file, a label out
            of range, or official data short of the official counts.

    Example:

    ```python
    (x_train, y_train), _ = keras_dib.datasets.load_cifar100(
        label_mode="coarse"
    )
    ```
    """
    _check_label_mode(label_mode)
    return _load("cifar100", data_dir, cache, label_mode)


def _check_label_mode(label_mode):
    if label_mode not in _LABEL_MODES:
        raise ValueError(
            f"`label_mode` should be one of {_LABEL_MODES}. Received: "
            f"label_mode={label_mode!r}"
        )


# === Pipelines ===


def cifar10(
    data_dir=None,
    batch_size=128,
    augment=False,
    validation_split=0.0,
    seed=0,
    normalization="standardize",
    shuffle=True,
    backend="auto",
):
    """CIFAR-10 input pipelines, ready for `model.fit`.

    Decoded, normalised, shuffled each epoch (training only), batched with
    a fixed batch size (the training remainder is dropped), prefetched.

    Normalisation, per channel `c`, images as float32:
    - "standardize": `(x - mean_c) / std_c`, with the mean and standard
      deviation of the training split (0..255 scale);
    - "unit": `x / 255`, in [0, 1];
    - None: `x` as float32 in [0, 255].

    Args:
        data_dir: see `load_cifar10`. Default None (cache or download).
        batch_size: positive int. Default 128.
        augment: standard CIFAR augmentation on the training split: zero-pad
            4 pixels, random 32x32 crop, random horizontal flip. Default
            False.
        validation_split: fraction in [0, 1) of the training images held
            out as a validation split (stratified by class, seeded).
            Default 0.
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
    train, test = keras_dib.datasets.cifar10(
        "data/cifar10", augment=True
    )
    model.fit(train, validation_data=test, epochs=10)
    ```
    """
    return pipeline.dataset_pipelines(
        lambda: load_cifar10(data_dir),
        batch_size=batch_size,
        augment=augment,
        flip=augment,
        validation_split=validation_split,
        seed=seed,
        normalization=normalization,
        shuffle=shuffle,
        backend=backend,
    )


def cifar100(
    data_dir=None,
    batch_size=128,
    augment=False,
    validation_split=0.0,
    seed=0,
    normalization="standardize",
    shuffle=True,
    backend="auto",
    label_mode="fine",
):
    """CIFAR-100 input pipelines, ready for `model.fit`.

    As `cifar10`, with fine (100) or coarse (20) labels.

    Args:
        data_dir: see `load_cifar100`. Default None (cache or download).
        batch_size: positive int. Default 128.
        augment: pad-4 random crop and random horizontal flip (training).
        validation_split: fraction in [0, 1) held out (stratified, seeded).
        seed: non-negative int for the split, shuffling and augmentation.
        normalization: "standardize" (default), "unit" or None; see
            `cifar10`.
        shuffle: reshuffle the training split each epoch. Default True.
        backend: "auto", "tensorflow" or "numpy".
        label_mode: "fine" (default) or "coarse".

    Returns:
        `(train, test)` or `(train, validation, test)`, as in `cifar10`.

    Example:

    ```python
    train, val, test = keras_dib.datasets.cifar100(
        label_mode="coarse", validation_split=0.1
    )
    ```
    """
    return pipeline.dataset_pipelines(
        lambda: load_cifar100(data_dir, label_mode),
        batch_size=batch_size,
        augment=augment,
        flip=augment,
        validation_split=validation_split,
        seed=seed,
        normalization=normalization,
        shuffle=shuffle,
        backend=backend,
    )

"""TensorFlow Datasets: any `tfds` image classification set as a pipeline.

`from_tfds` reads the images and labels of a TFDS data set into memory and
hands them to the library's own pipelines (`pipeline.dataset_pipelines`),
so that they get the same normalisation, per-batch augmentation, fixed
batch size and validation split as `cifar10()` and `gtsrb()`.

The library's own TFDS builders (GTSRB, which the TFDS catalogue lacks, in
`keras_dib.datasets.tfds_gtsrb`) are registered when TensorFlow Datasets is
imported, not when keras_dib is: `import keras_dib` installs an import hook
(`register_on_import`) that registers them once `tensorflow_datasets` is
imported, so `tfds.load("gtsrb", ...)` works after `import keras_dib`
without making `import keras_dib` pay for importing TensorFlow Datasets.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

import numpy as np

from keras_dib.datasets import pipeline

_TFDS_MODULE = "tensorflow_datasets"
_BUILDER_MODULES = ("keras_dib.datasets.tfds_gtsrb",)
_READ_BATCH = 1024


# === Importing and registering ===


def require_tfds():
    """Imports TensorFlow Datasets, with an actionable error if absent.

    Returns:
        The `tensorflow_datasets` module, with the library's builders
        registered.

    Raises:
        ImportError: if TensorFlow Datasets is not installed.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "TensorFlow Datasets is not installed: `from_tfds` and the "
            "`gtsrb` TFDS builder need it. Install it with "
            '`pip install "keras-dib[tfds]"` (or `pip install '
            "tensorflow-datasets`)."
        ) from e
    register_builders()
    return tfds


def register_builders():
    """Registers the library's TFDS builders (GTSRB) with TFDS.

    Importing a builder module registers its builder; a module is imported
    once per process, so calling this again does nothing.
    """
    for name in _BUILDER_MODULES:
        importlib.import_module(name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Runs `register_builders()` right after `tensorflow_datasets` loads.

    Finds nothing itself: it wraps the `exec_module` of the spec that the
    other finders return for `tensorflow_datasets`, and removes itself once
    that module has been executed.
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TFDS_MODULE or self._finding:
            return None
        self._finding = True  # let the other finders find the real spec
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module):
            del loader.exec_module  # back to the loader's own method
            exec_module(module)
            remove_hook()
            try:
                register_builders()
            except Exception as e:  # never break `import tensorflow_datasets`
                warnings.warn(
                    "keras_dib could not register its TFDS builders (GTSRB): "
                    f"{type(e).__name__}: {e}. `tfds.load('gtsrb')` will "
                    "not find it; `import keras_dib.datasets.tfds_gtsrb` "
                    "shows the error.",
                    stacklevel=2,
                )

        try:
            loader.exec_module = exec_then_register
        except AttributeError:  # a loader we cannot wrap: `from_tfds` will
            pass
        return spec


def register_on_import():
    """Registers the builders now if TFDS is imported, else when it is.

    Called by `import keras_dib.datasets`: importing TensorFlow Datasets
    takes about a second, which `import keras_dib` does not pay.
    """
    if _TFDS_MODULE in sys.modules:
        try:
            register_builders()
        except Exception as e:
            warnings.warn(
                "keras_dib could not register its TFDS builders (GTSRB): "
                f"{type(e).__name__}: {e}.",
                stacklevel=2,
            )
        return
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def remove_hook():
    """Removes the import hook installed by `register_on_import`."""
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not isinstance(finder, _RegisterOnImport)
    ]


# === Reading a data set ===


def _check_split(split):
    if (
        not isinstance(split, (tuple, list))
        or len(split) != 2
        or not all(isinstance(s, str) and s for s in split)
    ):
        raise ValueError(
            "`split` should be a pair of TFDS split names (training split, "
            "test split), e.g. ('train', 'test') or ('train[:90%]', "
            f"'train[90%:]'). Received: split={split!r}"
        )


def _image_and_label_keys(builder):
    """The supervised keys, checked to be a fixed-size image and a class."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    image = label = None
    if (
        isinstance(keys, tuple)
        and len(keys) == 2
        and all(isinstance(key, str) and key in features for key in keys)
    ):
        image, label = features[keys[0]], features[keys[1]]
    if (
        not isinstance(image, tfds.features.Image)
        or image.np_dtype != np.uint8
        or None in image.shape
        or not isinstance(label, tfds.features.ClassLabel)
    ):
        received = ", ".join(
            f"{key}={feature!r}" for key, feature in features.items()
        )
        raise ValueError(
            "`name` should be a TFDS image classification data set: "
            "supervised keys (image, label), a uint8 `Image` feature of "
            "fixed shape and a `ClassLabel`. Received: "
            f"name={builder.name!r}, supervised_keys={keys!r}, features: "
            f"{received}"
        )
    return keys


def _check_group_key(builder, group_key):
    import tensorflow_datasets as tfds

    features = builder.info.features
    feature = features[group_key] if group_key in features else None
    if (
        not isinstance(feature, tfds.features.Tensor)
        or feature.shape != ()
        or not np.issubdtype(feature.np_dtype, np.integer)
    ):
        raise ValueError(
            "`group_key` should name an integer scalar feature of "
            f"{builder.name!r} (e.g. 'track' for 'gtsrb'). Received: "
            f"group_key={group_key!r}, features: {sorted(features)}"
        )


def _read_split(tfds, builder, split, keys):
    """The features `keys` of one split as NumPy arrays, stored order."""
    known = dict(builder.info.splits)
    if known:
        try:
            builder.info.splits[split]
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"Unknown split {split!r} of TFDS data set {builder.name!r}: "
                f"expected one of {sorted(known)}, or a TFDS split "
                f"expression of them (e.g. 'train[:90%]'). TFDS says: {e}"
            ) from e
    dataset = builder.as_dataset(split=split, batch_size=_READ_BATCH)
    columns = [[] for _ in keys]
    for batch in tfds.as_numpy(dataset):
        for column, key in zip(columns, keys):
            column.append(batch[key])
    if not columns[0]:
        raise ValueError(
            f"Split {split!r} of TFDS data set {builder.name!r} is empty: "
            "expected at least one example."
        )
    arrays = [np.concatenate(column) for column in columns]
    return (arrays[0],) + tuple(a.astype(np.int32) for a in arrays[1:])


def _prepared_builder(tfds, name, data_dir, download, manual_dir):
    """`tfds.builder(name)`, prepared (downloaded, or from `manual_dir`)."""
    builder = tfds.builder(name, data_dir=data_dir)
    _image_and_label_keys(builder)  # before any download
    if download:
        config = None
        if manual_dir is not None:
            config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    return builder


# === Public pipeline ===


def from_tfds(
    name,
    split=("train", "test"),
    data_dir=None,
    batch_size=128,
    augment=False,
    flip=False,
    validation_split=0.0,
    seed=0,
    normalization="standardize",
    shuffle=True,
    backend="auto",
    group_key=None,
    download=True,
    manual_dir=None,
    with_info=False,
):
    """Input pipelines over any TFDS image classification data set.

    The two splits are read into memory (uint8 images and int labels, as
    `tfds.load(name, split=..., as_supervised=True)` gives them) and go
    through the library's own pipelines, exactly as in `cifar10()` and
    `gtsrb()`: a validation split stratified by class is held out of the
    training split, images are normalised with the training statistics,
    training batches are reshuffled each epoch, have a fixed size (the
    remainder is dropped) and are optionally augmented per batch (pad 4
    and crop, left-right flips). The data set must fit in memory and have
    images of one fixed shape (`Image(shape=(h, w, c))`).

    `keras_dib`'s own TFDS builders are registered first, so `name` can be
    "gtsrb" (43 classes, 32x32x3, from the official archives in
    `manual_dir`; see `keras_dib.datasets.tfds_gtsrb`).

    Args:
        name: a TFDS data set name, e.g. "cifar10", "svhn_cropped",
            "mnist" or "gtsrb" (configs and versions as TFDS spells them:
            "cifar10:3.0.2").
        split: `(training split, test split)`, TFDS split names or
            expressions. Default `("train", "test")`.
        data_dir: the TFDS data folder. Default None (`~/tensorflow_datasets`
            or `$TFDS_DATA_DIR`).
        batch_size: positive int. Default 128.
        augment: zero-pad 4 pixels and random crop back (training only).
            Default False.
        flip: random horizontal flips (training only). Default False: a
            mirrored image can mean another class (traffic signs, digits).
        validation_split: fraction in [0, 1) of the training split held out
            as a validation split, per class (seeded). Default 0.
        group_key: optional name of an integer feature that groups
            examples (e.g. "track" for "gtsrb": the ~30 images of one
            physical sign): the validation split then holds out whole
            groups, per class, as `gtsrb()` does. Default None (by image).
        seed: non-negative int for the split, shuffling and augmentation.
        normalization: "standardize" (default: per-channel mean and std of
            the training split), "unit" (`x / 255`) or None.
        shuffle: reshuffle the training split each epoch. Default True.
        backend: "auto" (`tf.data` if TensorFlow is installed, else a
            `keras.utils.PyDataset`), "tensorflow" or "numpy".
        download: download and prepare the data set if it is not prepared
            in `data_dir` yet (as `tfds.load` does). Default True.
        manual_dir: folder of archives for data sets that are not
            downloaded (GTSRB: the official zips). Default None.
        with_info: also return the data set's `tfds.core.DatasetInfo`
            (`info.features["label"].num_classes`, ...). Default False.

    Returns:
        `(train, test)`, or `(train, validation, test)` when
        `validation_split > 0`; each yields `(images, labels)` batches,
        float32 `(batch, height, width, channels)` and int32 `(batch,)`.
        With `with_info=True`, `(pipelines, info)`.

    Raises:
        ImportError: if TensorFlow Datasets is not installed.
        ValueError: on bad arguments, a data set that is not image
            classification, or an unknown split.
        FileNotFoundError: if `manual_dir` does not exist.

    Example:

    ```python
    (train, val, test), info = keras_dib.datasets.from_tfds(
        "svhn_cropped", validation_split=0.1, augment=True, with_info=True
    )
    model = keras_dib.build_vgg(
        11, num_classes=info.features["label"].num_classes
    )
    ```
    """
    _check_split(split)
    if manual_dir is not None and not download:
        raise ValueError(
            "`manual_dir` is read only when preparing the data set: pass "
            f"`download=True` with it. Received: download={download!r}, "
            f"manual_dir={manual_dir!r}"
        )
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            "`manual_dir` does not exist: it should be the folder holding "
            f"the data set's archives. Received: manual_dir={manual_dir!r}"
        )
    infos = []

    def load():
        tfds = require_tfds()
        pipeline.require_tensorflow()  # keeps TensorFlow off the GPUs
        builder = _prepared_builder(tfds, name, data_dir, download, manual_dir)
        infos.append(builder.info)
        keys = _image_and_label_keys(builder)
        train_keys = keys
        if group_key is not None:
            _check_group_key(builder, group_key)
            train_keys = keys + (group_key,)
        return (
            _read_split(tfds, builder, split[0], train_keys),
            _read_split(tfds, builder, split[1], keys),
        )

    pipelines = pipeline.dataset_pipelines(
        load,
        batch_size=batch_size,
        augment=augment,
        flip=flip,
        validation_split=validation_split,
        seed=seed,
        normalization=normalization,
        shuffle=shuffle,
        backend=backend,
    )
    return (pipelines, infos[0]) if with_info else pipelines

"""Export a trained model as a TensorFlow SavedModel for TF Serving."""

import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "export_for_serving needs TensorFlow to write a SavedModel. "
            "Install it with `pip install tensorflow`."
        ) from error
    return tf


def _as_channel_vector(name, value, channels):
    if value is None:
        return None
    array = np.asarray(value, dtype="float32").reshape(-1)
    if array.size == 1:
        array = np.repeat(array, channels)
    if array.size != channels or not np.all(np.isfinite(array)):
        raise ValueError(
            f"`{name}` should be a finite number or one value per channel "
            f"({channels}). Received: {name}={value!r}"
        )
    if name == "std" and np.any(array <= 0):
        raise ValueError(f"`std` should be > 0. Received: std={value!r}")
    return array


def export_for_serving(model, path, mean=None, std=None, overwrite=False):
    """Writes a SavedModel whose signatures return class probabilities.

    The SavedModel has two signatures, both taking a batch of raw images
    (pixel values 0-255, shape `(batch,) + input_shape`) and returning
    `{"probabilities": softmax(logits)}`:

    - `serving_default`: float32 images;
    - `serving_uint8`: uint8 images.

    The normalisation the model was trained with, `(x - mean) / std` per
    channel (see `keras_dib.datasets`), is applied inside the SavedModel, so
    clients send raw pixels. The model may have been trained on any
    backend: under JAX or PyTorch it is saved to a `.keras` file and
    exported by a TensorFlow-backend subprocess (TensorFlow must be
    installed).

    The SavedModel is written to a temporary folder beside `path` and then
    renamed to `path`, so `path` never holds a partial export or a mix of
    two exports; a failed export leaves `path` as it was. An existing
    non-empty `path` is refused unless `overwrite=True`, in which case it
    is replaced as a whole (moved aside by a rename, then deleted).

    Args:
        model: a built Keras model returning logits (for example a trained
            `keras_dib.GreedyLayerwiseModel`).
        path: the SavedModel directory to write (for TF Serving, a version
            folder such as `serving/gtsrb/1`). Missing parent folders are
            created.
        mean: optional per-channel mean (a number or one per channel),
            on the 0-255 scale. Defaults to None (no centring).
        std: optional per-channel standard deviation, same form. Defaults to
            None (no scaling).
        overwrite: whether to replace an existing non-empty `path`.
            Defaults to False.

    Returns:
        The `path` written.

    Example:

    >>> import os, tempfile
    >>> model = keras_dib.build_vgg(11, num_classes=43, width=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "serving", "gtsrb", "1")
    >>> keras_dib.export_for_serving(  # doctest: +SKIP
    ...     model, path, mean=[86.7, 79.6, 81.9], std=[68.3, 65.1, 67.7]
    ... )
    '.../serving/gtsrb/1'
    >>> # tensorflow_model_server --rest_api_port=8501 \\
    >>> #   --model_name=gtsrb --model_base_path=$PWD/serving/gtsrb

    References:
        - TensorFlow Serving REST API:
          https://www.tensorflow.org/tfx/serving/api_rest
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"`model` should be a built Keras model. Received: model={model!r}"
        )
    input_shape = _input_shape(model)
    channels = input_shape[-1]
    mean = _as_channel_vector("mean", mean, channels)
    std = _as_channel_vector("std", std, channels)
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.export-", dir=parent
    )
    try:
        if keras.backend.backend() == "tensorflow":
            _write_saved_model(model, temp, input_shape, mean, std)
        else:
            _export_in_subprocess(model, temp, mean, std)
        _replace(temp, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return path


def _input_shape(model):
    input_shape = (
        tuple(model.input_shape[1:])
        if _has_input_shape(model)
        else (tuple(getattr(model, "_expected_input_shape", ())))
    )
    if not input_shape or None in input_shape:
        raise ValueError(
            "Cannot tell the model's input shape; build it with a static "
            f"image shape. Received: input_shape={input_shape}"
        )
    return input_shape


def _check_target(path, overwrite):
    if not isinstance(overwrite, bool):
        raise ValueError(
            f"`overwrite` should be a bool. Received: overwrite={overwrite!r}"
        )
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise FileExistsError(
            "`path` should be a folder (or not exist yet); it is a file or "
            f"a link. Received: path={path!r}"
        )
    entries = os.listdir(path)
    if entries and not overwrite:
        raise FileExistsError(
            "`path` is a non-empty folder; pass overwrite=True to replace "
            "it (exporting into it would mix its old files into the new "
            f"SavedModel). Received: path={path!r}, holding "
            f"{sorted(entries)[:5]}{' ...' if len(entries) > 5 else ''}"
        )


def _replace(new, path):
    """Renames the folder `new` to `path`, replacing what is there.

    An existing `path` is first moved aside by a rename (into a hidden
    sibling) and deleted only once `new` is in place; if that rename fails,
    it is moved back.
    """
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    aside = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.replaced-",
        dir=os.path.dirname(path),
    )
    previous = os.path.join(aside, "previous")
    os.rename(path, previous)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(previous, path)
        os.rmdir(aside)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _write_saved_model(model, path, input_shape, mean, std):
    """Writes the SavedModel with the TensorFlow backend (in this process)."""
    tf = _tensorflow()

    def probabilities(images):
        x = keras.ops.cast(images, "float32")
        if mean is not None:
            x = x - mean
        if std is not None:
            x = x / std
        logits = model(x, training=False)
        return {
            "probabilities": keras.ops.softmax(
                keras.ops.cast(logits, "float32")
            )
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        probabilities,
        input_signature=[
            tf.TensorSpec((None,) + input_shape, tf.float32, name="images")
        ],
    )
    archive.add_endpoint(
        "serving_uint8",
        probabilities,
        input_signature=[
            tf.TensorSpec((None,) + input_shape, tf.uint8, name="images")
        ],
    )
    archive.write_out(path, verbose=False)


def _has_input_shape(model):
    try:
        return model.input_shape is not None
    except (AttributeError, ValueError):
        return False


_SUBPROCESS = """
import sys, numpy as np, keras
from keras_dib import export
model = keras.saving.load_model(sys.argv[1])
mean = None if sys.argv[3] == "none" else np.load(sys.argv[3])
std = None if sys.argv[4] == "none" else np.load(sys.argv[4])
export._write_saved_model(
    model, sys.argv[2], export._input_shape(model), mean, std
)
"""


def _subprocess_error(stderr):
    """The final exception of a Python traceback in `stderr`, or its tail.

    Returns the exception line (and its continuation lines) after the last
    `Traceback` header, else the last non-empty line.
    """
    lines = stderr.rstrip().splitlines()
    header = None
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            header = index
    if header is not None:
        for index in range(header + 1, len(lines)):
            if lines[index] and not lines[index][0].isspace():
                return "\n".join(lines[index:]).strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return "no error output"


def _export_in_subprocess(model, path, mean, std):
    with tempfile.TemporaryDirectory() as temp:
        model_path = os.path.join(temp, "model.keras")
        model.save(model_path)
        arguments = []
        for name, value in (("mean", mean), ("std", std)):
            if value is None:
                arguments.append("none")
            else:
                file = os.path.join(temp, f"{name}.npy")
                np.save(file, value)
                arguments.append(file)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        result = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, model_path, path, *arguments],
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            message = (
                "Exporting through a TensorFlow-backend subprocess failed: "
                f"{_subprocess_error(result.stderr)}"
            )
            if "No module named 'tensorflow'" in result.stderr:
                message += (
                    "\nThe export needs TensorFlow: `pip install tensorflow`."
                )
            raise RuntimeError(
                message
                + "\n\nSubprocess error output (last 3000 characters):\n"
                + result.stderr[-3000:]
            )
    return path

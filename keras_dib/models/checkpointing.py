"""Crash-safe checkpoints of a greedy fit: write atomically, resume exactly.

A checkpoint is one file, `<checkpoint_dir>/fit_checkpoint.npz`, rewritten
after every epoch: every model variable (weights, batch-normalization
statistics, dropout seed states), the optimizer of the stage being trained,
which stage and epoch were completed, the History so far and the seed of
the data order. It is written to a temporary file, flushed to disk and then
renamed over the old one (`os.replace`, atomic on POSIX and Windows), so a
process killed at any point, also during a write, leaves either the old or
the new checkpoint, never a broken one.

In a fit launched as several processes (`keras.distribution.initialize`
on JAX, a multi-worker `tf.distribute` strategy on TensorFlow), only the
chief (process 0) writes the checkpoint; every process reads it on
resume, so the folder must be one they all see.
"""

import json
import os

import keras
import numpy as np

FILENAME = "fit_checkpoint.npz"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint does not belong to this fit or cannot be read."""


def _to_numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Cannot store {type(value).__name__} in a checkpoint")


# The metadata a checkpoint must hold, and the type of each value.
_META_TYPES = {
    "fingerprint": dict,
    "num_model_variables": int,
    "num_optimizer_variables": int,
    "position": int,
    "stage": (int, type(None)),
    "seed": int,
    "epochs_done": int,
    "history": dict,
    "block_histories": list,
    "stage_history": dict,
}

# Fingerprint entries a fit may change on request (`resume=
# "allow_changes"`): the run's data and hyperparameters. The others
# (schedule, epochs, batch size, variable shapes) fix what the checkpoint
# means and always have to match.
CHANGEABLE = ("data", "objective", "optimizer")

RESUME_MODES = ("strict", "allow_changes")


def normalize(value):
    """`value` as it reads back from a checkpoint's JSON (lists, not
    tuples; NumPy scalars as Python numbers; other objects as strings)."""

    def default(item):
        try:
            return _json_default(item)
        except TypeError:
            return str(item)

    return json.loads(json.dumps(value, default=default))


def _first_difference(key, saved, expected):
    """`(path, saved, expected)` of the first differing nested entry."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        for name in list(expected) + [k for k in saved if k not in expected]:
            if saved.get(name) != expected.get(name):
                return _first_difference(
                    f"{key}.{name}", saved.get(name), expected.get(name)
                )
    return key, saved, expected


class FitCheckpoint:
    """Reads and atomically writes the checkpoint of one greedy fit.

    Args:
        directory: folder of the checkpoint; created when missing (see
            `prepare`).
        fingerprint: dict describing the fit (schedule, epochs per block,
            batch size, variable shapes, data, objective and optimizer
            configs); a checkpoint written by a different fit is refused
            instead of silently mixed in.
        resume: `"strict"` (default): any difference is refused;
            `"allow_changes"`: differences in the `CHANGEABLE` entries are
            accepted.
        writer: whether this process writes the checkpoint (True, the
            default; False for the processes of a multi-process fit other
            than the chief). A reader creates, writes and deletes nothing,
            and does not compare the `data` entry: each process of a
            multi-process fit may feed its own share of the data, and the
            checkpoint holds the chief's.
    """

    def __init__(self, directory, fingerprint, resume="strict", writer=True):
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(
            directory
        ):
            raise ValueError(
                "`checkpoint_dir` should be a folder path. Received: "
                f"checkpoint_dir={directory!r}"
            )
        if resume not in RESUME_MODES:
            raise ValueError(
                f"`resume` should be one of {RESUME_MODES}. Received: "
                f"resume={resume!r}"
            )
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, FILENAME)
        self.fingerprint = normalize(fingerprint)
        self.resume = resume
        self.writer = writer

    def prepare(self):
        """Creates the folder and writes a probe file, before training.

        Raises:
            ValueError: naming the path, when the folder cannot be created
                or written to (an existing file, a folder under a file, no
                permission...). A reader checks nothing (the chief does).
        """
        if not self.writer:
            return
        probe = f"{self.path}.tmp-probe-{os.getpid()}"
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(probe, "wb") as file:
                file.write(b"probe")
            os.remove(probe)
        except OSError as error:
            raise ValueError(
                f"`checkpoint_dir` {self.directory!r} cannot be used: "
                f"{error.strerror or error} ({type(error).__name__}). Pass "
                "a writable folder path (created when missing)."
            ) from error

    # === Reading ===

    def load(self):
        """Returns the saved state, or None when there is no checkpoint.

        Every piece of metadata is checked before anything is returned,
        so a checkpoint that cannot be resumed is refused before any
        variable is assigned.

        Raises:
            CheckpointError: for an unreadable file, another format
                version, missing or malformed metadata, or a checkpoint of
                a different fit.
        """
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                self._check_meta(meta)
                model_values = [
                    archive[f"model_{i}"]
                    for i in range(meta["num_model_variables"])
                ]
                optimizer_values = [
                    archive[f"optimizer_{i}"]
                    for i in range(meta["num_optimizer_variables"])
                ]
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"The checkpoint {self.path} cannot be read ({error}). It "
                "was not written by keras_dib or was damaged after writing; "
                "move it away to start the fit afresh."
            ) from error
        meta["model_values"] = model_values
        meta["optimizer_values"] = optimizer_values
        return meta

    def _check_meta(self, meta):
        if not isinstance(meta, dict):
            raise CheckpointError(
                f"The checkpoint {self.path} has no metadata dict; move it "
                "away to start the fit afresh."
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"The checkpoint {self.path} has format version "
                f"{meta.get('format_version')!r}; this keras_dib reads "
                f"version {FORMAT_VERSION}."
            )
        for key, types in _META_TYPES.items():
            if key not in meta:
                raise CheckpointError(
                    f"The checkpoint {self.path} lacks its {key!r} entry: it "
                    "was damaged or written by another program. Move it "
                    "away to start the fit afresh."
                )
            value = meta[key]
            if not isinstance(value, types) or isinstance(value, bool):
                raise CheckpointError(
                    f"The checkpoint {self.path} holds {key}={value!r}, not "
                    "a value keras_dib writes: it was damaged. Move it away "
                    "to start the fit afresh."
                )
        for key, expected in self.fingerprint.items():
            received = meta["fingerprint"].get(key)
            if (
                received == expected
                or (self.resume == "allow_changes" and key in CHANGEABLE)
                or (key == "data" and not self.writer)
            ):
                continue
            name, received, expected = _first_difference(
                key, received, expected
            )
            allow = (
                " (or pass `resume='allow_changes'` to continue it with "
                "the change)"
                if key in CHANGEABLE
                else ""
            )
            raise CheckpointError(
                f"The checkpoint in {self.directory} belongs to a "
                f"different fit: its {name} is {received!r}, this fit's "
                f"is {expected!r}. Pass another `checkpoint_dir` (or "
                f"delete this one) to start a new fit{allow}."
            )

    # === Writing ===

    def save(self, model, state):
        """Writes `state` plus the model and optimizer variables atomically
        (nothing on a reader)."""
        if not self.writer:
            return
        os.makedirs(self.directory, exist_ok=True)
        model_values = [_to_numpy(v) for v in model.variables]
        optimizer_values = [_to_numpy(v) for v in model.optimizer.variables]
        meta = dict(state)
        meta.update(
            format_version=FORMAT_VERSION,
            fingerprint=self.fingerprint,
            num_model_variables=len(model_values),
            num_optimizer_variables=len(optimizer_values),
        )
        arrays = {f"model_{i}": v for i, v in enumerate(model_values)}
        arrays.update(
            {f"optimizer_{i}": v for i, v in enumerate(optimizer_values)}
        )
        arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
        temporary = f"{self.path}.tmp-{os.getpid()}"
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.directory)

    def remove_stale_temporaries(self):
        """Deletes temporary files left by a process killed mid-write
        (not on a reader: they may be the chief's, being written)."""
        if not self.writer or not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name.startswith(FILENAME + ".tmp-"):
                os.remove(os.path.join(self.directory, name))


def _fsync_directory(directory):
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def restore_variables(variables, values, owner, path):
    """Assigns saved `values` to `variables`, checking count and shapes."""
    variables = list(variables)
    if len(variables) != len(values):
        raise CheckpointError(
            f"The checkpoint {path} holds {len(values)} {owner} variables; "
            f"this model has {len(variables)}. It belongs to another model."
        )
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise CheckpointError(
                f"The checkpoint {path} holds a {owner} variable of shape "
                f"{tuple(value.shape)} where this model's `{variable.path}` "
                f"has shape {tuple(variable.shape)}. It belongs to another "
                "model."
            )
    for variable, value in zip(variables, values):
        variable.assign(value)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves the fit's state after every epoch of one stage."""

    def __init__(self, checkpoint, state, stage_history):
        super().__init__()
        self.checkpoint = checkpoint
        self.state = state
        self.stage_history = stage_history

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.stage_history.setdefault(key, []).append(float(value))
        self.state["epochs_done"] = epoch + 1
        self.state["stage_history"] = self.stage_history
        self.checkpoint.save(self.model, self.state)


class ShuffledArrays(keras.utils.PyDataset):
    """Array batches in an order fixed by (seed, stage, epoch).

    Keras shuffles arrays with a different global generator on each backend
    (NumPy, `tf.random`, `torch`), whose state a checkpoint cannot restore
    in a new process. This dataset draws each epoch's permutation from its
    own seed instead, so a resumed fit sees the batches an uninterrupted
    fit would have seen. With `drop_remainder`, a final partial batch is
    not served (the samples left out change with each epoch's order).
    """

    def __init__(
        self,
        arrays,
        batch_size,
        seed,
        stage,
        initial_epoch,
        shuffle=True,
        drop_remainder=False,
    ):
        super().__init__()
        self.drop_remainder = drop_remainder
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.stage = stage
        self.shuffle = shuffle
        self.num_samples = len(arrays[1])
        self.epoch = initial_epoch
        self._order = self._permutation()

    def _permutation(self):
        if not self.shuffle:
            return np.arange(self.num_samples)
        generator = np.random.default_rng([self.seed, self.stage, self.epoch])
        return generator.permutation(self.num_samples)

    def __len__(self):
        if self.drop_remainder:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __getitem__(self, index):
        indices = self._order[
            index * self.batch_size : (index + 1) * self.batch_size
        ]
        return keras.tree.map_structure(
            lambda array: array[indices], self.arrays
        )

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()

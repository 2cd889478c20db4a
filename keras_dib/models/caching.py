"""Cache of the frozen prefix's outputs for sequential greedy training.

While block `l` trains, blocks `0..l-1` are frozen and deterministic
(inference mode, no dropout), so their output for a given image never
changes. Without augmentation it can be computed once per block instead of
once per epoch: `PrefixCache` keeps the output of the blocks trained so far
for the whole training (and validation) set in host memory and advances it
by one block at each stage change, which costs one inference pass through
one block per stage.
"""

import keras
import numpy as np

from keras_dib.models.validation import training_samples


def _materialize(data, name):
    """(x, y[, sample_weight]) NumPy arrays from a finite dataset."""
    batches = []
    if isinstance(data, keras.utils.PyDataset):
        batches = [data[index] for index in range(len(data))]
    elif hasattr(data, "element_spec") or hasattr(data, "__iter__"):
        cardinality = getattr(data, "cardinality", None)
        if cardinality is not None and int(cardinality()) == -1:
            raise ValueError(
                f"`cache_prefix=True` needs a finite `{name}`; this dataset "
                "repeats forever (remove `.repeat()`)."
            )
        batches = list(data)
    if not batches or not isinstance(batches[0], (tuple, list)):
        raise ValueError(
            f"`cache_prefix=True` needs `{name}` as arrays or as a finite "
            "dataset of (images, labels) batches. Received: "
            f"{type(data).__name__}"
        )
    width = len(batches[0])
    arrays = tuple(
        np.concatenate(
            [np.asarray(keras.ops.convert_to_numpy(b[i])) for b in batches]
        )
        for i in range(width)
    )
    return arrays, len(batches[0][0])


def as_arrays(x, y, batch_size, kwargs, materialize):
    """Training data as (x, y[, sample_weight]) arrays, or None.

    Arrays are returned as such. Datasets are read into memory once when
    `materialize` is True (for the prefix cache), otherwise None is
    returned. `validation_split` becomes `validation_data` (the last
    fraction, as in Keras, and ignored like there when `validation_data`
    is given); `kwargs` is returned without the consumed keys.
    """
    kwargs = dict(kwargs)
    if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        arrays = [np.asarray(x), np.asarray(y)]
        sample_weight = kwargs.pop("sample_weight", None)
        if sample_weight is not None:
            arrays.append(np.asarray(sample_weight))
        batch_size = batch_size or 32
    elif materialize:
        arrays, dataset_batch = _materialize(x, "x")
        arrays = list(arrays)
        batch_size = dataset_batch
    else:
        return None, batch_size, kwargs
    # As in Keras: `validation_data`, when given, overrides the split.
    cut = training_samples(len(arrays[0]), kwargs)
    kwargs.pop("validation_split", None)
    if cut < len(arrays[0]):
        kwargs["validation_data"] = tuple(a[cut:] for a in arrays)
        arrays = [a[:cut] for a in arrays]
    validation = kwargs.get("validation_data")
    if materialize and validation is not None:
        if isinstance(validation, (tuple, list)):
            validation = tuple(np.asarray(v) for v in validation)
        else:
            validation, _ = _materialize(validation, "validation_data")
        kwargs["validation_data"] = validation
    return tuple(arrays), batch_size, kwargs


class PrefixCache:
    """Outputs of the frozen blocks, advanced one block per stage.

    Args:
        model: the `GreedyLayerwiseModel`.
        arrays: training `(x, y[, sample_weight])` NumPy arrays.
        validation: optional validation tuple of arrays.
        batch_size: batch size of the inference passes.
        verbose: Keras verbosity; the cache size is printed when > 0.
    """

    def __init__(self, model, arrays, validation, batch_size, verbose):
        self.model = model
        self.arrays = arrays
        self.validation = validation
        self.batch_size = batch_size
        self.verbose = verbose
        self.depth = 0
        self.features = arrays[0]
        self.validation_features = (
            validation[0] if validation is not None else None
        )

    def _apply(self, block, values):
        inputs = keras.Input(shape=values.shape[1:], dtype=values.dtype)
        prefix = keras.Model(inputs, block(inputs, training=False))
        return prefix.predict(values, batch_size=self.batch_size, verbose=0)

    def stage_data(self, stage):
        """Training and validation tuples whose inputs skip blocks < stage.

        The inputs are dicts `{"inputs": images, "block_inputs": cached}`
        (the images stay available to objectives that compress them).
        """
        while self.depth < stage:
            block = self.model.blocks[self.depth]
            self.features = self._apply(block, self.features)
            if self.validation_features is not None:
                self.validation_features = self._apply(
                    block, self.validation_features
                )
            self.depth += 1
        if self.verbose:
            size = self.features.nbytes
            if self.validation_features is not None:
                size += self.validation_features.nbytes
            print(
                f"Cached the output of blocks 1-{stage}: "
                f"{self.features.shape[0]} x {self.features.shape[1:]} "
                f"{self.features.dtype} ({size / 2**20:,.1f} MiB in host "
                "memory).",
                flush=True,
            )
        train = (
            {"inputs": self.arrays[0], "block_inputs": self.features},
        ) + tuple(self.arrays[1:])
        validation = None
        if self.validation is not None:
            validation = (
                {
                    "inputs": self.validation[0],
                    "block_inputs": self.validation_features,
                },
            ) + tuple(self.validation[1:])
        return train, validation

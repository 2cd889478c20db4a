"""The pieces `GreedyLayerwiseModel.fit` composes, one concern each.

- `check_fit_arguments`: the arguments `keras.Model.fit` does not know.
- `Resume`: the fit's checkpoint: what is already done, what to restore,
  and the callback that writes the next checkpoint.
- `StageData`: the data one stage trains on (user data as it is, arrays in
  a restorable order, or the frozen prefix's cached output).
- `FitHistory`: every stage's History merged into one Keras History.
- `BlockCallback`: the base class of callbacks with block hooks.
"""

import keras
import numpy as np

from keras_dib.models import caching
from keras_dib.models import checkpointing


def check_fit_arguments(model, schedule, block_optimizer, cache_prefix, kwargs):
    """Raises a clear ValueError for fit arguments that cannot work."""
    if not model.compiled:
        raise ValueError(
            "You must call `compile()` before `fit()`, for example "
            "model.compile(optimizer='adam', "
            "loss=keras_dib.losses.DIB(), metrics=['accuracy'])."
        )
    if schedule.trains_locally:
        model.objective  # noqa: B018 (raises for an unusable loss)
    if kwargs.get("initial_epoch", 0):
        raise ValueError(
            "`initial_epoch` is not supported by the greedy schedules "
            "(resume with `checkpoint_dir` instead). Received: "
            f"initial_epoch={kwargs['initial_epoch']}"
        )
    if block_optimizer is not None and not callable(block_optimizer):
        raise ValueError(
            "`block_optimizer` should be a callable block_index -> "
            f"optimizer. Received: block_optimizer={block_optimizer!r}"
        )
    if cache_prefix not in (True, False):
        raise ValueError(
            "`cache_prefix` should be True or False. Received: "
            f"cache_prefix={cache_prefix!r}"
        )
    if cache_prefix and not schedule.supports_cache_prefix:
        raise ValueError(
            "`cache_prefix=True` needs schedule='sequential' (only "
            "then are earlier blocks frozen). Received: "
            f"schedule={schedule.name!r}"
        )


class BlockCallback(keras.callbacks.Callback):
    """A Keras callback that is also told when a greedy block begins and ends.

    `GreedyLayerwiseModel.fit` runs one Keras `fit` per stage, so
    `on_train_begin`/`on_train_end` are called once per block; these hooks
    mark the blocks themselves. For the `"simultaneous"` and `"end_to_end"`
    schedules (one stage for all blocks) `block` is None. Any callback
    defining methods of these names is called too.

    Example:

    >>> class Announce(keras_dib.BlockCallback):
    ...     def on_block_end(self, block, logs=None):
    ...         print(f"block {block}: accuracy {logs['accuracy']:.3f}")
    >>> model.fit(x, y, epochs=2, callbacks=[Announce()])
    """

    def on_block_begin(self, block, logs=None):
        """Called before block `block` (0-based) starts training.

        Args:
            block: index of the block, or None for a stage that trains
                every block at once.
            logs: dict, empty.
        """

    def on_block_end(self, block, logs=None):
        """Called after block `block` (0-based) finished training.

        Args:
            block: index of the block, or None for a stage that trains
                every block at once.
            logs: dict of the block's last-epoch metrics.
        """


def call_block_hook(callbacks, hook, block, logs):
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(block, logs)


class FitHistory:
    """Every stage's epochs concatenated, with a `"block"` entry per epoch."""

    def __init__(self, merged=None, block_histories=None):
        self.merged = merged if merged is not None else {"block": []}
        self.block_histories = block_histories or []

    def add(self, stage, stage_history):
        self.block_histories.append(dict(stage_history))
        num_epochs = 0
        for key, values in stage_history.items():
            self.merged.setdefault(key, [])
            self.merged[key].extend(values)
            num_epochs = len(values)
        block = stage.block if stage.block is not None else -1
        self.merged["block"].extend([block] * num_epochs)

    def as_keras_history(self, model, params):
        history = keras.callbacks.History()
        history.set_model(model)
        history.history = self.merged
        history.epoch = list(range(len(self.merged["block"])))
        history.block_histories = self.block_histories
        history.params = params
        return history


class Resume:
    """The fit's checkpoint: load and restore on entry, save every epoch.

    Inert (nothing saved or restored) when `directory` is None.

    Args:
        model: the `GreedyLayerwiseModel`.
        directory: the `checkpoint_dir` argument of `fit`, or None.
        fingerprint: dict describing the fit; a checkpoint with another
            fingerprint is refused.
    """

    def __init__(self, model, directory, fingerprint):
        self.checkpoint = None
        self.saved = None
        self.seed = None
        if directory is None:
            return
        self.checkpoint = checkpointing.FitCheckpoint(directory, fingerprint)
        self.saved = self.checkpoint.load()
        if self.saved is not None:
            checkpointing.restore_variables(
                model.variables,
                self.saved["model_values"],
                "model",
                self.checkpoint.path,
            )
        self.checkpoint.remove_stale_temporaries()
        self.seed = (
            self.saved["seed"]
            if self.saved is not None
            else int(np.random.randint(0, 2**31 - 1))
        )

    @property
    def enabled(self):
        return self.checkpoint is not None

    def history(self):
        """The History of the finished stages (empty on a fresh fit)."""
        if self.saved is None:
            return FitHistory()
        return FitHistory(self.saved["history"], self.saved["block_histories"])

    def stage_start(self, stage):
        """`(initial_epoch, stage_history)` of a stage, None if it is done.

        A stage before the checkpoint's is done (already in `history()`);
        the checkpoint's own stage continues after its last saved epoch.
        """
        saved = self.saved
        if saved is None or stage.position > saved["position"]:
            return 0, {}
        if stage.position < saved["position"]:
            return None
        return saved["epochs_done"], saved["stage_history"]

    def restore_optimizer(self, model):
        checkpointing.restore_variables(
            model.optimizer.variables,
            self.saved["optimizer_values"],
            "optimizer",
            self.checkpoint.path,
        )

    def callbacks(self, stage, history, stage_history):
        """The callback writing this stage's checkpoints (or none)."""
        if not self.enabled:
            return []
        state = {
            "position": stage.position,
            "stage": stage.block,
            "seed": self.seed,
            "history": history.merged,
            "block_histories": history.block_histories,
        }
        return [
            checkpointing.CheckpointCallback(
                self.checkpoint,
                state,
                {k: list(v) for k, v in stage_history.items()},
            )
        ]


class StageData:
    """The `(x, y, batch_size)` and fit kwargs each stage trains on.

    Arrays (`x`, `y`[, `sample_weight`]) are handled here rather than by
    Keras when checkpointing (the data order must be restorable:
    `ShuffledArrays`) or caching the frozen prefix (the inputs change per
    stage: `PrefixCache`); anything else goes to Keras as it is.
    """

    def __init__(
        self, model, x, y, batch_size, kwargs, resume, cache_prefix, verbose
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.kwargs = kwargs
        self.resume = resume
        self.arrays = None
        self.cache = None
        if resume.enabled or cache_prefix:
            self.arrays, self.batch_size, self.kwargs = caching.as_arrays(
                x, y, batch_size, kwargs, materialize=cache_prefix
            )
        if cache_prefix:
            self.cache = caching.PrefixCache(
                model,
                self.arrays,
                self.kwargs.get("validation_data"),
                self.batch_size,
                verbose,
            )

    def uses_cache(self, stage):
        """Whether the stage reads the cached prefix (not block 0)."""
        return self.cache is not None and bool(stage.block)

    def for_stage(self, stage, initial_epoch):
        """`((x, y, batch_size), fit_kwargs)` of one stage."""
        stage_kwargs = dict(self.kwargs)
        arrays = self.arrays
        if self.uses_cache(stage):
            arrays, validation = self.cache.stage_data(stage.block)
            if validation is not None:
                stage_kwargs["validation_data"] = validation
        if arrays is None:
            return (self.x, self.y, self.batch_size), stage_kwargs
        if self.resume.enabled:
            data = checkpointing.ShuffledArrays(
                arrays,
                self.batch_size,
                self.resume.seed,
                stage.position,
                initial_epoch,
                shuffle=stage_kwargs.pop("shuffle", True),
            )
            stage_kwargs["shuffle"] = False
            return (data, None, None), stage_kwargs
        if len(arrays) == 3:
            stage_kwargs["sample_weight"] = arrays[2]
        return (arrays[0], arrays[1], self.batch_size), stage_kwargs

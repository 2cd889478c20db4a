"""The pieces `GreedyLayerwiseModel.fit` composes, one concern each.

- `check_fit_arguments`: the arguments `keras.Model.fit` does not know.
- `fit_fingerprint`: what a checkpoint must match to be resumed.
- `Resume`: the fit's checkpoint: what is already done, what to restore,
  and the callback that writes the next checkpoint.
- `StageData`: the data one stage trains on (user data as it is, arrays in
  a restorable order, or the frozen prefix's cached output).
- `StageRun`: one stage: enter it, run Keras' own `fit` with the guards
  and the checkpoint callback, merge its History.
- `FitHistory`: every stage's History merged into one Keras History.
- `check_select_depth` / `select_depth`: keeping the network truncated at
  the block with the best validation metric.
- `BlockCallback`: the base class of callbacks with block hooks.
"""

import hashlib
import warnings

import keras
import numpy as np

from keras_dib import _compat
from keras_dib.models import caching
from keras_dib.models import checkpointing
from keras_dib.models import validation
from keras_dib.models.validation import NaNGuard
from keras_dib.models.validation import WeightGuard

# Elements of an array read for its content hash (a strided sample).
_HASH_SAMPLE = 2**20


def check_fit_arguments(
    model, schedule, block_optimizer, cache_prefix, kwargs, callbacks=None
):
    """Raises a clear ValueError for fit arguments that cannot work.

    Also refuses a callback that monitors a validation metric (`monitor`
    starting with `"val_"`, as `keras.callbacks.EarlyStopping` or
    `ModelCheckpoint`) when `fit` gets no validation data: Keras would only
    warn, and the callback would silently do nothing.
    """
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
    if not _has_validation(kwargs):
        for callback in callbacks or []:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("val_"):
                raise ValueError(
                    f"The callback {type(callback).__name__} monitors "
                    f"{monitor!r}, but `fit` has no validation data: pass "
                    "`validation_data` or `validation_split`. Received "
                    "neither."
                )


def sample_shape(x):
    """The shape of one training sample of `fit`'s `x`, to build from.

    Raises:
        ValueError: for data whose shape cannot be read.
    """
    if hasattr(x, "element_spec"):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        return tuple(spec.shape)[1:]
    if isinstance(x, keras.utils.PyDataset):
        return tuple(np.shape(x[0][0])[1:])
    if hasattr(x, "shape"):
        return tuple(x.shape[1:])
    raise ValueError(
        "Cannot infer the input shape from the training data. Pass "
        "`input_shape` to GreedyLayerwiseModel (or call "
        f"`model.build`). Received data of type {type(x).__name__}"
    )


# Optimizer steps below which a block trained on its own is undertrained
# (GTSRB, 4,000 images, VGG-11, 2 epochs a block: 62 steps a block gave
# 68% of end to end's test accuracy at the same passes, 250 steps 97%).
MIN_STEPS_PER_BLOCK = 200


def steps_per_epoch(x, batch_size, kwargs):
    """Training batches per epoch of `fit`'s data, or None if unknown."""
    steps = kwargs.get("steps_per_epoch")
    if steps:
        return int(steps)
    if hasattr(x, "cardinality"):
        steps = int(x.cardinality())
        return steps if steps > 0 else None
    if isinstance(x, keras.utils.PyDataset):
        try:
            return len(x)
        except (NotImplementedError, TypeError):
            return None
    if hasattr(x, "shape"):
        samples = validation.training_samples(int(x.shape[0]), kwargs)
        return -(-samples // (batch_size or 32))
    return None


def warn_few_steps(schedule, stages, x, batch_size, kwargs):
    """Warns when a block trained in turn gets few optimizer steps.

    Greedy blocks start from scratch one after another, so each needs a
    few hundred steps; on a small training set with a large batch they get
    far fewer than one end-to-end fit of the same passes gives the network.
    """
    if not getattr(schedule, "trains_blocks_in_turn", False):
        return
    steps = steps_per_epoch(x, batch_size, kwargs)
    block_stages = [s for s in stages if s.epochs and s.block is not None]
    if steps is None or not block_stages:
        return
    fewest = min(steps * s.epochs for s in block_stages)
    if fewest < MIN_STEPS_PER_BLOCK:
        warnings.warn(
            f"A block gets only {fewest} optimizer steps ({steps} batches "
            f"an epoch); blocks trained in turn need a few hundred "
            f"(>= {MIN_STEPS_PER_BLOCK}) to reach end to end's accuracy. "
            "Use a smaller batch size or more epochs per block.",
            stacklevel=3,
        )


def _has_validation(kwargs):
    return kwargs.get("validation_data") is not None or bool(
        kwargs.get("validation_split")
    )


def check_select_depth(select_depth, schedule, kwargs):
    """Raises a clear ValueError for a `select_depth` that cannot work."""
    if select_depth is None:
        return
    if not isinstance(select_depth, str) or not select_depth.startswith("val_"):
        raise ValueError(
            "`select_depth` should be None or the name of a validation "
            "metric, such as 'val_accuracy' or 'val_loss'. Received: "
            f"select_depth={select_depth!r}"
        )
    if not getattr(schedule, "trains_blocks_in_turn", False):
        raise ValueError(
            "`select_depth` needs a schedule that trains the blocks in "
            "turn (schedule='sequential'), so that each block's validation "
            "metric is its own head's. Received: "
            f"schedule={schedule.name!r}"
        )
    if not _has_validation(kwargs):
        raise ValueError(
            f"`select_depth={select_depth!r}` chooses the depth on "
            "validation data: pass `validation_data` or "
            "`validation_split`. Received neither."
        )


def check_depth_patience(depth_patience, select_depth):
    """Raises a clear ValueError for a `depth_patience` that cannot work."""
    if depth_patience is None:
        return
    if (
        isinstance(depth_patience, bool)
        or not isinstance(depth_patience, (int, np.integer))
        or depth_patience < 1
    ):
        raise ValueError(
            "`depth_patience` should be None or a positive integer (blocks "
            "without improvement before the schedule stops). Received: "
            f"depth_patience={depth_patience!r}"
        )
    if select_depth is None:
        raise ValueError(
            "`depth_patience` stops on `select_depth`'s validation metric: "
            "pass `select_depth` too, such as 'val_accuracy'. Received: "
            f"depth_patience={depth_patience!r} with select_depth=None."
        )


def depth_patience_spent(fit_history, monitor, patience, verbose=0):
    """Whether `patience` trained blocks in a row missed the best `monitor`.

    Args:
        fit_history: the fit's `FitHistory` so far.
        monitor: `select_depth`'s validation metric name.
        patience: `fit`'s `depth_patience` (None: never).
        verbose: Keras verbosity; if non-zero, the stop is printed.

    Returns:
        True if the blocks after the best one so far number `patience` or
        more: the schedule should train no further block.
    """
    if patience is None or not fit_history.block_histories:
        return False
    best, scores = select_depth(fit_history, monitor)
    since = sorted(block for block in scores if block > best)
    if len(since) < patience:
        return False
    if verbose != 0:
        print(
            f"Depth patience: {monitor} has not improved on block "
            f"{best + 1}'s {scores[best]:.4f} for {len(since)} blocks; "
            "the deeper blocks are not trained.",
            flush=True,
        )
    return True


def select_depth(fit_history, monitor):
    """The block whose validation `monitor` was best when it finished.

    Each block's score is the last value of `monitor` logged while it was
    the block being trained (its own head's metric). Metrics whose name
    contains `"loss"` are minimised, others maximised (as
    `keras.callbacks.EarlyStopping`'s `mode="auto"`); on ties the shallower
    block wins.

    Args:
        fit_history: the fit's `FitHistory`.
        monitor: a validation metric name, e.g. `"val_accuracy"`.

    Returns:
        `(block, scores)`: the 0-based index of the chosen block and a dict
        `{block: score}` of every trained block.

    Raises:
        ValueError: if no block logged `monitor` (naming the logged
            metrics).
    """
    scores = {}
    position = 0
    blocks = fit_history.merged["block"]
    for stage_history in fit_history.block_histories:
        num_epochs = _num_epochs(stage_history)
        block = blocks[position] if num_epochs else None
        position += num_epochs
        values = stage_history.get(monitor)
        if block is not None and block >= 0 and values:
            scores[block] = float(values[-1])
    if not scores:
        logged = sorted(fit_history.merged)
        raise ValueError(
            f"`select_depth={monitor!r}`: no block logged {monitor!r}. "
            f"Logged metrics: {logged}"
        )
    sign = -1.0 if "loss" in monitor else 1.0
    best = max(sorted(scores), key=lambda block: sign * scores[block])
    return best, scores


def apply_depth_selection(model, history, monitor, verbose):
    """Sets `model.inference_blocks` from `select_depth` after a fit.

    Returns:
        The History `params` entries: `inference_blocks` (and, with a
        `monitor`, `depth_scores`).
    """
    if monitor is None:
        return {"inference_blocks": model.inference_blocks}
    block, scores = select_depth(history, monitor)
    model.inference_blocks = block + 1
    if verbose != 0:
        last = scores.get(model.num_blocks - 1, float("nan"))
        print(
            f"Depth selection on {monitor}: the network keeps {block + 1} "
            f"of {model.num_blocks} blocks ({monitor} {scores[block]:.4f}; "
            f"last block {last:.4f}).",
            flush=True,
        )
    return {"inference_blocks": block + 1, "depth_scores": scores}


class StageRun:
    """Runs one stage of a greedy fit: enter, Keras `fit`, merge History.

    Args:
        model: the `GreedyLayerwiseModel`.
        keras_fit: `keras.Model.fit` bound to the model (its `super().fit`).
        schedule: the `Schedule` being fitted.
        data: the fit's `StageData`.
        resume: the fit's `Resume`.
        history: the fit's `FitHistory`, which each stage extends.
        block_optimizer: optional callable `block_index -> optimizer`.
        verbose: Keras verbosity.
        callbacks: the user's callbacks (block hooks called too).
    """

    def __init__(
        self,
        model,
        keras_fit,
        schedule,
        data,
        resume,
        history,
        block_optimizer,
        verbose,
        callbacks,
    ):
        self.model = model
        self.keras_fit = keras_fit
        self.schedule = schedule
        self.data = data
        self.resume = resume
        self.history = history
        self.block_optimizer = block_optimizer
        self.verbose = verbose
        self.callbacks = list(callbacks or [])
        # Every stage's optimizer is rebuilt from the config compiled now.
        self.compile_config = model.get_compile_config()

    def __call__(self, stage, start):
        """Trains `stage` from `start = (initial_epoch, stage_history)`."""
        model = self.model
        initial_epoch, stage_history = start
        optimizer = None
        if self.block_optimizer is not None:
            optimizer = self.block_optimizer(stage.block or 0)
        model.enter_stage(
            self.schedule,
            stage.block,
            optimizer=optimizer,
            prefix_cached=self.data.uses_cache(stage),
            compile_config=self.compile_config,
        )
        if initial_epoch:
            self.resume.restore_optimizer(model)
        self._announce(stage, initial_epoch)
        (x, y, batch_size), kwargs = self.data.for_stage(stage, initial_epoch)
        call_block_hook(self.callbacks, "on_block_begin", stage.block, {})
        # The weight guard runs first: no callback (the checkpoint's
        # included) sees the weights of an epoch that broke them.
        guards = [WeightGuard(stage.label, validation.stage_layers(model))]
        nan_guard = NaNGuard(
            stage.label, model._term_trackers.label_errors, model.num_classes
        )
        keras_history = self.keras_fit(
            x,
            y,
            batch_size=batch_size,
            epochs=stage.epochs,
            verbose=self.verbose,
            callbacks=guards
            + self.callbacks
            + [nan_guard]
            + self.resume.callbacks(stage, self.history, stage_history),
            initial_epoch=initial_epoch,
            **kwargs,
        )
        stage_history = dict(stage_history)
        for key, values in keras_history.history.items():
            stage_history[key] = list(stage_history.get(key, [])) + values
        self.history.add(stage, stage_history)
        logs = {key: values[-1] for key, values in stage_history.items()}
        call_block_hook(self.callbacks, "on_block_end", stage.block, logs)

    def _announce(self, stage, initial_epoch):
        if self.verbose == 0:
            return
        if initial_epoch:
            print(
                f"Resuming from the checkpoint: {initial_epoch} of "
                f"{stage.epochs} epochs of this stage done.",
                flush=True,
            )
        model = self.model
        count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        print(model._schedule.describe(model, stage, count), flush=True)


class BlockCallback(keras.callbacks.Callback):
    """A Keras callback that is also told when a greedy block begins and ends.

    `GreedyLayerwiseModel.fit` runs one Keras `fit` per stage, so
    `on_train_begin`/`on_train_end` are called once per block; these hooks
    mark the blocks themselves. For the `"simultaneous"` and `"end_to_end"`
    schedules (one stage for all blocks) `block` is None. Any callback
    defining methods of these names is called too.

    Args:
        None: subclass it and override the hooks (the constructor takes
            no arguments).

    Example:

    >>> class Announce(keras_dib.BlockCallback):
    ...     def on_block_end(self, block, logs=None):
    ...         print(f"block {block}: accuracy {logs['accuracy']:.3f}")
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu") for _ in range(2)],
    ...     head=keras.layers.Dense(3),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(
    ...     optimizer="sgd", loss=keras_dib.losses.DIB(), metrics=["accuracy"]
    ... )
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=16)
    >>> history = model.fit(
    ...     x, y, batch_size=8, epochs=2, callbacks=[Announce()], verbose=0
    ... )
    block 0: accuracy ...
    block 1: accuracy ...
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


def _num_epochs(stage_history):
    return max((len(values) for values in stage_history.values()), default=0)


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
        for key, values in stage_history.items():
            self.merged.setdefault(key, [])
            self.merged[key].extend(values)
        # Validation metrics are shorter with `validation_freq` > 1.
        num_epochs = _num_epochs(stage_history)
        block = stage.block if stage.block is not None else -1
        self.merged["block"].extend([block] * num_epochs)

    def trained_blocks(self):
        """The number of distinct blocks trained (0: whole-network stages)."""
        return len({block for block in self.merged["block"] if block >= 0})

    def as_keras_history(self, model, params):
        history = keras.callbacks.History()
        history.set_model(model)
        history.history = self.merged
        history.epoch = list(range(len(self.merged["block"])))
        history.block_histories = self.block_histories
        history.params = params
        return history


def _content_hash(array):
    """A cheap hash of an array: shape, dtype and a strided sample."""
    array = np.asarray(array)
    flat = np.ascontiguousarray(array).reshape(-1)
    sample = flat[:: max(1, flat.size // _HASH_SAMPLE)]
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(x, y, sample_weight=None):
    """What identifies the training data, cheaply.

    Arrays: the number of samples and a content hash of the images (a
    strided sample of about a million values), the labels and the sample
    weights. A `tf.data.Dataset`: its cardinality and element spec. A
    `keras.utils.PyDataset`: its number of batches and the shapes of its
    first batch. Anything else: its type.
    """
    if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        x, y = np.asarray(x), np.asarray(y)
        record = {
            "num_samples": len(x),
            "images": _content_hash(x),
            "labels": _content_hash(y),
        }
        if sample_weight is not None:
            record["sample_weight"] = _content_hash(sample_weight)
        return record
    if hasattr(x, "element_spec"):
        return {
            "cardinality": int(x.cardinality()),
            "element_spec": str(x.element_spec),
        }
    if isinstance(x, keras.utils.PyDataset):
        first = keras.tree.flatten(x[0])
        return {
            "num_batches": len(x),
            "first_batch_shapes": [list(np.shape(a)) for a in first],
        }
    return {"type": type(x).__name__}


def _config(value):
    """A serialized config without its `name` (Keras makes names unique
    per process: `sgd`, `sgd_1`, ...; a name changes no computation)."""
    if hasattr(value, "get_config"):
        value = keras.saving.serialize_keras_object(value)
    if isinstance(value, dict) and isinstance(value.get("config"), dict):
        config = dict(value["config"])
        config.pop("name", None)
        value = {**value, "config": config}
    return value


def fit_fingerprint(model, schedule, stages, batch_size, x, y, kwargs):
    """The fit's identity, stored in its checkpoint (see `Resume`).

    The structure (schedule, epochs per stage, batch size, the model's
    variable shapes) and the run: the training data (`data_fingerprint`),
    the compiled objective's and optimizer's configs.
    """
    config = model.get_compile_config()
    return {
        "schedule": schedule.name,
        "epochs": [stage.epochs for stage in stages],
        "batch_size": batch_size,
        "model_variable_shapes": [list(v.shape) for v in model.variables],
        "data": data_fingerprint(x, y, kwargs.get("sample_weight")),
        "objective": _config(config.get("loss")),
        "optimizer": _config(config.get("optimizer")),
    }


class Resume:
    """The fit's checkpoint: load and restore on entry, save every epoch.

    Inert (nothing saved or restored) when `directory` is None. Otherwise
    the folder is created and probed for writing, and the checkpoint read
    and checked whole, before any variable is assigned.

    Args:
        model: the `GreedyLayerwiseModel`.
        directory: the `checkpoint_dir` argument of `fit`, or None.
        fingerprint: dict describing the fit (`fit_fingerprint`); a
            checkpoint with another fingerprint is refused. Unused (may be
            None) when `directory` is None.
        resume: `"strict"` or `"allow_changes"` (the `resume` argument of
            `fit`; see `checkpointing.FitCheckpoint`).
    """

    def __init__(self, model, directory, fingerprint, resume="strict"):
        self.checkpoint = None
        self.saved = None
        self.seed = None
        if resume not in checkpointing.RESUME_MODES:
            raise ValueError(
                f"`resume` should be one of {checkpointing.RESUME_MODES}. "
                f"Received: resume={resume!r}"
            )
        if directory is None:
            return
        self.checkpoint = checkpointing.FitCheckpoint(
            directory,
            fingerprint,
            resume,
            writer=_compat.is_chief_process(model),
        )
        self.checkpoint.prepare()
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
    `ShuffledArrays`), caching the frozen prefix (the inputs change per
    stage: `PrefixCache`) or dropping a final partial batch smaller than
    `floor` (`ShuffledArrays(drop_remainder=True)`); anything else goes to
    Keras as it is.

    Args:
        model, x, y, batch_size, kwargs, verbose: as given to `fit`.
        resume: the fit's `Resume`.
        cache_prefix: the `cache_prefix` argument of `fit`.
        floor: the smallest batch trained (`validation.min_batch_size`).
    """

    def __init__(
        self,
        model,
        x,
        y,
        batch_size,
        kwargs,
        resume,
        cache_prefix,
        verbose,
        floor=1,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.kwargs = kwargs
        self.resume = resume
        self.arrays = None
        self.cache = None
        self.drop_remainder = False
        self.seed = resume.seed
        if resume.enabled or cache_prefix or validation.is_array(x):
            arrays, size, arrays_kwargs = caching.as_arrays(
                x, y, batch_size, kwargs, materialize=cache_prefix
            )
            if arrays is not None:
                remainder = len(arrays[1]) % size
                self.drop_remainder = 0 < remainder < floor
            if resume.enabled or cache_prefix or self.drop_remainder:
                self.arrays, self.batch_size = arrays, size
                self.kwargs = arrays_kwargs
        if self.drop_remainder and self.seed is None:
            self.seed = int(np.random.randint(0, 2**31 - 1))
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
        if self.resume.enabled or self.drop_remainder:
            data = checkpointing.ShuffledArrays(
                arrays,
                self.batch_size,
                self.seed,
                stage.position,
                initial_epoch,
                shuffle=stage_kwargs.pop("shuffle", True),
                drop_remainder=self.drop_remainder,
            )
            stage_kwargs["shuffle"] = False
            return (data, None, None), stage_kwargs
        if len(arrays) == 3:
            stage_kwargs["sample_weight"] = arrays[2]
        return (arrays[0], arrays[1], self.batch_size), stage_kwargs

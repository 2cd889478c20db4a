"""The greedy layer-wise trainer: a Keras Model whose `fit` trains blocks."""

import contextlib
import copy

import keras
import numpy as np
from keras import ops
from keras.src.losses.loss import unscale_loss_for_distribution

from keras_dib.losses.dib import LocalObjective
from keras_dib.models import caching
from keras_dib.models import checkpointing
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.models.validation import NaNGuard
from keras_dib.models.validation import validate_fit_inputs

SCHEDULES = ("sequential", "simultaneous", "end_to_end")


def _serialize_list(layers):
    return [keras.saving.serialize_keras_object(layer) for layer in layers]


def _deserialize_list(configs):
    return [keras.saving.deserialize_keras_object(c) for c in configs]


@keras.saving.register_keras_serializable(package="keras_dib")
class GreedyLayerwiseModel(keras.Model):
    """A CNN cut into blocks, trained one block at a time with local losses.

    Calling the model runs the plain inference network, `head(block_n(...
    block_1(x)))`, without auxiliary heads, so `predict`, `evaluate`,
    `save` and `export` work as for any Keras model. `fit` trains it
    greedily (the default `schedule="sequential"`): block 1 with its
    auxiliary head on the compiled local objective (for example
    `keras_dib.losses.DIB`), then block 1 is frozen (no gradient, batch
    normalization in inference mode) and block 2 is trained on its output,
    and so on; the last block is trained through the real `head`.

    Each block gets a fresh optimizer (rebuilt from the compile config, so a
    learning-rate schedule restarts per block) and a re-traced train step.
    The frozen prefix runs under `stop_gradient` with non-trainable
    variables, so none of its activations are kept for backpropagation:
    that is where the memory saving over end-to-end training comes from.

    While a block trains, the model's output is its auxiliary head's logits,
    so compiled metrics (`"accuracy"`) and validation metrics describe the
    block being trained. The objective's terms are reported as the metrics
    `cross_entropy` and `compression` (or `entropy`).

    Other schedules: `"simultaneous"` trains every block at once, each on
    its own local objective with the gradient stopped between blocks
    (Decoupled Greedy Learning), and `"end_to_end"` trains the inference
    network by ordinary backpropagation on the cross-entropy, for
    comparison.

    Args:
        blocks: list of Keras layers (or models), applied in order.
        head: Keras layer mapping the last block's output to class logits.
        auxiliary_heads: optional list of `len(blocks) - 1` layers, the
            auxiliary classifiers of all blocks but the last. Defaults to
            `keras_dib.models.AuxiliaryHead(num_classes)` for each.
        num_classes: int, number of classes; required when
            `auxiliary_heads` is not given, and checked against the heads'
            outputs.
        input_shape: optional tuple, the shape of one input sample (without
            batch axis). If given, the model is built at once; otherwise on
            the first batch of `fit`.
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Example:

    >>> blocks = [
    ...     keras.Sequential([keras.layers.Conv2D(16, 3, padding="same"),
    ...                       keras.layers.ReLU()]),
    ...     keras.Sequential([keras.layers.Conv2D(32, 3, strides=2),
    ...                       keras.layers.ReLU()]),
    ... ]
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     blocks,
    ...     head=keras_dib.models.AuxiliaryHead(10, grid_size=1),
    ...     num_classes=10,
    ...     input_shape=(32, 32, 3),
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.DIB(alpha=1.01, beta=0.01),
    ...     metrics=["accuracy"],
    ... )
    >>> history = model.fit(x_train, y_train, batch_size=128, epochs=[2, 3])
    >>> history.history["block"]  # [0, 0, 1, 1, 1]

    References:
        - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
          Matrix-based Entropy Functional", ICASSP 2021.
          https://arxiv.org/abs/2102.00533
        - Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can
          Scale to ImageNet", ICML 2019. https://arxiv.org/abs/1812.11446
        - Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of
          CNNs", ICML 2020. https://arxiv.org/abs/1901.08164
    """

    def __init__(
        self,
        blocks,
        head,
        auxiliary_heads=None,
        num_classes=None,
        input_shape=None,
        **kwargs,
    ):
        if not isinstance(blocks, (list, tuple)) or not blocks:
            raise ValueError(
                "`blocks` should be a non-empty list of Keras layers. "
                f"Received: blocks={blocks!r}"
            )
        for index, block in enumerate(blocks):
            if not isinstance(block, keras.layers.Layer):
                raise ValueError(
                    "Every block should be a Keras layer or model. Received: "
                    f"blocks[{index}]={block!r}"
                )
        if not isinstance(head, keras.layers.Layer):
            raise ValueError(
                f"`head` should be a Keras layer. Received: head={head!r}"
            )
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 2
        ):
            raise ValueError(
                "`num_classes` should be an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        if auxiliary_heads is None:
            if num_classes is None:
                raise ValueError(
                    "Pass `num_classes` (to create the default auxiliary "
                    "heads) or `auxiliary_heads` (a list of "
                    f"{len(blocks) - 1} layers). Received neither."
                )
            auxiliary_heads = [
                AuxiliaryHead(num_classes, name=f"auxiliary_head_{index}")
                for index in range(len(blocks) - 1)
            ]
        if (
            not isinstance(auxiliary_heads, (list, tuple))
            or len(auxiliary_heads) != len(blocks) - 1
            or not all(
                isinstance(h, keras.layers.Layer) for h in auxiliary_heads
            )
        ):
            raise ValueError(
                "`auxiliary_heads` should be a list of one Keras layer per "
                f"block but the last ({len(blocks) - 1} layers for "
                f"{len(blocks)} blocks). Received: "
                f"auxiliary_heads={auxiliary_heads!r}"
            )
        if input_shape is not None:
            input_shape = tuple(input_shape)
        super().__init__(**kwargs)
        self.blocks = list(blocks)
        self.head = head
        self.auxiliary_heads = list(auxiliary_heads)
        self.num_classes = num_classes
        self._input_shape_arg = input_shape
        # Training state: read in `call`/`compute_loss`, so it is baked into
        # each traced step and only ever changed together with a recompile.
        self._schedule = None
        self._active_block = None
        self._prefix_cached = False
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.regularization_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("compression", "entropy", "hsic", "regularization")
        }
        if input_shape is not None:
            self.build((None,) + input_shape)

    # === Structure ===

    @property
    def num_blocks(self):
        """Number of blocks."""
        return len(self.blocks)

    @property
    def training_heads(self):
        """The head through which each block is trained (last: `head`)."""
        return self.auxiliary_heads + [self.head]

    @property
    def active_block(self):
        """Index of the block being trained sequentially, else None."""
        return self._active_block

    @property
    def schedule(self):
        """The schedule being fitted (`"sequential"`, ...), else None."""
        return self._schedule

    def truncate(self, num_blocks, name=None):
        """The network up to block `num_blocks`, classified by its head.

        Greedy training leaves every block with a trained classifier (its
        auxiliary head), and the accuracy often peaks before the last block
        (measured: block 5 of 8 for VGG-11 on GTSRB at CPU scale). The
        truncated network is `blocks[:num_blocks]` followed by
        `training_heads[num_blocks - 1]`: smaller, faster and, when the
        number of blocks is chosen on a validation split, no worse. It
        SHARES its layers (and so its weights) with this model; save it, or
        `keras.models.clone_model` it, to keep a separate copy.

        Args:
            num_blocks: the number of blocks kept, an integer in
                `1..self.num_blocks` (all of them: the same network).
            name: optional name of the new model. Defaults to
                `"{self.name}_{num_blocks}_blocks"`.

        Returns:
            A `GreedyLayerwiseModel` (not compiled) with the first
            `num_blocks` blocks, their auxiliary heads, and block
            `num_blocks`'s training head as its head; built when this
            model is.

        Example:

        >>> model = keras_dib.build_vgg(11, num_classes=43, width=8)
        >>> model.truncate(5).num_blocks
        5
        >>> short = model.truncate(5)
        >>> short.head is model.training_heads[4]
        True
        """
        if (
            isinstance(num_blocks, bool)
            or not isinstance(num_blocks, (int, np.integer))
            or not 1 <= num_blocks <= self.num_blocks
        ):
            raise ValueError(
                "`num_blocks` should be an integer in "
                f"1..{self.num_blocks}. Received: num_blocks={num_blocks!r}"
            )
        num_blocks = int(num_blocks)
        model = GreedyLayerwiseModel(
            self.blocks[:num_blocks],
            head=self.training_heads[num_blocks - 1],
            auxiliary_heads=self.auxiliary_heads[: num_blocks - 1],
            num_classes=self.num_classes,
            input_shape=self._input_shape_arg,
            name=name or f"{self.name}_{num_blocks}_blocks",
        )
        if self.built and not model.built:
            model.build((None,) + self._expected_input_shape)
        return model

    def build(self, input_shape):
        self._expected_input_shape = tuple(input_shape)[1:]
        x = keras.KerasTensor(tuple(input_shape))
        for index, block in enumerate(self.blocks):
            x = block(x)
            logits = self.training_heads[index](x)
            classes = logits.shape[-1]
            if self.num_classes is not None and classes != self.num_classes:
                name = (
                    "head"
                    if index == self.num_blocks - 1
                    else f"auxiliary_heads[{index}]"
                )
                raise ValueError(
                    f"`{name}` should output num_classes={self.num_classes} "
                    f"logits. Received: output shape {logits.shape}"
                )
        self.built = True

    # === Forward ===

    def call(self, inputs, training=None):
        if self._schedule in (None, "end_to_end"):
            x = inputs
            for block in self.blocks:
                x = block(x, training=training)
            return self.head(x, training=training)
        local = []
        x = inputs
        if self._prefix_cached:
            # `fit(cache_prefix=True)`: the frozen blocks' output was
            # computed once, before this stage.
            x = inputs["block_inputs"]
            indices = [self._active_block]
        elif self._schedule == "sequential":
            for block in self.blocks[: self._active_block]:
                x = block(x, training=False)
            indices = [self._active_block]
        else:
            indices = range(self.num_blocks)
        for index in indices:
            block_inputs = ops.stop_gradient(x)
            features = self.blocks[index](block_inputs, training=training)
            logits = self.training_heads[index](features, training=training)
            local.append(
                {
                    "logits": logits,
                    "features": features,
                    "block_inputs": block_inputs,
                }
            )
            x = features
        return {"logits": local[-1]["logits"], "local": local}

    # === Objective ===

    def _objective(self):
        loss = self.loss
        if isinstance(loss, keras.losses.Loss):
            return loss
        raise ValueError(
            "GreedyLayerwiseModel trains blocks on logits and needs a loss "
            "object in `compile()`: a keras_dib.losses.LocalObjective such "
            "as keras_dib.losses.DIB(alpha=1.01, beta=0.01), or a "
            "keras.losses.Loss that takes logits (from_logits=True). "
            f"Received: loss={loss!r}"
        )

    def _regularization_tracker(self):
        objective = self.loss
        if (
            self._schedule in ("sequential", "simultaneous")
            and isinstance(objective, LocalObjective)
            and objective.uses_regularization
        ):
            name = objective.regularization_name
            if name not in self.regularization_trackers:
                name = "regularization"
            return self.regularization_trackers[name]
        return None

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if not isinstance(y_pred, dict):
            return super().compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )
        objective = self._objective()
        tracker = self._regularization_tracker()
        if isinstance(x, dict) and "block_inputs" in x:
            x = x["inputs"]
        total = ops.zeros((), dtype="float32")
        cross_entropies = []
        regularizations = []
        for local in y_pred["local"]:
            # A Keras loss divides its value by the number of replicas under
            # tf.distribute; the batch-level terms below are scaled alike by
            # `_aggregate_additional_loss` (a no-op on JAX and torch).
            cross_entropy = ops.cast(
                objective(y, local["logits"], sample_weight=sample_weight),
                "float32",
            )
            cross_entropies.append(unscale_loss_for_distribution(cross_entropy))
            total = total + cross_entropy
            if tracker is not None:
                value = objective.regularization(
                    x, local["block_inputs"], local["features"], y
                )
                regularizations.append(value)
                total = total + ops.cast(
                    self._aggregate_additional_loss(objective.beta * value),
                    "float32",
                )
        for loss in self.losses:
            total = total + ops.cast(
                self._aggregate_additional_loss(loss), "float32"
            )
        self.cross_entropy_tracker.update_state(
            ops.mean(ops.stack(cross_entropies))
        )
        if tracker is not None:
            tracker.update_state(ops.mean(ops.stack(regularizations)))
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    @property
    def metrics(self):
        metrics = super().metrics
        inactive = [self.cross_entropy_tracker] + list(
            self.regularization_trackers.values()
        )
        if self._schedule in ("sequential", "simultaneous"):
            inactive.remove(self.cross_entropy_tracker)
            tracker = self._regularization_tracker()
            if tracker is not None:
                inactive.remove(tracker)
        return [m for m in metrics if not any(m is t for t in inactive)]

    # === Training schedule ===

    def _epochs_per_block(self, epochs, schedule):
        if schedule != "sequential":
            if isinstance(epochs, bool) or not isinstance(epochs, int):
                raise ValueError(
                    f"With schedule={schedule!r}, `epochs` should be an "
                    f"integer. Received: epochs={epochs!r}"
                )
            return [epochs]
        if isinstance(epochs, (int, np.integer)) and not isinstance(
            epochs, bool
        ):
            epochs = [int(epochs)] * self.num_blocks
        if (
            not isinstance(epochs, (list, tuple))
            or len(epochs) != self.num_blocks
            or not all(
                isinstance(e, (int, np.integer))
                and not isinstance(e, bool)
                and e >= 0
                for e in epochs
            )
        ):
            raise ValueError(
                "`epochs` should be a non-negative integer (epochs per "
                "block) or a list of one non-negative integer per block "
                f"({self.num_blocks} blocks). Received: epochs={epochs!r}"
            )
        return [int(e) for e in epochs]

    def _set_trainable(self, schedule, block_index):
        for index, (block, head) in enumerate(
            zip(self.blocks, self.training_heads)
        ):
            if schedule == "sequential":
                block.trainable = index == block_index
                head.trainable = index == block_index
            elif schedule == "simultaneous":
                block.trainable = True
                head.trainable = True
            else:
                block.trainable = True
                head.trainable = head is self.head

    def _enter_stage(
        self,
        schedule,
        block_index,
        compile_config,
        optimizer,
        prefix_cached=False,
    ):
        self._schedule = schedule
        self._active_block = block_index
        self._prefix_cached = prefix_cached
        self._set_trainable(schedule, block_index)
        # A fresh optimizer and a re-traced step for the new stage: without
        # the recompile TensorFlow would silently keep training the old
        # trainable set, and JAX/torch would raise.
        config = copy.deepcopy(compile_config)
        with self._strategy_scope():
            if optimizer is not None:
                config = keras.saving.deserialize_keras_object(config)
                config["optimizer"] = optimizer(block_index or 0)
                self.compile(**config)
                self.optimizer.build(self.trainable_variables)
            else:
                self.compile_from_config(config)

    def _strategy_scope(self):
        """The tf.distribute scope the model was built in (TensorFlow).

        The per-stage optimizers must be created in it: outside it their
        slot variables are not mirrored and replicas silently drift apart.
        """
        strategy = getattr(self, "distribute_strategy", None)
        if strategy is None:
            return contextlib.nullcontext()
        return strategy.scope()

    def _build_from_data(self, x):
        shape = None
        if hasattr(x, "element_spec"):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, (tuple, list)) else spec
            shape = tuple(spec.shape)
        elif isinstance(x, keras.utils.PyDataset):
            first = x[0]
            shape = (None,) + tuple(np.shape(first[0])[1:])
        elif hasattr(x, "shape"):
            shape = (None,) + tuple(x.shape[1:])
        if shape is None:
            raise ValueError(
                "Cannot infer the input shape from the training data. Pass "
                "`input_shape` to GreedyLayerwiseModel (or call "
                f"`model.build`). Received data of type {type(x).__name__}"
            )
        self.build((None,) + tuple(shape[1:]))

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        schedule="sequential",
        block_optimizer=None,
        checkpoint_dir=None,
        cache_prefix=False,
        **kwargs,
    ):
        """Trains the model block by block (or with another schedule).

        Accepts every argument of `keras.Model.fit`; the differences are:

        Args:
            x, y, batch_size, verbose, callbacks, **kwargs: as in
                `keras.Model.fit`. Data is iterated once per block, so pass
                arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`,
                not a one-shot Python generator. Use a fixed batch size (the
                entropy estimator's scale depends on it).
            epochs: epochs per block: an integer for every block, or a list
                of one integer per block (0 skips a block). An integer for
                the other schedules.
            schedule: `"sequential"` (default: greedy, block after block),
                `"simultaneous"` (all blocks at once, gradient stopped
                between blocks) or `"end_to_end"` (plain backpropagation
                through the inference network).
            block_optimizer: optional callable `block_index -> optimizer`
                giving each block its own optimizer; by default the
                compiled optimizer is rebuilt from its config per block.
            checkpoint_dir: optional folder. After every epoch the fit's
                state (all model variables, the optimizer of the block
                being trained, the block and epoch reached, the History)
                is written there atomically; calling the same `fit` again
                after a crash or a kill resumes from the last complete
                epoch, never retraining a finished block, and a fit that
                had finished returns at once. With NumPy arrays the data
                order is drawn from a seed stored in the checkpoint, so a
                resumed fit ends with the same weights as an uninterrupted
                one (same backend). A `tf.data.Dataset` or `PyDataset`
                restarts its own order on resume. A checkpoint written by
                a different fit (other schedule, epochs, batch size or
                model) is refused, not overwritten.
            cache_prefix: bool, sequential schedule only. If True, the
                frozen blocks' output for the whole training (and
                validation) set is computed once per block instead of once
                per epoch, and kept in host memory: `num_samples x` one
                block's output size in the compute dtype (GTSRB's 39,209
                images after a 64-channel 32x32 block: 10 GB in float32;
                at width 16, 2.6 GB). Datasets are read into memory once.
                Only for data without random augmentation (the cache would
                freeze one draw of it).

        Callbacks are called once per block for `on_train_begin/end`, as
        each block is an ordinary Keras `fit`; a callback may also define
        `on_block_begin(block_index, logs)` and
        `on_block_end(block_index, logs)`.

        Returns:
            A `keras.callbacks.History` whose `history` concatenates every
            block's epochs, with a `"block"` entry giving each epoch's block
            index; `history.block_histories` holds one dict per block.
        """
        if schedule not in SCHEDULES:
            raise ValueError(
                f"`schedule` should be one of {SCHEDULES}. "
                f"Received: schedule={schedule!r}"
            )
        if not self.compiled:
            raise ValueError(
                "You must call `compile()` before `fit()`, for example "
                "model.compile(optimizer='adam', "
                "loss=keras_dib.losses.DIB(), metrics=['accuracy'])."
            )
        if schedule != "end_to_end":
            self._objective()
        initial_epoch = kwargs.pop("initial_epoch", 0)
        if initial_epoch:
            raise ValueError(
                "`initial_epoch` is not supported by the greedy schedules "
                "(resume with `checkpoint_dir` instead). Received: "
                f"initial_epoch={initial_epoch}"
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
        if cache_prefix and schedule != "sequential":
            raise ValueError(
                "`cache_prefix=True` needs schedule='sequential' (only "
                "then are earlier blocks frozen). Received: "
                f"schedule={schedule!r}"
            )
        epochs_per_block = self._epochs_per_block(epochs, schedule)
        if not self.built:
            self._build_from_data(x)
        validate_fit_inputs(
            self, x, y, batch_size, kwargs.get("validation_data")
        )
        checkpoint = None
        saved = None
        if checkpoint_dir is not None:
            checkpoint = checkpointing.FitCheckpoint(
                checkpoint_dir,
                self._fit_fingerprint(schedule, epochs_per_block, batch_size),
            )
            saved = checkpoint.load()
            if saved is not None:
                checkpointing.restore_variables(
                    self.variables,
                    saved["model_values"],
                    "model",
                    checkpoint.path,
                )
            checkpoint.remove_stale_temporaries()
            seed = (
                saved["seed"]
                if saved is not None
                else int(np.random.randint(0, 2**31 - 1))
            )
        # Arrays (x, y[, sample_weight]) are handled here rather than by
        # Keras when checkpointing (the data order must be restorable) or
        # caching the frozen prefix (the inputs change per stage).
        arrays = None
        cache = None
        if checkpoint is not None or cache_prefix:
            arrays, batch_size, kwargs = caching.as_arrays(
                x, y, batch_size, kwargs, materialize=cache_prefix
            )
        if cache_prefix:
            cache = caching.PrefixCache(
                self, arrays, kwargs.get("validation_data"), batch_size, verbose
            )
        compile_config = self.get_compile_config()
        trainable_state = [
            (layer, layer.trainable)
            for layer in self.blocks + self.training_heads
        ]
        callbacks = list(callbacks or [])
        stages = (
            list(range(self.num_blocks)) if schedule == "sequential" else [None]
        )
        merged = {"block": []}
        block_histories = []
        if saved is not None:
            merged = saved["history"]
            block_histories = saved["block_histories"]
        try:
            for position, (stage, stage_epochs) in enumerate(
                zip(stages, epochs_per_block)
            ):
                if stage_epochs == 0:
                    continue
                initial_epoch = 0
                stage_history = {}
                if saved is not None and position < saved["position"]:
                    continue
                if saved is not None and position == saved["position"]:
                    stage_history = saved["stage_history"]
                    initial_epoch = saved["epochs_done"]
                    if initial_epoch >= stage_epochs:
                        self._merge_stage_history(
                            merged, block_histories, stage, stage_history
                        )
                        continue
                use_cache = cache is not None and bool(stage)
                self._enter_stage(
                    schedule,
                    stage,
                    compile_config,
                    block_optimizer,
                    prefix_cached=use_cache,
                )
                if initial_epoch:
                    checkpointing.restore_variables(
                        self.optimizer.variables,
                        saved["optimizer_values"],
                        "optimizer",
                        checkpoint.path,
                    )
                self._print_stage(
                    schedule, stage, stage_epochs, verbose, initial_epoch
                )
                stage_callbacks = []
                if checkpoint is not None:
                    stage_callbacks.append(
                        checkpointing.CheckpointCallback(
                            checkpoint,
                            {
                                "position": position,
                                "stage": stage,
                                "seed": seed,
                                "history": merged,
                                "block_histories": block_histories,
                            },
                            {k: list(v) for k, v in stage_history.items()},
                        )
                    )
                data, stage_kwargs = self._stage_data(
                    x,
                    y,
                    batch_size,
                    kwargs,
                    arrays,
                    cache if use_cache else None,
                    stage,
                    shuffle_seed=(seed, position, initial_epoch)
                    if checkpoint is not None
                    else None,
                )
                for callback in callbacks:
                    if hasattr(callback, "on_block_begin"):
                        callback.on_block_begin(stage)
                stage_label = (
                    f"Block {stage + 1}/{self.num_blocks} "
                    f"({self.blocks[stage].name})"
                    if stage is not None
                    else f"{schedule} training"
                )
                history = super().fit(
                    data[0],
                    data[1],
                    batch_size=data[2],
                    epochs=stage_epochs,
                    verbose=verbose,
                    callbacks=callbacks
                    + [NaNGuard(stage_label)]
                    + stage_callbacks,
                    initial_epoch=initial_epoch,
                    **stage_kwargs,
                )
                for key, values in history.history.items():
                    stage_history.setdefault(key, [])
                    stage_history[key] = stage_history[key] + list(values)
                self._merge_stage_history(
                    merged, block_histories, stage, stage_history
                )
                for callback in callbacks:
                    if hasattr(callback, "on_block_end"):
                        logs = {k: v[-1] for k, v in stage_history.items()}
                        callback.on_block_end(stage, logs)
        finally:
            self._schedule = None
            self._active_block = None
            self._prefix_cached = False
            for layer, trainable in trainable_state:
                layer.trainable = trainable
            # Back to the inference network, with a fresh optimizer for
            # any later fit and fresh (re-traced) train/test/predict steps.
            with self._strategy_scope():
                self.compile_from_config(compile_config)
        result = keras.callbacks.History()
        result.set_model(self)
        result.history = merged
        result.epoch = list(range(len(merged["block"])))
        result.block_histories = block_histories
        result.params = {"epochs": epochs_per_block, "schedule": schedule}
        self.history = result
        return result

    @staticmethod
    def _stage_data(
        x, y, batch_size, kwargs, arrays, cache, stage, shuffle_seed
    ):
        """`(x, y, batch_size)` and fit kwargs for one stage.

        Arrays come from the prefix cache (when given) and, with a
        checkpoint (`shuffle_seed = (seed, position, initial_epoch)`), are
        served in a restorable order by `ShuffledArrays`; otherwise the
        user's data goes to Keras as it is.
        """
        stage_kwargs = dict(kwargs)
        if cache is not None:
            arrays, validation = cache.stage_data(stage)
            if validation is not None:
                stage_kwargs["validation_data"] = validation
        if arrays is None:
            return (x, y, batch_size), stage_kwargs
        if shuffle_seed is not None:
            seed, position, initial_epoch = shuffle_seed
            data = checkpointing.ShuffledArrays(
                arrays,
                batch_size,
                seed,
                position,
                initial_epoch,
                shuffle=stage_kwargs.pop("shuffle", True),
            )
            stage_kwargs["shuffle"] = False
            return (data, None, None), stage_kwargs
        if len(arrays) == 3:
            stage_kwargs["sample_weight"] = arrays[2]
        return (arrays[0], arrays[1], batch_size), stage_kwargs

    @staticmethod
    def _merge_stage_history(merged, block_histories, stage, stage_history):
        block_histories.append(dict(stage_history))
        num_epochs = 0
        for key, values in stage_history.items():
            merged.setdefault(key, [])
            merged[key].extend(values)
            num_epochs = len(values)
        merged["block"].extend(
            [stage if stage is not None else -1] * num_epochs
        )

    def _fit_fingerprint(self, schedule, epochs_per_block, batch_size):
        return {
            "schedule": schedule,
            "epochs": epochs_per_block,
            "batch_size": batch_size,
            "model_variable_shapes": [list(v.shape) for v in self.variables],
        }

    def _print_stage(
        self, schedule, stage, stage_epochs, verbose, initial_epoch=0
    ):
        if verbose == 0:
            return
        if initial_epoch:
            print(
                f"Resuming from the checkpoint: {initial_epoch} of "
                f"{stage_epochs} epochs of this stage done.",
                flush=True,
            )
        count = sum(int(np.prod(v.shape)) for v in self.trainable_variables)
        if schedule == "sequential":
            frozen = {0: "", 1: "; block 1 frozen"}.get(
                stage, f"; blocks 1-{stage} frozen"
            )
            label = (
                f"Block {stage + 1}/{self.num_blocks} "
                f"({self.blocks[stage].name}): training {count:,} "
                f"parameters for {stage_epochs} epochs{frozen}"
            )
        else:
            label = (
                f"{schedule.replace('_', ' ').capitalize()} training of "
                f"{self.num_blocks} blocks: {count:,} parameters, "
                f"{stage_epochs} epochs"
            )
        print(label, flush=True)

    # === Config ===

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "blocks": _serialize_list(self.blocks),
            "head": keras.saving.serialize_keras_object(self.head),
            "auxiliary_heads": _serialize_list(self.auxiliary_heads),
            "num_classes": self.num_classes,
            "input_shape": self._input_shape_arg,
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["blocks"] = _deserialize_list(config["blocks"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        config["auxiliary_heads"] = _deserialize_list(config["auxiliary_heads"])
        return cls(**config)

"""The greedy layer-wise trainer: a Keras Model whose `fit` trains blocks.

The algorithm lives in `compute_loss` (the compiled local objective's
terms, summed over the trained blocks), the schedule in
`keras_dib.models.schedules`, and `fit` composes them with the pieces of
`keras_dib.models.fitting` (checkpoints, stage data, History).
"""

import contextlib
import copy

import keras
import numpy as np
from keras import ops

from keras_dib import _compat
from keras_dib.losses import local_objective
from keras_dib.models import fitting
from keras_dib.models import schedules
from keras_dib.models import validation
from keras_dib.models.heads import AuxiliaryHead
from keras_dib.models.validation import check_model_arguments
from keras_dib.models.validation import validate_fit_inputs


def _check_block_count(name, value, num_blocks, optional=False):
    """Raises unless `value` is a number of blocks in `1..num_blocks`
    (or None, when `optional`)."""
    if optional and value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 1 <= value <= num_blocks
    ):
        none = "None or " if optional else ""
        raise ValueError(
            f"`{name}` should be {none}an integer in 1..{num_blocks}. "
            f"Received: {name}={value!r}"
        )


def _serialize_list(layers):
    return [keras.saving.serialize_keras_object(layer) for layer in layers]


def _deserialize_list(configs):
    return [keras.saving.deserialize_keras_object(c) for c in configs]


class _TermTrackers:
    """One `keras.metrics.Mean` per objective term, made outside tracing.

    Kept out of Keras' attribute tracking (a plain object), so trackers
    for new term names can be created at any stage change, after build.
    `label_errors` counts out-of-range labels while a stage trains (a
    hidden metric: `validation.check_labels_in_step`).
    """

    def __init__(self):
        self.trackers = {}
        self.active = []
        self.label_errors = keras.metrics.Sum(name=validation.LABEL_ERRORS)
        self.check_labels = False

    def activate(self, names, check_labels=False):
        for name in names:
            if name not in self.trackers:
                self.trackers[name] = keras.metrics.Mean(name=name)
        self.active = [self.trackers[name] for name in names]
        self.check_labels = check_labels


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

    While a stage trains (`model.stage` is not None), calling the model
    returns the stage's outputs, `{"logits": ..., "local": [...]}` (one
    `{"logits", "features", "block_inputs"}` per trained block), which
    `compute_loss` turns into the objective; compiled metrics
    (`"accuracy"`) and validation metrics read `"logits"`, the auxiliary
    head of the block being trained. Each term of the objective
    (`keras_dib.losses.LocalObjective.compute_terms`: `cross_entropy`,
    `compression`, ...) is reported as a metric of its name.

    Other schedules (`keras_dib.models.schedules`): `"simultaneous"` trains
    every block at once, each on its own local objective with the gradient
    stopped between blocks (Decoupled Greedy Learning), and `"end_to_end"`
    trains the inference network by ordinary backpropagation on the
    cross-entropy, for comparison; a `Schedule` subclass adds another.

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
        inference_blocks: optional int in `1..len(blocks)`: the number of
            blocks the inference network uses, classified by the last
            one's training head (see `fit(select_depth=...)`). Defaults to
            None (every block and `head`).
        **kwargs: base `keras.Model` arguments (`name`, ...).

    Example:

    >>> blocks = [
    ...     keras.Sequential([keras.layers.Conv2D(8, 3, padding="same"),
    ...                       keras.layers.ReLU()]),
    ...     keras.Sequential([keras.layers.Conv2D(8, 3, strides=2),
    ...                       keras.layers.ReLU()]),
    ... ]
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     blocks,
    ...     head=keras_dib.models.AuxiliaryHead(10, grid_size=1),
    ...     num_classes=10,
    ...     input_shape=(16, 16, 3),
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_dib.losses.DIB(alpha=1.01, beta=0.01),
    ...     metrics=["accuracy"],
    ... )
    >>> rng = np.random.default_rng(0)
    >>> x_train = rng.uniform(size=(32, 16, 16, 3)).astype("float32")
    >>> y_train = rng.integers(0, 10, size=32)
    >>> history = model.fit(
    ...     x_train, y_train, batch_size=16, epochs=[1, 2], verbose=0
    ... )
    >>> history.history["block"]  # one epoch of block 0, two of block 1
    [0, 1, 1]
    >>> tuple(model.predict(x_train[:4], verbose=0).shape)
    (4, 10)

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
        inference_blocks=None,
        **kwargs,
    ):
        check_model_arguments(blocks, head, auxiliary_heads, num_classes)
        _check_block_count(
            "inference_blocks", inference_blocks, len(blocks), optional=True
        )
        if auxiliary_heads is None:
            auxiliary_heads = [
                AuxiliaryHead(num_classes, name=f"auxiliary_head_{index}")
                for index in range(len(blocks) - 1)
            ]
        if input_shape is not None:
            input_shape = tuple(input_shape)
        super().__init__(**kwargs)
        self.blocks = list(blocks)
        self.head = head
        self.auxiliary_heads = list(auxiliary_heads)
        self.num_classes = num_classes
        self._sample_shape = input_shape
        self._inference_blocks = inference_blocks
        # Training state: read in `call`/`compute_loss`, so it is baked into
        # each traced step and only ever changed by `enter_stage` and
        # `exit_stage`, together with a recompile.
        self._schedule = None
        self._stage = None
        self._prefix_cached = False
        self._trainable_before_stage = None
        self._term_trackers = _TermTrackers()
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
    def inference_blocks(self):
        """Blocks the inference network uses (None: all, with `head`).

        Set by `fit(select_depth=...)`, or by hand; inference then runs
        `blocks[:n]` and `training_heads[n - 1]`. Saved with the model.
        """
        return self._inference_blocks

    @inference_blocks.setter
    def inference_blocks(self, value):
        _check_block_count(
            "inference_blocks", value, self.num_blocks, optional=True
        )
        self._inference_blocks = None if value is None else int(value)
        # The traced steps bake the depth in: trace them again (as
        # `compile` does).
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    @property
    def stage(self):
        """The `keras_dib.models.schedules.Stage` being trained, or None."""
        return self._stage

    @property
    def active_block(self):
        """Index of the block being trained on its own, else None."""
        return self._stage.block if self._stage is not None else None

    @property
    def schedule(self):
        """Name of the schedule being fitted (`"sequential"`...), or None."""
        return self._schedule.name if self._schedule is not None else None

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

        >>> model = keras_dib.build_vgg(11, num_classes=43, width=4)
        >>> model.truncate(5).num_blocks
        5
        >>> short = model.truncate(5)
        >>> short.head is model.training_heads[4]
        True
        """
        _check_block_count("num_blocks", num_blocks, self.num_blocks)
        num_blocks = int(num_blocks)
        model = GreedyLayerwiseModel(
            self.blocks[:num_blocks],
            head=self.training_heads[num_blocks - 1],
            auxiliary_heads=self.auxiliary_heads[: num_blocks - 1],
            num_classes=self.num_classes,
            input_shape=self._sample_shape,
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
        if self._stage is None or not self._schedule.trains_locally:
            # End-to-end training (a stage) trains the whole network.
            depth = (self._stage is None and self._inference_blocks) or (
                self.num_blocks
            )
            x = inputs
            for block in self.blocks[:depth]:
                x = block(x, training=training)
            return self.training_heads[depth - 1](x, training=training)
        return self._schedule.forward(
            self,
            inputs,
            self._stage,
            training,
            prefix_cached=self._prefix_cached,
            stop_head_gradient=self.objective.stop_head_gradient,
        )

    # === Objective ===

    @property
    def objective(self):
        """The compiled loss as a `keras_dib.losses.LocalObjective`.

        A plain Keras loss on logits is wrapped as a one-term objective.

        Raises:
            ValueError: for a loss that is not a `keras.losses.Loss`, or one
                that expects probabilities (`from_logits=False`).
        """
        return local_objective.get(self.loss)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        penalty = 0.0
        if self._term_trackers.check_labels:
            y, penalty = validation.check_labels_in_step(
                y,
                y_pred["logits"] if isinstance(y_pred, dict) else y_pred,
                self._term_trackers.label_errors,
            )
        if not isinstance(y_pred, dict):
            loss = super().compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=training,
            )
            return loss + ops.cast(penalty, loss.dtype)
        objective = self.objective
        weights = objective.term_weights
        if isinstance(x, dict) and "block_inputs" in x:
            x = x["inputs"]
        values = {name: [] for name in weights}
        total = ops.zeros((), dtype="float32") + penalty
        for local in y_pred["local"]:
            terms = objective.compute_terms(
                y,
                local["logits"],
                features=local["features"],
                block_inputs=local["block_inputs"],
                inputs=x,
                sample_weight=sample_weight,
            )
            if set(terms) != set(weights):
                raise ValueError(
                    f"{type(objective).__name__}.compute_terms should return "
                    f"the terms of `term_weights`, {sorted(weights)}. "
                    f"Received: {sorted(terms)}"
                )
            for name, value in terms.items():
                values[name].append(value)
                total = total + weights[name] * ops.cast(value, "float32")
        for tracker in self._term_trackers.active:
            tracker.update_state(ops.mean(ops.stack(values[tracker.name])))
        # Keras divides a loss by the number of tf.distribute replicas (a
        # no-op on JAX and torch); the batch-level terms are scaled alike.
        total = _compat.scale_loss_for_distribution(total)
        for loss in self.losses:
            total = total + _compat.scale_loss_for_distribution(
                ops.cast(ops.sum(loss), "float32")
            )
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    @property
    def metrics(self):
        trackers = self._term_trackers
        hidden = [trackers.label_errors] if trackers.check_labels else []
        return super().metrics + list(trackers.active) + hidden

    def get_metrics_result(self):
        results = super().get_metrics_result()
        results.pop(validation.LABEL_ERRORS, None)
        return results

    # === Stages ===

    def enter_stage(
        self,
        schedule="sequential",
        block=None,
        optimizer=None,
        prefix_cached=False,
        compile_config=None,
    ):
        """Puts the model in one stage of a schedule, as `fit` does.

        Sets the stage's trainable flags, then recompiles: a fresh
        optimizer and a re-traced step (without the recompile TensorFlow
        would silently keep training the previous trainable set, and JAX
        and torch would raise). `exit_stage` returns to the inference
        network. For benchmarks and tests that run one stage's step.

        Args:
            schedule: a schedule name or a
                `keras_dib.models.schedules.Schedule`.
            block: the block trained on its own (sequential schedule), or
                None for a schedule with a single stage.
            optimizer: optional optimizer instance for the stage. Defaults
                to one rebuilt from the compile config.
            prefix_cached: whether the inputs are
                `{"inputs": images, "block_inputs": frozen prefix output}`
                (as with `fit(cache_prefix=True)`).
            compile_config: the compile config to rebuild from. Defaults to
                the model's current one.

        Returns:
            The `keras_dib.models.schedules.Stage` entered.

        Example:

        >>> model = keras_dib.GreedyLayerwiseModel(
        ...     [keras.layers.Dense(8, activation="relu") for _ in range(3)],
        ...     head=keras.layers.Dense(3),
        ...     num_classes=3,
        ...     input_shape=(4,),
        ... )
        >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(16, 4)).astype("float32")
        >>> y = rng.integers(0, 3, size=16)
        >>> stage = model.enter_stage("sequential", block=2)
        >>> stage.block
        2
        >>> logs = model.train_on_batch(x, y, return_dict=True)
        >>> sorted(logs)
        ['compression', 'cross_entropy', 'loss']
        >>> model.exit_stage()
        """
        schedule = schedules.get(schedule)
        stages = schedule.stages(self, 0)
        matches = [s for s in stages if s.block == block]
        if len(matches) != 1:
            raise ValueError(
                f"`block` should be one of {[s.block for s in stages]} for "
                f"schedule={schedule.name!r}. Received: block={block!r}"
            )
        config = copy.deepcopy(compile_config or self.get_compile_config())
        if self._trainable_before_stage is None:
            self._trainable_before_stage = [
                layer.trainable for layer in self.blocks + self.training_heads
            ]
        self._schedule, self._stage = schedule, matches[0]
        self._prefix_cached = bool(prefix_cached)
        schedule.set_trainable(self, self._stage)
        names = list(self.objective.term_weights)
        self._term_trackers.activate(
            names if schedule.trains_locally else [], check_labels=True
        )
        with self._strategy_scope():
            if optimizer is not None:
                config = keras.saving.deserialize_keras_object(config)
                config["optimizer"] = optimizer
                self.compile(**config)
                self.optimizer.build(self.trainable_variables)
            else:
                self.compile_from_config(config)
        return self._stage

    def exit_stage(self, compile_config=None):
        """Back to the inference network after `enter_stage`.

        Restores the trainable flags the layers had before the first
        `enter_stage`, and recompiles (a fresh optimizer for any later fit,
        re-traced train, test and predict steps).

        Args:
            compile_config: the compile config to rebuild from. Defaults to
                the model's current one.
        """
        config = compile_config or self.get_compile_config()
        self._schedule, self._stage = None, None
        self._prefix_cached = False
        self._term_trackers.activate([])
        if self._trainable_before_stage is not None:
            layers = self.blocks + self.training_heads
            for layer, flag in zip(layers, self._trainable_before_stage):
                layer.trainable = flag
            self._trainable_before_stage = None
        with self._strategy_scope():
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

    # === Training ===

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
        resume="strict",
        select_depth=None,
        depth_patience=None,
        **kwargs,
    ):
        """Trains the model block by block (or with another schedule).

        Accepts every argument of `keras.Model.fit`; the differences are:

        Args:
            x, y, batch_size, verbose, callbacks, **kwargs: as in
                `keras.Model.fit`. Data is iterated once per block, so pass
                arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`
                of `(images, labels)` batches (not dicts), not a one-shot
                Python generator. Use a fixed batch size (the entropy
                estimator's scale depends on it): with an objective that
                has batch-level terms (any term beyond `cross_entropy`,
                e.g. DIB's compression), batches of fewer than
                `keras_dib.models.validation.MIN_BATCH_SIZE` (8) samples
                are refused before training. With arrays, a final partial
                batch smaller than that is dropped each epoch (which
                samples it holds changes with the shuffle); a dataset
                should drop its own (`batch(n, drop_remainder=True)`). A
                `validation_split` must leave at least one batch.
            epochs: epochs per block: an integer for every block, or a list
                of one integer per block (0 skips a block). An integer for
                the other schedules.
            schedule: `"sequential"` (default: greedy, block after block),
                `"simultaneous"` (all blocks at once, gradient stopped
                between blocks), `"end_to_end"` (plain backpropagation
                through the inference network), or a
                `keras_dib.models.schedules.Schedule` instance.
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
                a different fit is refused, not overwritten, naming the
                difference: other schedule, epochs, batch size or model,
                other data (arrays: sample count and a content hash of
                images and labels; a `tf.data.Dataset`: cardinality and
                element spec; a `PyDataset`: length and first batch's
                shapes), objective config or optimizer config. The folder
                is created and probed for writing before training. In a
                fit launched as several processes, only the chief
                (process 0) writes, and every process resumes from the
                folder (which they must all see).
            resume: `"strict"` (default) or `"allow_changes"`: with
                `checkpoint_dir`, resume even when the data, the objective
                config or the optimizer config changed (say, a lower
                learning rate after a divergence); the schedule, epochs,
                batch size and model must still match.
            cache_prefix: bool, sequential schedule only. If True, the
                frozen blocks' output for the whole training (and
                validation) set is computed once per block instead of once
                per epoch, and kept in host memory: `num_samples x` one
                block's output size in the compute dtype (GTSRB's 39,209
                images after a 64-channel 32x32 block: 10 GB in float32;
                at width 16, 2.6 GB). Datasets are read into memory once.
                Only for data without random augmentation (the cache would
                freeze one draw of it).
            select_depth: optional validation metric name, such as
                `"val_accuracy"` (maximised) or `"val_loss"` (minimised;
                any name containing "loss"). Sequential schedule, with
                `validation_data` or `validation_split`. After the fit,
                the inference network keeps the blocks up to the one whose
                own head scored best on it when that block finished
                (`inference_blocks`; ties go to the shallower network), so
                the deep blocks' decline is cut off. The choice is printed,
                saved with the model and returned in
                `history.params["inference_blocks"]`. Defaults to None
                (the inference network keeps its depth).
            depth_patience: optional positive integer, with
                `select_depth`: stop the schedule once this many trained
                blocks in a row have not improved on the best block's
                `select_depth` metric; the deeper blocks are never trained
                (their time is saved) and the inference network stops at
                the best block. The number of blocks trained is returned
                in `history.params["trained_blocks"]`. Defaults to None
                (every block is trained).

        Every stage is guarded: a NaN or Inf loss stops it
        (`FloatingPointError`, naming the block and the term), so do
        non-finite weights or batch-normalization statistics at an epoch's
        end (naming the variable; the checkpoint keeps the last good
        epoch), and so do labels out of range in any batch (ValueError).

        Callbacks are called once per block for `on_train_begin/end`, as
        each block is an ordinary Keras `fit`; a `keras_dib.BlockCallback`
        (or any callback with these methods) is also called
        `on_block_begin(block, logs)` and `on_block_end(block, logs)`.

        Returns:
            A `keras.callbacks.History` whose `history` concatenates every
            block's epochs, with a `"block"` entry giving each epoch's block
            index (-1 for a stage of all blocks);
            `history.block_histories` holds one dict per stage.
        """
        schedule = schedules.get(schedule)
        fitting.check_fit_arguments(
            self, schedule, block_optimizer, cache_prefix, kwargs, callbacks
        )
        fitting.check_select_depth(select_depth, schedule, kwargs)
        fitting.check_depth_patience(depth_patience, select_depth)
        kwargs.pop("initial_epoch", None)
        stages = schedule.stages(self, epochs)
        if not self.built:
            self.build((None,) + fitting.sample_shape(x))
        floor = validation.min_batch_size(self, schedule)
        validate_fit_inputs(self, x, y, batch_size, kwargs, floor)
        fitting.warn_few_steps(schedule, stages, x, batch_size, kwargs)
        fingerprint = None
        if checkpoint_dir is not None:
            fingerprint = fitting.fit_fingerprint(
                self, schedule, stages, batch_size, x, y, kwargs
            )
        resume = fitting.Resume(self, checkpoint_dir, fingerprint, resume)
        data = fitting.StageData(
            self, x, y, batch_size, kwargs, resume, cache_prefix, verbose, floor
        )
        history = resume.history()
        run = fitting.StageRun(
            self,
            super().fit,
            schedule,
            data,
            resume,
            history,
            block_optimizer,
            verbose,
            callbacks,
        )
        try:
            for stage in stages:
                if fitting.depth_patience_spent(
                    history, select_depth, depth_patience, verbose
                ):
                    break
                start = resume.stage_start(stage)
                if stage.epochs == 0 or start is None:
                    continue
                if start[0] < stage.epochs:
                    run(stage, start)
                else:
                    history.add(stage, start[1])
        finally:
            self.exit_stage(run.compile_config)
        params = {
            "epochs": [stage.epochs for stage in stages],
            "schedule": schedule.name,
        }
        if depth_patience is not None:
            params["trained_blocks"] = history.trained_blocks()
        params.update(
            fitting.apply_depth_selection(self, history, select_depth, verbose)
        )
        self.history = history.as_keras_history(self, params)
        return self.history

    # === Config ===

    def save(self, filepath, *args, **kwargs):
        """As `keras.Model.save`, to a `.keras` file.

        Raises:
            ValueError: for a `.h5`/`.hdf5` path: the legacy HDF5 format
                writes the file but no backend can load it back (use
                `.keras`, or `save_weights("....weights.h5")`).
        """
        validation.check_save_path(filepath)
        return super().save(filepath, *args, **kwargs)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "blocks": _serialize_list(self.blocks),
            "head": keras.saving.serialize_keras_object(self.head),
            "auxiliary_heads": _serialize_list(self.auxiliary_heads),
            "num_classes": self.num_classes,
            "input_shape": self._sample_shape,
            "inference_blocks": self._inference_blocks,
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["blocks"] = _deserialize_list(config["blocks"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        config["auxiliary_heads"] = _deserialize_list(config["auxiliary_heads"])
        return cls(**config)

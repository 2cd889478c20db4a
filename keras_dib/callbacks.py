"""Keras callbacks that know about the blocks of a greedy fit.

`GreedyLayerwiseModel.fit` runs one Keras `fit` per block, so a plain
Keras callback sees every block as a fresh training run: epochs and steps
start again at 0. The callbacks here keep one axis across the blocks.

- `TensorBoard`: `keras.callbacks.TensorBoard` on one continuous epoch
  and step axis, each block in its own run.

The analysis callbacks (`keras_dib.analysis.InformationPlaneCallback`,
`keras_dib.analysis.GradientStatistics`) write to the same folder, on the
same global step axis, when given `tensorboard=`; `_RunWriter` is their
shared writer.
"""

import os

import keras

from keras_dib.models.fitting import BlockCallback

__all__ = ["BlockCallback", "TensorBoard"]


class _Summary:
    """`tf.summary`, with a `scalar` that needs no `tensorboard` package.

    `tf.summary.scalar` is implemented by the `tensorboard` package, which
    TensorFlow does not require; this one writes the same event (a float32
    tensor tagged for the scalars plugin) with `tf.summary.write`, so that
    logging needs only TensorFlow. Every other name (`histogram`, `image`,
    `create_file_writer`, ...) is `tf.summary`'s own.
    """

    def __init__(self):
        import tensorflow as tf

        self._tf = tf

    def __getattr__(self, name):
        return getattr(self._tf.summary, name)

    def scalar(self, name, data, step=None, description=None):
        tf = self._tf
        metadata = tf.compat.v1.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        metadata.display_name = name
        if description is not None:
            metadata.summary_description = description
        with tf.summary.experimental.summary_scope(
            name, "scalar_summary", values=[data, step]
        ) as (tag, _):
            return tf.summary.write(
                tag=tag,
                tensor=tf.cast(data, "float32"),
                step=step,
                metadata=metadata,
            )


def _tensorboard_log_dir(tensorboard):
    """The log folder of a `tensorboard=` argument (a callback or a path)."""
    if isinstance(tensorboard, TensorBoard):
        return tensorboard.root_log_dir
    if isinstance(tensorboard, (str, os.PathLike)):
        return os.fspath(tensorboard)
    raise ValueError(
        "`tensorboard` should be a keras_dib.callbacks.TensorBoard, a log "
        "folder (path) or None. "
        f"Received: tensorboard of type {type(tensorboard).__name__}"
    )


class _RunWriter:
    """Scalars of one TensorBoard run of an analysis callback.

    The run is the folder `run` inside the log folder of `tensorboard` (a
    `TensorBoard` callback, whose `log_dir` it shares, or a path). Scalars
    are written with TensorFlow alone (`_Summary.scalar`), at the step the
    caller gives: the analysis callbacks give the global training step,
    the step axis of `TensorBoard` in a greedy fit. The event file is
    flushed after every `write`, so it is complete even if training stops.
    """

    def __init__(self, tensorboard, run):
        self.log_dir = os.path.join(_tensorboard_log_dir(tensorboard), run)
        self._summary = None
        self._writer = None

    def write(self, scalars, step):
        """Writes `(tag, value)` pairs at `step`; None values are skipped."""
        if self._writer is None:
            self._summary = _Summary()
            self._writer = self._summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for tag, value in scalars:
                if value is not None:
                    self._summary.scalar(tag, float(value), step=int(step))
        self._writer.flush()

    def flush(self):
        """Flushes the event file (`write` does it already)."""
        if self._writer is not None:
            self._writer.flush()


def _check_update_freq(update_freq):
    if update_freq in ("epoch", "batch"):
        return
    if (
        isinstance(update_freq, bool)
        or not isinstance(update_freq, int)
        or update_freq < 1
    ):
        raise ValueError(
            '`update_freq` should be "epoch", "batch" or a positive '
            f"integer (batches). Received: update_freq={update_freq!r}"
        )


class TensorBoard(keras.callbacks.TensorBoard, BlockCallback):
    """`keras.callbacks.TensorBoard` for greedy fits: one axis, all blocks.

    A greedy `fit` is one Keras `fit` per block, after which
    `keras.callbacks.TensorBoard` starts every block's curves at epoch 0
    and step 0, on top of each other. This callback puts the whole fit on
    one axis:

    - epoch summaries (`epoch_loss`, `epoch_accuracy`, the learning rate,
      weight histograms) are written at the global epoch, the epochs of
      the earlier blocks plus the epoch within the block, the index of
      `model.fit(...).history`;
    - batch summaries (`update_freq` an integer or `"batch"`) and the
      `evaluation_*_vs_iterations` of validation are written at the
      global step, the training batches of all the blocks so far (Keras
      rebuilds the optimizer per block, so `optimizer.iterations` starts
      again at 0; the global step does not). This is also the `step` of
      `keras_dib.analysis.GradientStatistics`.

    Each block is also tagged, twice. With `run_per_block=True` (the
    default), block `k` writes to `log_dir/block_k/train` and
    `log_dir/block_k/validation`: in TensorBoard every block is a run of
    its own, drawn in its own colour on the shared axis, named where the
    cursor points, and hidden or shown from the run list. This reads
    better than one run for the whole fit: a new block starts with a
    fresh auxiliary head, so its loss jumps, and TensorBoard's smoothing
    (per run) would blur that jump into the neighbouring blocks; and it
    keeps Keras' tag names (`epoch_loss`, not one tag per block, which
    would split every metric into as many charts as blocks). With
    `run_per_block=False` every block writes to `log_dir/train` and
    `log_dir/validation` as Keras does (one curve per metric, convenient
    for overlaying several fits). Either way an `epoch_block` scalar
    gives each epoch's block index (-1 for a stage of all blocks, as in
    the History).

    A stage that trains all blocks at once (`schedule="simultaneous"` or
    `"end_to_end"`) writes to `log_dir/train` and `log_dir/validation`.
    The counters carry on across all the blocks (and greedy fits) this
    instance sees: use a new instance, and a new `log_dir`, per training
    run. A greedy fit resumed from a checkpoint starts the axis again at
    its first block still to train (the blocks finished before the
    resume are not counted). With a plain `keras.Model.fit` (no blocks)
    it is Keras' TensorBoard (its epochs, `initial_epoch` included, and
    steps from 0), except that scalars need only TensorFlow
    (`tf.summary.scalar` needs the `tensorboard` package; histograms and
    images still do).

    The analysis callbacks log to the same folder when given this
    callback as `tensorboard=`: `keras_dib.analysis.InformationPlaneCallback`
    writes a run `information_plane` (`information_plane/block_<k>/I_XT`
    and so on) and `keras_dib.analysis.GradientStatistics` a run
    `gradients`, both at the global step. Put the information callback
    before this one in `callbacks` and its `log_prefix` entries in the
    epoch logs are written too, at the global epoch
    (`epoch_info/<layer>/I_XT`, ...).

    Args:
        log_dir: folder of the event files. Defaults to `"logs"`.
        run_per_block: bool, one TensorBoard run (subfolder `block_<k>`)
            per greedy block. Defaults to True.
        histogram_freq, write_graph, write_images, write_steps_per_second,
            update_freq, profile_batch, embeddings_freq,
            embeddings_metadata: as in `keras.callbacks.TensorBoard`;
            `histogram_freq` counts global epochs, `profile_batch` global
            steps. `update_freq` is `"epoch"` (default), `"batch"` or a
            positive integer.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x_train = rng.normal(size=(64, 4)).astype("float32")
    >>> y_train = rng.integers(0, 3, size=64)
    >>> x_val, y_val = x_train[:16], y_train[:16]
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...      for i in (1, 2)],
    ...     head=keras.layers.Dense(3, name="head"),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> import os, tempfile
    >>> log_dir = os.path.join(tempfile.mkdtemp(), "logs", "greedy_dib")
    >>> tensorboard = keras_dib.callbacks.TensorBoard(log_dir)
    >>> history = model.fit(x_train, y_train, batch_size=16,
    ...                     epochs=[1] * model.num_blocks,
    ...                     validation_data=(x_val, y_val),
    ...                     callbacks=[tensorboard], verbose=0)
    >>> sorted(os.listdir(log_dir))  # one run per block
    ['block_0', 'block_1']

    then `tensorboard --logdir logs` (with the `tensorboard` package).
    """

    def __init__(
        self,
        log_dir="logs",
        run_per_block=True,
        histogram_freq=0,
        write_graph=True,
        write_images=False,
        write_steps_per_second=False,
        update_freq="epoch",
        profile_batch=0,
        embeddings_freq=0,
        embeddings_metadata=None,
    ):
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                "`log_dir` should be a path (string). "
                f"Received: log_dir={log_dir!r}"
            )
        if not isinstance(run_per_block, bool):
            raise ValueError(
                "`run_per_block` should be True or False. "
                f"Received: run_per_block={run_per_block!r}"
            )
        _check_update_freq(update_freq)
        for name, value in (
            ("histogram_freq", histogram_freq),
            ("embeddings_freq", embeddings_freq),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` should be a non-negative integer (epochs). "
                    f"Received: {name}={value!r}"
                )
            if value < 0:
                raise ValueError(
                    f"`{name}` should be a non-negative integer (epochs). "
                    f"Received: {name}={value!r}"
                )
        super().__init__(
            log_dir=os.fspath(log_dir),
            histogram_freq=histogram_freq,
            write_graph=write_graph,
            write_images=write_images,
            write_steps_per_second=write_steps_per_second,
            update_freq=update_freq,
            profile_batch=profile_batch,
            embeddings_freq=embeddings_freq,
            embeddings_metadata=embeddings_metadata,
        )
        self.root_log_dir = self.log_dir
        self.run_per_block = run_per_block
        self.profile_batch = profile_batch
        self.block = None
        self._in_block = False
        self._epoch_offset = 0
        self._epochs_in_block = 0
        self._step_offset = 0
        self._scalar_summary = None

    @property
    def summary(self):
        """`tf.summary`, whose `scalar` needs no `tensorboard` package."""
        if self._scalar_summary is None:
            self._scalar_summary = _Summary()
        return self._scalar_summary

    def get_config(self):
        return {
            "log_dir": self.root_log_dir,
            "run_per_block": self.run_per_block,
            "histogram_freq": self.histogram_freq,
            "write_graph": self.write_graph,
            "write_images": self.write_images,
            "write_steps_per_second": self.write_steps_per_second,
            "update_freq": self.update_freq,
            "profile_batch": self.profile_batch,
            "embeddings_freq": self.embeddings_freq,
            "embeddings_metadata": self.embeddings_metadata,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # === Where the global epoch and step come in ===

    def on_block_begin(self, block, logs=None):
        self.block = block
        self._in_block = True
        self._epochs_in_block = 0
        # Read by Keras' `set_model`, called by the block's `fit` next.
        self.log_dir = self.root_log_dir
        if self.run_per_block and block is not None:
            self.log_dir = os.path.join(self.root_log_dir, f"block_{block}")

    def on_block_end(self, block, logs=None):
        self._in_block = False
        self._epoch_offset += self._epochs_in_block
        self._epochs_in_block = 0
        self._step_offset = self._keras_train_step()
        self.log_dir = self.root_log_dir

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._set_keras_train_step(self._step_offset)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_in_block = max(self._epochs_in_block, epoch + 1)
        logs = dict(logs or {})
        if self._in_block:
            logs["block"] = -1 if self.block is None else self.block
        super().on_epoch_end(self._epoch_offset + epoch, logs)

    def on_test_end(self, logs=None):
        # Keras writes these at `optimizer.iterations`, which restarts with
        # every block's new optimizer: use the global step instead, then
        # let Keras close the validation summaries (with nothing to write).
        optimizer = getattr(self.model, "optimizer", None)
        if logs and optimizer is not None:
            with self._keras_validation_writer().as_default():
                for name, value in logs.items():
                    self.summary.scalar(
                        f"evaluation_{name}_vs_iterations",
                        value,
                        step=self._keras_train_step(),
                    )
        super().on_test_end({})

    # === Keras internals: the only private attributes used ===
    # `keras.callbacks.TensorBoard` keeps the step of batch summaries in
    # `_global_train_batch` (set to 0 by `on_train_begin`, incremented by
    # `on_train_batch_begin`, read by `on_train_batch_end` and the
    # profiler) and writes validation summaries with `_val_writer`.
    # tests/callbacks_test.py (`test_keras_internals`) fails if either
    # changes in a new Keras.

    def _keras_train_step(self):
        return int(self._global_train_batch)

    def _set_keras_train_step(self, step):
        self._global_train_batch = int(step)

    def _keras_validation_writer(self):
        return self._val_writer

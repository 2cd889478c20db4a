"""Gradient statistics during training: vanishing and exploding gradients.

`GradientStatistics` is a Keras callback that, every few steps, computes the
gradient of the model's own training loss on a fixed probe batch and
records, for every layer being trained, the gradient norm, the weight norm
and the update-to-weight ratio. It works for plain Keras models, for
`keras_dib.GreedyLayerwiseModel` trained end to end, and for its greedy
stages, where only the block being trained (and its head) has trainable
variables, so only those layers are recorded.

`gradient_norm_profile` reduces the records to one gradient norm per layer
(at the start, the middle or the end of each layer's training) with its
spread over depth, and `plot_gradient_norms` draws those profiles for
several runs.

The gradient itself needs the backend's differentiation (`jax.grad`,
`tf.GradientTape`, `torch.autograd.grad`): that is the one
backend-specific piece, isolated in `_gradient_function`, with lazy
imports. TensorBoard files are written with `tf.summary` (TensorFlow is
imported only when `tensorboard` or `tensorboard_dir` is set).
"""

import inspect
import json
import math
import os
import time

import keras
import numpy as np

from keras_dib import callbacks as block_callbacks

PROFILE_MODES = ("start", "middle", "end")


def _gradient_function(loss_function, jit_compile):
    """Wraps `loss_function(trainable_values, *args)` into value-and-grad.

    The only backend-specific code of this module: returns a function
    `(trainable_values, *args) -> (loss, gradients)`, with `gradients` one
    tensor per trainable value (zeros where the loss does not depend on
    it), compiled with `jax.jit` / `tf.function` when `jit_compile`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        function = jax.value_and_grad(loss_function)
        return jax.jit(function) if jit_compile else function
    if backend == "tensorflow":
        import tensorflow as tf

        def function(trainable_values, *args):
            trainable_values = [tf.identity(v) for v in trainable_values]
            with tf.GradientTape() as tape:
                tape.watch(trainable_values)
                loss = loss_function(trainable_values, *args)
            gradients = tape.gradient(
                loss,
                trainable_values,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return loss, gradients

        return tf.function(function) if jit_compile else function
    if backend == "torch":
        import torch

        def function(trainable_values, *args):
            trainable_values = [
                v.detach().requires_grad_(True) for v in trainable_values
            ]
            with torch.enable_grad():
                loss = loss_function(trainable_values, *args)
                gradients = torch.autograd.grad(
                    loss, trainable_values, allow_unused=True
                )
            gradients = [
                torch.zeros_like(v) if g is None else g
                for v, g in zip(trainable_values, gradients)
            ]
            return loss.detach(), gradients

        return function
    raise ValueError(
        "GradientStatistics needs a backend with automatic differentiation: "
        f"jax, tensorflow or torch. Received: backend={backend!r}"
    )


def _accepts_argument(function, name):
    """Whether `function`'s signature has an argument called `name`."""
    return name in inspect.signature(function).parameters


def _stateless_training_loss(model):
    """The model's training loss as a pure function of variable values.

    The training step of Keras' TensorFlow and torch trainers, `y_pred =
    model(x, training=True)` then `model.compute_loss(...)` (`training` is
    passed only to a `call` or `compute_loss` that accepts it), run inside
    one `keras.StatelessScope` holding the given variable values, so that
    the probe changes neither batch-normalization statistics, nor random
    seeds, nor the model's metrics. The scope collects the losses that
    layers add during the forward pass (`add_loss`, activity
    regularizers), which `compute_loss` adds to the objective through
    `model.losses`, as Keras' JAX trainer does.
    """
    call_kwargs = {}
    if _accepts_argument(model.call, "training"):
        call_kwargs["training"] = True
    loss_kwargs = {}
    if _accepts_argument(model.compute_loss, "training"):
        loss_kwargs["training"] = True

    def loss_function(
        trainable_values,
        non_trainable_values,
        metrics_values,
        x,
        y,
        sample_weight,
    ):
        state_mapping = [
            *zip(model.trainable_variables, trainable_values),
            *zip(model.non_trainable_variables, non_trainable_values),
            *zip(model.metrics_variables, metrics_values),
        ]
        with keras.StatelessScope(
            state_mapping=state_mapping, collect_losses=True
        ):
            y_pred = model(x, **call_kwargs)
            return model.compute_loss(
                x, y, y_pred, sample_weight, **loss_kwargs
            )

    return loss_function


def _current_state(model):
    """Values of the trainable, non-trainable and metrics variables.

    `model` should come from the callback's `self.model`: on JAX that
    property syncs the training state, which Keras keeps outside the model
    during an epoch, back into the model's variables.
    """
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.metrics_variables],
    )


def _layer_key(variable, model_name):
    """Layer path of a variable, without the model's own name."""
    parts = variable.path.split("/")[:-1]
    if len(parts) > 1 and parts[0] == model_name:
        parts = parts[1:]
    return "/".join(parts) or variable.name


def _norm(arrays):
    return math.sqrt(
        sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)
    )


def _to_float(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator == 0:
        return None
    return _to_float(numerator / denominator)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` should be a positive integer. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="keras_dib")
class GradientStatistics(keras.callbacks.Callback):
    """Records per-layer gradient norms, weight norms and update ratios.

    Every `every_n_steps` training steps (and at the start and the end of
    every `fit`, or of every greedy block), computes the gradient of the
    model's own training loss on a fixed probe batch `(x, y)`, in training
    mode, with respect to `model.trainable_variables`, and records for each
    layer `l` that owns trainable variables `W_l` (kernel and bias
    together):

    - `gradient_norm`: `||dL/dW_l||_2`, the Frobenius norm over all of the
      layer's trainable variables;
    - `weight_norm`: `||W_l||_2`;
    - `update_ratio`: `||W_l(t) - W_l(t')||_2 / ||W_l(t)||_2`, the relative
      change of the weights since the previous record `t'` of the same
      `fit` (the interval in steps is `update_steps`), i.e. what the
      optimizer actually did, whatever its rule; None at the first record
      of a `fit` or greedy block.

    The loss is `model.compute_loss` on a stateless forward pass, as in the
    training step, so for a `keras_dib.GreedyLayerwiseModel` in a greedy
    stage it is the local objective (e.g. DIB) of the current block, and
    only the current block and its head are recorded: the other blocks are
    frozen. The probe leaves the model untouched (no batch-normalization
    update, no metric update). Norms are computed in float64 NumPy.

    Each record is a dict `{"step", "stage_step", "epoch", "schedule",
    "block", "loss", "gradient_norm_max_over_min",
    "gradient_norm_first_over_last", "seconds", "layers": [{"layer", "depth",
    "block", "role", "num_parameters", "gradient_norm", "weight_norm",
    "update_ratio", "update_steps"}, ...]}`, appended to `records`, written
    as one JSON line to `filepath` (the file is started afresh by the
    callback's first record) and as scalars to TensorBoard. `depth` is the
    layer's position in the inference network (blocks, then the final
    head), the same in an end-to-end and a greedy fit of the same
    architecture; auxiliary heads have depth None (`schedule` and `block`
    are None for a plain Keras model). `step` counts training
    steps (as Keras reports them to callbacks) over all the fits and blocks
    the callback has seen, `stage_step` those of the current fit or block;
    `seconds` is the time the record took (the first of each fit or block
    includes compiling the probe).

    At each epoch end the latest record's spread over layers is added to
    the logs (and so to the History): `gradient_norm_max_over_min`, the
    largest over the smallest layer gradient norm, and
    `gradient_norm_first_over_last`, the first layer's over the last
    layer's (auxiliary heads excluded).

    Cost: one forward and backward pass on the probe batch every
    `every_n_steps` steps (compiled once per `fit` or block), plus copying
    the gradients and weights to the host (and keeping one float64 copy
    of the trained weights there, for the update ratio); `probe_seconds`
    accumulates the time spent in the callback. With a probe batch as
    large as a training batch, the overhead is about `1 / every_n_steps`
    of the training time, plus one compilation per fit or block: measured
    on 2 CPU cores (JAX, `benchmarks/gradients.py`, probe and training
    batches of 64, `every_n_steps=25`), 3.7% to 4.5% of the training time
    once compiled, and 0.7 s to 1.8 s for the first record of each fit or
    greedy block (compilation included; the DIB probe, with its
    eigendecomposition, is the slower to compile). Short greedy stages on
    a CPU feel the compilation most: 15% to 29% of the fit time there.

    On JAX the callback reads the model through `self.model`, which syncs
    the training state that Keras keeps outside the model during an epoch,
    so mid-epoch records see the current weights.

    Args:
        x: the probe inputs, a fixed batch: an array (or nested list) or
            a dict of arrays. Floating arrays are stored as float32.
        y: the probe targets, or None if the loss needs none.
        sample_weight: optional per-sample weights of the probe batch.
        every_n_steps: positive int, record every this many training
            steps. Defaults to 50.
        filepath: optional path of a JSON lines file, one record a line.
            Defaults to None.
        tensorboard: a `keras_dib.callbacks.TensorBoard` (written to its
            `log_dir`) or a log folder, or None. Each record is written
            as scalars to the run `gradients` of that folder, at its
            `step`, the global step axis of the TensorBoard callback,
            continuous across greedy blocks: `gradients/probe_loss`,
            `gradients/gradient_norm_max_over_min`,
            `gradients/gradient_norm_first_over_last` and
            `gradients/block_<k>/<layer>/<name>` (`gradients/<layer>/<name>`
            outside greedy blocks) for `gradient_norm`, `weight_norm` and
            `update_ratio`. Needs TensorFlow (not the `tensorboard`
            package). Defaults to None.
        tensorboard_dir: optional folder for TensorBoard event files
            (`gradient_norm/<layer>`, `weight_norm/<layer>`,
            `update_ratio/<layer>`, `probe_loss` at each step recorded),
            the run folder itself; not together with `tensorboard`.
            Defaults to None.
        jit_compile: bool, compile the probe with `jax.jit` or
            `tf.function` (eager on torch). Defaults to True.

    Returns:
        A `keras.callbacks.Callback`; after `fit`, `records` holds the
        records and `probe_seconds` the time spent.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=64)
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...      for i in (1, 2)],
    ...     head=keras.layers.Dense(3, name="head"),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> stats = keras_dib.analysis.GradientStatistics(
    ...     x[:16], y[:16], every_n_steps=2
    ... )
    >>> history = model.fit(x, y, batch_size=16, epochs=[1, 1],
    ...                     callbacks=[stats], verbose=0)
    >>> [record["step"] for record in stats.records]  # 4 steps per block
    [0, 2, 4, 4, 6, 8]
    >>> profile = keras_dib.analysis.gradient_norm_profile(stats.records)
    >>> profile["layers"]
    ['block_1', 'block_2', 'head']
    >>> profile["first_over_last"] > 0
    True

    References:
        - Glorot & Bengio, "Understanding the difficulty of training deep
          feedforward neural networks", AISTATS 2010.
          https://proceedings.mlr.press/v9/glorot10a.html
        - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck
          with Matrix-based Entropy Functional", ICASSP 2021.
          https://arxiv.org/abs/2102.00533
    """

    def __init__(
        self,
        x,
        y=None,
        sample_weight=None,
        every_n_steps=50,
        filepath=None,
        tensorboard_dir=None,
        jit_compile=True,
        tensorboard=None,
    ):
        _check_positive_int("every_n_steps", every_n_steps)
        x = _as_probe_structure("x", x)
        y = None if y is None else _as_probe_structure("y", y)
        if sample_weight is not None:
            sample_weight = _as_probe_array(sample_weight)
        sizes = {
            int(np.shape(a)[0]) if np.ndim(a) else -1
            for a in keras.tree.flatten((x, y, sample_weight))
            if a is not None
        }
        if len(sizes) != 1 or -1 in sizes or 0 in sizes:
            raise ValueError(
                "`x`, `y` and `sample_weight` should be non-empty arrays "
                "with the same number of samples (the probe batch). Received "
                f"batch sizes: {sorted(sizes)}"
            )
        for name, value in (
            ("filepath", filepath),
            ("tensorboard_dir", tensorboard_dir),
        ):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(
                    f"`{name}` should be a path or None. "
                    f"Received: {name}={value!r}"
                )
        if tensorboard is not None and tensorboard_dir is not None:
            raise ValueError(
                "Pass `tensorboard` or `tensorboard_dir`, not both. Received: "
                f"tensorboard={tensorboard!r}, "
                f"tensorboard_dir={tensorboard_dir!r}"
            )
        if tensorboard is not None:
            block_callbacks._tensorboard_log_dir(tensorboard)
        if not isinstance(jit_compile, bool):
            raise ValueError(
                "`jit_compile` should be a bool. "
                f"Received: jit_compile={jit_compile!r}"
            )
        super().__init__()
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.every_n_steps = every_n_steps
        self.filepath = None if filepath is None else os.fspath(filepath)
        self.tensorboard_dir = (
            None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        )
        self.jit_compile = jit_compile
        self.tensorboard = tensorboard
        self.records = []
        self.probe_seconds = 0.0
        self.num_probes = 0
        self._global_step = 0
        self._file_started = False
        self._writer = None
        self._probe_function = None

    # === Training hooks ===

    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        # A new fit or greedy block: new trainable set, new traced step.
        self._probe_function = None
        self._probe_variables = None
        self._probe_inputs = None
        self._snapshots = {}
        self._stage_step = 0
        self._last_recorded_step = None
        self._epoch = 0
        self._describe_layers()
        self.probe_seconds += time.perf_counter() - start
        self._record()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step run (several with steps_per_execution).
        steps = batch - getattr(self, "_last_batch", -1)
        self._last_batch = batch
        before = self._stage_step
        self._stage_step += steps
        self._global_step += steps
        if self._stage_step // self.every_n_steps > (
            before // self.every_n_steps
        ):
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.records:
            return
        last = self.records[-1]
        for key in (
            "gradient_norm_max_over_min",
            "gradient_norm_first_over_last",
        ):
            value = last[key]
            logs[key] = float("nan") if value is None else value

    def on_train_end(self, logs=None):
        if self._last_recorded_step != self._stage_step:
            self._record()
        if self._writer is not None:
            self._writer.flush()

    # === Probe ===

    def _describe_layers(self):
        """Maps each variable to its layer, depth, block and role."""
        model = self.model
        roles = {}
        if hasattr(model, "blocks") and hasattr(model, "auxiliary_heads"):
            for index, block in enumerate(model.blocks):
                for v in block.weights:
                    roles[id(v)] = ("block", index)
            for v in model.head.weights:
                roles[id(v)] = ("head", len(model.blocks) - 1)
            for index, head in enumerate(model.auxiliary_heads):
                for v in head.weights:
                    roles[id(v)] = ("auxiliary_head", index)
        self._layer_info = {}
        depth = 0
        for v in model.weights:
            key = _layer_key(v, model.name)
            if key in self._layer_info:
                continue
            role, block = roles.get(id(v), ("layer", None))
            if role == "auxiliary_head":
                layer_depth = None
            else:
                layer_depth = depth
                depth += 1
            self._layer_info[key] = {
                "depth": layer_depth,
                "block": block,
                "role": role,
            }

    def _build_probe(self):
        model = self.model
        self._probe_variables = list(model.trainable_variables)
        self._probe_function = _gradient_function(
            _stateless_training_loss(model), self.jit_compile
        )
        convert = keras.ops.convert_to_tensor
        self._probe_inputs = (
            keras.tree.map_structure(convert, self.x),
            None
            if self.y is None
            else keras.tree.map_structure(convert, self.y),
            None if self.sample_weight is None else convert(self.sample_weight),
        )

    def _record(self):
        start = time.perf_counter()
        model = self.model
        if not model.trainable_variables:
            return
        if self._probe_function is None or [
            id(v) for v in model.trainable_variables
        ] != [id(v) for v in self._probe_variables]:
            self._build_probe()
        trainable, non_trainable, metrics = _current_state(model)
        loss, gradients = self._probe_function(
            trainable, non_trainable, metrics, *self._probe_inputs
        )
        loss = _to_float(keras.ops.convert_to_numpy(loss))
        grouped = {}
        for variable, value, gradient in zip(
            self._probe_variables, trainable, gradients
        ):
            key = _layer_key(variable, model.name)
            entry = grouped.setdefault(key, {"weights": [], "gradients": []})
            entry["weights"].append(
                (variable.path, keras.ops.convert_to_numpy(value))
            )
            entry["gradients"].append(keras.ops.convert_to_numpy(gradient))
        layers = []
        for key, entry in grouped.items():
            weights = [w for _, w in entry["weights"]]
            weight_norm = _norm(weights)
            update_ratio = None
            update_steps = None
            previous = [
                self._snapshots.get(path) for path, _ in entry["weights"]
            ]
            if all(p is not None for p in previous):
                change = _norm(
                    [
                        w.astype(np.float64) - p[1]
                        for w, p in zip(weights, previous)
                    ]
                )
                update_ratio = _ratio(change, weight_norm)
                update_steps = self._stage_step - previous[0][0]
            for path, w in entry["weights"]:
                self._snapshots[path] = (
                    self._stage_step,
                    w.astype(np.float64),
                )
            info = self._layer_info.get(
                key, {"depth": None, "block": None, "role": "layer"}
            )
            layers.append(
                {
                    "layer": key,
                    "depth": info["depth"],
                    "block": info["block"],
                    "role": info["role"],
                    "num_parameters": int(sum(w.size for w in weights)),
                    "gradient_norm": _to_float(_norm(entry["gradients"])),
                    "weight_norm": _to_float(weight_norm),
                    "update_ratio": update_ratio,
                    "update_steps": update_steps,
                }
            )
        layers.sort(
            key=lambda r: (r["depth"] is None, r["depth"] or 0, r["layer"])
        )
        main = [
            r["gradient_norm"]
            for r in layers
            if r["depth"] is not None and r["gradient_norm"] is not None
        ]
        record = {
            "step": self._global_step,
            "stage_step": self._stage_step,
            "epoch": self._epoch,
            "schedule": getattr(model, "schedule", None),
            "block": getattr(model, "active_block", None),
            "loss": loss,
            "gradient_norm_max_over_min": (
                _ratio(max(main), min(main)) if main else None
            ),
            "gradient_norm_first_over_last": (
                _ratio(main[0], main[-1]) if main else None
            ),
            "seconds": round(time.perf_counter() - start, 6),
            "layers": layers,
        }
        self.records.append(record)
        self._last_recorded_step = self._stage_step
        self._write(record)
        self.num_probes += 1
        self.probe_seconds += time.perf_counter() - start

    # === Outputs ===

    def _write(self, record):
        if self.filepath is not None:
            directory = os.path.dirname(self.filepath)
            if directory:
                os.makedirs(directory, exist_ok=True)
            mode = "a" if self._file_started else "w"
            with open(self.filepath, mode) as file:
                file.write(json.dumps(record) + "\n")
            self._file_started = True
        if self._writer is None and self.tensorboard is not None:
            self._writer = block_callbacks._RunWriter(
                self.tensorboard, "gradients"
            )
        if self._writer is None and self.tensorboard_dir is not None:
            self._writer = block_callbacks._RunWriter(self.tensorboard_dir, "")
        if self._writer is not None:
            scalars = self._tensorboard_scalars(record)
            self._writer.write(scalars, record["step"])

    def _tensorboard_scalars(self, record):
        names = ("gradient_norm", "weight_norm", "update_ratio")
        if self.tensorboard is None:
            scalars = [("probe_loss", record["loss"])]
            for layer in record["layers"]:
                for name in names:
                    scalars.append((f"{name}/{layer['layer']}", layer[name]))
            return scalars
        scalars = [
            (f"gradients/{key}", record[key])
            for key in (
                "gradient_norm_max_over_min",
                "gradient_norm_first_over_last",
            )
        ]
        scalars.append(("gradients/probe_loss", record["loss"]))
        for layer in record["layers"]:
            where = layer["layer"]
            if layer["block"] is not None:
                where = f"block_{layer['block']}/{where}"
            for name in names:
                scalars.append((f"gradients/{where}/{name}", layer[name]))
        return scalars

    # === Config ===

    def get_config(self):
        return {
            "x": _probe_to_lists(self.x),
            "y": None if self.y is None else _probe_to_lists(self.y),
            "sample_weight": (
                None
                if self.sample_weight is None
                else self.sample_weight.tolist()
            ),
            "every_n_steps": self.every_n_steps,
            "filepath": self.filepath,
            "tensorboard_dir": self.tensorboard_dir,
            "jit_compile": self.jit_compile,
            "tensorboard": (
                None
                if self.tensorboard is None
                else block_callbacks._tensorboard_log_dir(self.tensorboard)
            ),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _as_probe_array(value):
    array = np.asarray(keras.ops.convert_to_numpy(value))
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype("float32")
    return array


def _as_probe_structure(name, value):
    """An array, or a dict of arrays (lists are read as arrays)."""
    if isinstance(value, dict):
        return {key: _as_probe_array(v) for key, v in value.items()}
    try:
        return _as_probe_array(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`{name}` should be an array or a dict of arrays. "
            f"Received: {name} of type {type(value).__name__}"
        ) from error


def _probe_to_lists(value):
    if isinstance(value, dict):
        return {key: v.tolist() for key, v in value.items()}
    return value.tolist()


def load_gradient_statistics(filepath):
    """Reads the records that `GradientStatistics` wrote to a JSON file.

    Args:
        filepath: path of the JSON lines file (`filepath` of the callback).

    Returns:
        The list of record dicts, in the order they were written.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=64)
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...      for i in (1, 2)],
    ...     head=keras.layers.Dense(3, name="head"),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "gradients.jsonl")
    >>> stats = keras_dib.analysis.GradientStatistics(
    ...     x[:16], y[:16], every_n_steps=2, filepath=path
    ... )
    >>> history = model.fit(x, y, batch_size=16, epochs=[1, 1],
    ...                     callbacks=[stats], verbose=0)
    >>> records = keras_dib.analysis.load_gradient_statistics(path)
    >>> len(records) == len(stats.records)
    True
    """
    with open(filepath) as file:
        return [json.loads(line) for line in file if line.strip()]


def _as_records(records):
    if isinstance(records, (str, os.PathLike)):
        return load_gradient_statistics(records)
    if isinstance(records, GradientStatistics):
        return records.records
    if not isinstance(records, (list, tuple)):
        raise ValueError(
            "`records` should be a list of GradientStatistics records, a "
            "GradientStatistics callback or the path of its JSON file. "
            f"Received: records={records!r}"
        )
    return list(records)


def gradient_norm_profile(records, when="start"):
    """One gradient norm per layer, in depth order, and its spread.

    Each layer of the inference network (auxiliary heads excluded) takes
    the gradient norm of its first record (`"start"`), its last (`"end"`)
    or the median over its records (`"middle"`). In an end-to-end fit every
    record holds every layer, so `"start"` is the network before training;
    in a greedy fit each layer appears only while its block trains, so
    `"start"` gathers each block at the start of its own stage.

    Spread over the `L` layers with norms `g_1..g_L` (input to output):
    `max_over_min = max_l g_l / min_l g_l` and
    `first_over_last = g_1 / g_L` (much less than 1: gradients vanish
    towards the input; much more than 1: they explode).

    Args:
        records: the records of a `GradientStatistics` callback (the list,
            the callback itself, or the path of its JSON file).
        when: `"start"`, `"middle"` or `"end"`. Defaults to `"start"`.

    Returns:
        A dict with `layers` (names), `depths`, `gradient_norms`,
        `max_over_min` and `first_over_last` (None when undefined, e.g.
        when a norm is 0), and `zero_layers`, the layers whose gradient is
        exactly zero (dead ReLUs, or a dead layer below them).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=64)
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...      for i in (1, 2)],
    ...     head=keras.layers.Dense(3, name="head"),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> stats = keras_dib.analysis.GradientStatistics(
    ...     x[:16], y[:16], every_n_steps=2
    ... )
    >>> history = model.fit(x, y, batch_size=16, epochs=[1, 1],
    ...                     callbacks=[stats], verbose=0)
    >>> profile = keras_dib.analysis.gradient_norm_profile(
    ...     stats.records, when="end"
    ... )
    >>> profile["max_over_min"] >= 1
    True
    """
    if when not in PROFILE_MODES:
        raise ValueError(
            f"`when` should be one of {PROFILE_MODES}. Received: when={when!r}"
        )
    records = _as_records(records)
    norms = {}
    depths = {}
    for record in records:
        for layer in record["layers"]:
            if layer["depth"] is None or layer["gradient_norm"] is None:
                continue
            norms.setdefault(layer["layer"], []).append(layer["gradient_norm"])
            depths[layer["layer"]] = layer["depth"]
    names = sorted(norms, key=lambda name: depths[name])
    if when == "start":
        values = [norms[name][0] for name in names]
    elif when == "end":
        values = [norms[name][-1] for name in names]
    else:
        values = [float(np.median(norms[name])) for name in names]
    return {
        "layers": names,
        "depths": [depths[name] for name in names],
        "gradient_norms": values,
        "max_over_min": _ratio(max(values), min(values)) if values else None,
        "first_over_last": _ratio(values[0], values[-1]) if values else None,
        "zero_layers": [n for n, v in zip(names, values) if v == 0],
    }


def plot_gradient_norms(
    runs,
    filepath,
    when=("start", "end"),
    title=None,
    figsize=(10.0, 4.0),
    dpi=100,
):
    """Plots gradient norm per layer against depth, one line per run.

    One panel per entry of `when` (by default the start and the end of
    training), a logarithmic gradient-norm axis, and one line per run (for
    example `"end to end"`, `"greedy DIB"`, `"greedy cross-entropy"`), from
    `gradient_norm_profile`. Layers whose gradient is exactly zero are
    drawn as crosses at the bottom of the panel. Saved as a PNG of
    `figsize * dpi` pixels.

    Args:
        runs: dict mapping a run's label to its records (a list, a
            `GradientStatistics` callback, or the path of its JSON file).
        filepath: path of the PNG to write.
        when: sequence of `"start"`, `"middle"`, `"end"`, one panel each.
            Defaults to `("start", "end")`.
        title: optional figure title.
        figsize: `(width, height)` in inches. Defaults to `(10, 4)`.
        dpi: dots per inch. Defaults to 100.

    Returns:
        The path of the PNG.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=64)
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu", name=f"block_{i}")
    ...      for i in (1, 2)],
    ...     head=keras.layers.Dense(3, name="head"),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> greedy = keras_dib.analysis.GradientStatistics(
    ...     x[:16], y[:16], every_n_steps=2
    ... )
    >>> history = model.fit(x, y, batch_size=16, epochs=[1, 1],
    ...                     callbacks=[greedy], verbose=0)
    >>> e2e = keras_dib.analysis.GradientStatistics(
    ...     x[:16], y[:16], every_n_steps=2
    ... )
    >>> history = model.fit(x, y, batch_size=16, epochs=2,
    ...                     schedule="end_to_end", callbacks=[e2e], verbose=0)
    >>> import os, tempfile
    >>> path = keras_dib.analysis.plot_gradient_norms(
    ...     {"end to end": e2e.records, "greedy DIB": greedy.records},
    ...     os.path.join(tempfile.mkdtemp(), "gradients.png"),
    ... )
    >>> os.path.exists(path)
    True
    """
    if not isinstance(runs, dict) or not runs:
        raise ValueError(
            "`runs` should be a non-empty dict mapping labels to records. "
            f"Received: runs={runs!r}"
        )
    if isinstance(when, str):
        when = (when,)
    when = tuple(when)
    if not when or any(w not in PROFILE_MODES for w in when):
        raise ValueError(
            f"`when` should be a non-empty sequence of {PROFILE_MODES}. "
            f"Received: when={when!r}"
        )
    if (
        not isinstance(figsize, (list, tuple))
        or len(figsize) != 2
        or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0
            for s in figsize
        )
    ):
        raise ValueError(
            "`figsize` should be a pair of positive numbers. "
            f"Received: figsize={figsize!r}"
        )
    _check_positive_int("dpi", dpi)
    profiles = {
        label: {w: gradient_norm_profile(records, w) for w in when}
        for label, records in runs.items()
    }
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(
        1, len(when), figsize=tuple(figsize), dpi=dpi, squeeze=False
    )
    try:
        for axis, moment in zip(axes[0], when):
            positive = [
                g
                for by_moment in profiles.values()
                for g in by_moment[moment]["gradient_norms"]
                if g is not None and g > 0
            ]
            floor = min(positive, default=1.0) / 3.0
            for label, by_moment in profiles.items():
                profile = by_moment[moment]
                if not profile["layers"]:
                    continue
                depths = [d + 1 for d in profile["depths"]]
                norms = [
                    g if g is not None and g > 0 else np.nan
                    for g in profile["gradient_norms"]
                ]
                (line,) = axis.plot(depths, norms, marker="o", label=label)
                # Zero gradients (dead layers) cannot sit on a log axis:
                # crosses at the bottom of the panel, the line broken.
                zeros = [
                    d
                    for d, g in zip(depths, profile["gradient_norms"])
                    if g == 0
                ]
                if zeros:
                    axis.plot(
                        zeros,
                        [floor] * len(zeros),
                        linestyle="none",
                        marker="x",
                        color=line.get_color(),
                        label=f"{label}: zero gradient",
                    )
            axis.set_yscale("log")
            axis.set_xlabel("layer (input to output)")
            axis.set_ylabel("gradient norm")
            axis.set_title(f"{moment} of training")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize="small")
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        directory = os.path.dirname(os.fspath(filepath))
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(filepath, dpi=dpi)
    finally:
        plt.close(figure)
    return filepath

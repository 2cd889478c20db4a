"""Training schedules of a `GreedyLayerwiseModel`: which blocks train when.

A schedule owns three things and nothing else:

- its stages: what one call of Keras' own `fit` trains (one block for the
  sequential schedule, the whole network for the others);
- each stage's trainable mask (`set_trainable`);
- each stage's forward plan (`forward`): the outputs `compute_loss` sees.

`GreedyLayerwiseModel.fit` walks `schedule.stages(...)` and calls Keras'
`fit` once per stage; `call` and `compute_loss` ask the schedule of the
current stage. A new schedule is one subclass of `Schedule`, passed as
`fit(schedule=MySchedule())`: nothing else changes.
"""

import dataclasses

import keras
import numpy as np
from keras import ops


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a schedule: what one Keras `fit` call trains.

    Attributes:
        position: index of the stage in the schedule's list.
        block: index of the block trained on its own, or None when the
            stage trains several blocks at once.
        epochs: epochs of the stage.
        label: a human-readable name, used in messages.
    """

    position: int
    block: object
    epochs: int
    label: str


def _check_epochs(epochs, name):
    if (
        isinstance(epochs, bool)
        or not isinstance(epochs, (int, np.integer))
        or epochs < 0
    ):
        raise ValueError(
            f"With schedule={name!r}, `epochs` should be an integer >= 0. "
            f"Received: epochs={epochs!r}"
        )
    return int(epochs)


def _local_output(block_inputs, features, logits):
    return {
        "logits": logits,
        "features": features,
        "block_inputs": block_inputs,
    }


def apply_block(model, index, x, training, stop_head_gradient=False):
    """Runs block `index` on `x` (no gradient into `x`) and its head.

    Returns the local output `{"logits", "features", "block_inputs"}`.
    With `stop_head_gradient`, the head reads the block's features under
    `stop_gradient`: its loss trains the head alone, not the block.
    """
    block_inputs = ops.stop_gradient(x)
    features = model.blocks[index](block_inputs, training=training)
    head_inputs = (
        ops.stop_gradient(features) if stop_head_gradient else features
    )
    logits = model.training_heads[index](head_inputs, training=training)
    return _local_output(block_inputs, features, logits)


@keras.saving.register_keras_serializable(package="keras_dib")
class Schedule:
    """Base class of the training schedules of a `GreedyLayerwiseModel`.

    Subclasses set `name` and `trains_locally`, and override `stages`,
    `set_trainable` and (for local training) `forward`. Pass an instance
    as `GreedyLayerwiseModel.fit(schedule=...)`.

    Attributes:
        name: the schedule's name (`fit(schedule=name)` for the built-in
            ones).
        trains_locally: True when every block is trained through its own
            head on the compiled local objective (the model's output is
            then a dict of local outputs), False for plain backpropagation
            through the inference network.
        supports_cache_prefix: True when the stages freeze the blocks
            before the one trained, so `fit(cache_prefix=True)` applies.
        trains_blocks_in_turn: True when each stage trains one block
            through its own head, so each stage's validation metrics are
            that block's (what `fit(select_depth=...)` needs).

    Example:

    >>> class LastBlockOnly(keras_dib.models.schedules.Schedule):
    ...     name = "last_block_only"
    ...     def stages(self, model, epochs):
    ...         last = model.num_blocks - 1
    ...         return [keras_dib.models.schedules.Stage(
    ...             0, last, epochs, "last block")]
    ...     def set_trainable(self, model, stage):
    ...         for index, (block, head) in enumerate(
    ...             zip(model.blocks, model.training_heads)
    ...         ):
    ...             block.trainable = head.trainable = index == stage.block
    ...     def forward(self, model, inputs, stage, training, **kwargs):
    ...         return keras_dib.models.schedules.sequential_forward(
    ...             model, inputs, stage, training, **kwargs)
    >>> model = keras_dib.GreedyLayerwiseModel(
    ...     [keras.layers.Dense(8, activation="relu") for _ in range(2)],
    ...     head=keras.layers.Dense(3),
    ...     num_classes=3,
    ...     input_shape=(4,),
    ... )
    >>> model.compile(optimizer="sgd", loss=keras_dib.losses.DIB())
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 4)).astype("float32")
    >>> y = rng.integers(0, 3, size=16)
    >>> history = model.fit(
    ...     x, y, batch_size=8, epochs=2, schedule=LastBlockOnly(), verbose=0
    ... )
    >>> history.history["block"]  # only the last block trained
    [1, 1]
    """

    name = None
    trains_locally = True
    supports_cache_prefix = False
    trains_blocks_in_turn = False

    def stages(self, model, epochs):
        """The list of `Stage`s for `fit(epochs=epochs)`.

        Raises:
            ValueError: for `epochs` this schedule does not accept.
        """
        raise NotImplementedError

    def set_trainable(self, model, stage):
        """Sets the `trainable` flags of blocks and heads for `stage`."""
        raise NotImplementedError

    def forward(
        self,
        model,
        inputs,
        stage,
        training,
        prefix_cached=False,
        stop_head_gradient=False,
    ):
        """The stage's outputs: `{"logits", "local": [local outputs]}`.

        Each local output is `{"logits", "features", "block_inputs"}` of
        one trained block; `compute_loss` sums the objective over them.
        """
        raise NotImplementedError

    def describe(self, model, stage, num_parameters):
        """One line printed at the start of a stage."""
        return (
            f"{self.name.replace('_', ' ').capitalize()} training of "
            f"{model.num_blocks} blocks: {num_parameters:,} parameters, "
            f"{stage.epochs} epochs"
        )

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return f"{type(self).__name__}()"

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def sequential_forward(
    model, inputs, stage, training, prefix_cached=False, **kwargs
):
    """Frozen blocks before `stage.block` in inference mode, then the block.

    With `prefix_cached`, `inputs` is `{"inputs", "block_inputs"}`: the
    frozen blocks' output was computed once before the stage.
    """
    if prefix_cached:
        x = inputs["block_inputs"]
    else:
        x = inputs
        for block in model.blocks[: stage.block]:
            x = block(x, training=False)
    local = apply_block(model, stage.block, x, training, **kwargs)
    return {"logits": local["logits"], "local": [local]}


@keras.saving.register_keras_serializable(package="keras_dib")
class Sequential(Schedule):
    """Greedy training: block after block, earlier blocks frozen.

    Block `l` and its head train on the local objective while blocks
    `1..l-1` run in inference mode under `stop_gradient` (no activation of
    theirs is kept for backpropagation); the last block trains through the
    network's classifier. `epochs` is an integer per block or a list with
    one integer per block (0 skips a block).

    References:
        - Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can
          Scale to ImageNet", ICML 2019. https://arxiv.org/abs/1812.11446
    """

    name = "sequential"
    supports_cache_prefix = True
    trains_blocks_in_turn = True

    def stages(self, model, epochs):
        if isinstance(epochs, (int, np.integer)) and not isinstance(
            epochs, bool
        ):
            epochs = [int(epochs)] * model.num_blocks
        if (
            not isinstance(epochs, (list, tuple))
            or len(epochs) != model.num_blocks
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
                f"({model.num_blocks} blocks). Received: epochs={epochs!r}"
            )
        return [
            Stage(
                index,
                index,
                int(count),
                f"Block {index + 1}/{model.num_blocks} "
                f"({model.blocks[index].name})",
            )
            for index, count in enumerate(epochs)
        ]

    def set_trainable(self, model, stage):
        for index, (block, head) in enumerate(
            zip(model.blocks, model.training_heads)
        ):
            block.trainable = index == stage.block
            head.trainable = index == stage.block

    def forward(self, model, inputs, stage, training, **kwargs):
        return sequential_forward(model, inputs, stage, training, **kwargs)

    def describe(self, model, stage, num_parameters):
        frozen = {0: "", 1: "; block 1 frozen"}.get(
            stage.block, f"; blocks 1-{stage.block} frozen"
        )
        return (
            f"{stage.label}: training {num_parameters:,} parameters for "
            f"{stage.epochs} epochs{frozen}"
        )


@keras.saving.register_keras_serializable(package="keras_dib")
class Simultaneous(Schedule):
    """Every block at once, each on its own local objective.

    The gradient is stopped between blocks (Decoupled Greedy Learning):
    block `l`'s objective reaches block `l` and its head only. It saves no
    memory over end-to-end training, as every block's activations are kept
    for its own backward pass. `epochs` is one integer.

    References:
        - Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of
          CNNs", ICML 2020. https://arxiv.org/abs/1901.08164
    """

    name = "simultaneous"

    def stages(self, model, epochs):
        epochs = _check_epochs(epochs, self.name)
        return [Stage(0, None, epochs, "simultaneous training")]

    def set_trainable(self, model, stage):
        for layer in model.blocks + model.training_heads:
            layer.trainable = True

    def forward(
        self, model, inputs, stage, training, prefix_cached=False, **kwargs
    ):
        local = []
        x = inputs
        for index in range(model.num_blocks):
            local.append(apply_block(model, index, x, training, **kwargs))
            x = local[-1]["features"]
        return {"logits": local[-1]["logits"], "local": local}


@keras.saving.register_keras_serializable(package="keras_dib")
class EndToEnd(Schedule):
    """Ordinary backpropagation through the inference network.

    The auxiliary heads are frozen and unused; the network is trained on
    the compiled loss's cross-entropy, for comparison with the greedy
    schedules. `epochs` is one integer.
    """

    name = "end_to_end"
    trains_locally = False

    def stages(self, model, epochs):
        epochs = _check_epochs(epochs, self.name)
        return [Stage(0, None, epochs, "end_to_end training")]

    def set_trainable(self, model, stage):
        for block in model.blocks:
            block.trainable = True
        for head in model.training_heads:
            head.trainable = head is model.head


SCHEDULES = {
    schedule.name: schedule
    for schedule in (Sequential(), Simultaneous(), EndToEnd())
}


def get(identifier):
    """A `Schedule` from a name (`"sequential"`, ...) or an instance.

    Args:
        identifier: one of `"sequential"`, `"simultaneous"`,
            `"end_to_end"`, or a `Schedule` instance.

    Returns:
        A `Schedule`.

    Example:

    >>> keras_dib.models.schedules.get("sequential").name
    'sequential'
    """
    if isinstance(identifier, Schedule):
        return identifier
    if isinstance(identifier, str) and identifier in SCHEDULES:
        return SCHEDULES[identifier]
    raise ValueError(
        f"`schedule` should be one of {tuple(SCHEDULES)} or a "
        "keras_dib.models.schedules.Schedule instance. Received: "
        f"schedule={identifier!r}"
    )

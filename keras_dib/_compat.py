"""The places where keras_dib depends on Keras internals.

Each function here stands in for a piece of Keras that has no public API;
`tests/compat_test.py` checks each one against Keras itself, so that a
Keras upgrade that changes the internals fails there, loudly.

- Loss scaling under `tf.distribute`: Keras divides a loss by the number
  of replicas (its private
  `keras.src.losses.loss.scale_loss_for_distribution`), so that the
  per-replica gradients sum to the global batch's. keras_dib computes its
  batch-level terms itself and must scale them alike. The rule is rebuilt
  here from public API only.
- The layer graph of a functional model: `producer_node` finds the call
  (the Keras `Node`) that computed a symbolic tensor, which
  `keras_dib.models.split_model` walks to cut a model into blocks. Keras
  exposes only the first call of a layer publicly (`layer.output`), not
  the producer of an arbitrary tensor.
- The chief of a multi-process fit: Keras has no public API telling
  whether this process is the one that writes checkpoints, so
  `is_chief_process` asks the backend (JAX's process index, the
  `tf.distribute` strategy's `should_checkpoint`).
"""

import keras
from keras import ops


def num_replicas_in_sync():
    """Replicas of the current `tf.distribute` strategy (1 elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss_for_distribution(value):
    """`value / num_replicas` under `tf.distribute`, else `value`."""
    replicas = num_replicas_in_sync()
    if replicas > 1:
        value = ops.multiply(value, ops.cast(1.0 / replicas, value.dtype))
    return value


def unscale_loss_for_distribution(value):
    """`value * num_replicas` under `tf.distribute`, else `value`."""
    replicas = num_replicas_in_sync()
    if replicas > 1:
        value = ops.multiply(value, ops.cast(replicas, value.dtype))
    return value


def is_chief_process(model=None):
    """Whether this process writes the files of a multi-process fit.

    JAX: process 0 of `keras.distribution.initialize` (True when there is
    one process). TensorFlow: the chief of the model's `tf.distribute`
    strategy (worker 0 of a `MultiWorkerMirroredStrategy` without a
    chief task; True for every other strategy). Other backends: True.

    Args:
        model: optional Keras model whose strategy is asked (TensorFlow:
            the strategy it was built under, else the current one).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = getattr(model, "distribute_strategy", None)
        strategy = strategy or tf.distribute.get_strategy()
        return bool(strategy.extended.should_checkpoint)
    return True


def producer_node(tensor):
    """The call of a layer (or operation) that computed a symbolic tensor.

    Reads the tensor's private `_keras_history` (the operation, which of
    its calls, which of its outputs) and the operation's private
    `_inbound_nodes` (one `Node` per call). keras_dib then uses only these
    attributes of the returned `Node`: `operation` (the layer or
    operation called), `is_input` (True for the node of an `Input`),
    `input_tensors` (the symbolic tensors it was called on), `outputs`
    (the tensors it returned, flattened) and `arguments.fill_in(values)`
    (its call `(args, kwargs)` with each input tensor replaced by
    `values[id(tensor)]`).

    Args:
        tensor: a `keras.KerasTensor` of a functional model's graph.

    Returns:
        The Keras `Node` whose `outputs` include `tensor`.
    """
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]

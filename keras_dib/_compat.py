"""The one place where keras_dib depends on how Keras distributes losses.

Keras divides a loss by the number of replicas under `tf.distribute` (its
private `keras.src.losses.loss.scale_loss_for_distribution`), so that the
per-replica gradients sum to the global batch's. keras_dib computes its
batch-level terms itself and must scale them alike. The rule is rebuilt
here from public API only; `tests/compat_test.py` checks it against the
private Keras function, and fails when Keras changes it.
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

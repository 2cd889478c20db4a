"""One process of a greedy fit launched as several processes.

Run by `multiprocess_test.py`, one subprocess per process:

    python multiprocess_worker.py ENGINE PROCESS_ID NUM_PROCESSES PORTS
        OUTPUT_PREFIX [CHECKPOINT_DIR [STOP_AT]]

ENGINE is `jax` (`keras.distribution.initialize` and `DataParallel` over
one CPU device per process) or `tensorflow`
(`tf.distribute.MultiWorkerMirroredStrategy`, one CPU worker per process,
configured through `TF_CONFIG`); `tensorflow-plain` fits a plain
`keras.Sequential` under that strategy instead (printing DONE), to tell
Keras' own failures from keras_dib's. PORTS is a comma-separated list of free
ports on 127.0.0.1: JAX uses the first (process 0's coordinator),
TensorFlow one per worker. With NUM_PROCESSES 1 the same fit runs in one
process on one device, without any distribution: the reference.

Every process fits the same global batches: with JAX each process feeds
its share of every global batch (`_local_share`), with TensorFlow each
worker passes all the data and the strategy splits every batch between
the workers. The fit ends with every model variable in
OUTPUT_PREFIX-PROCESS_ID.npz, and in OUTPUT_PREFIX-PROCESS_ID.json the
History, the `(block, epoch)` of every epoch begun in this process, the
number of checkpoints this process wrote, the predictions of its inputs
(or the error of `predict`) and (JAX) the DIB compression term of the
first global batch computed three ways (`_gram_check`).

With CHECKPOINT_DIR the fit checkpoints there; STOP_AT `B:E` makes the
process exit (status 3, writing nothing) when epoch E of block B begins,
as a job killed there would, so that a later launch resumes from the
checkpoint.
"""

import json
import os
import sys

NUM_SAMPLES = 64
GLOBAL_BATCH = 16
NUM_CLASSES = 3
EPOCHS = [1, 2, 0, 0, 1]
STOPPED = 3


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, 32, 32, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=NUM_SAMPLES).astype("int32")
    return x, y


def _local_share(array, process_id, num_processes):
    """This process' share of every global batch (a row of the batch each
    `GLOBAL_BATCH // num_processes` samples): the global batch is the
    processes' shares in process order, as `jax.make_array_from_process_
    local_data` assembles it."""
    per_process = GLOBAL_BATCH // num_processes
    steps = len(array) // GLOBAL_BATCH
    shares = array.reshape(
        (steps, num_processes, per_process) + array.shape[1:]
    )
    return shares[:, process_id].reshape((-1,) + array.shape[1:])


def _gram_check(loss, x, num_processes):
    """DIB's compression term of the first global batch, three ways.

    `full`: on the whole global batch, in this process; `halves`: the
    mean over its two halves (what per-process Gram matrices would give
    with two processes); `sharded` (several processes only): jitted on
    the global batch assembled from every process' share, as the fit
    computes it.
    """
    import numpy as np

    def features(inputs):
        return np.tanh(inputs.reshape(len(inputs), -1)[:, ::16])

    def term(inputs):
        return float(
            loss.regularization(inputs, inputs, features(inputs), None)
        )

    full_x, _ = _data()
    full_x = full_x[:GLOBAL_BATCH]
    per_process = GLOBAL_BATCH // num_processes
    result = {
        "full": term(full_x),
        "halves": float(
            np.mean([term(share) for share in np.split(full_x, 2)])
        ),
    }
    if num_processes > 1:
        import jax

        sharding = jax.sharding.NamedSharding(
            jax.sharding.Mesh(np.array(jax.devices()), ("batch",)),
            jax.sharding.PartitionSpec("batch"),
        )
        share = x[:per_process]
        inputs = jax.make_array_from_process_local_data(sharding, share)
        outputs = jax.make_array_from_process_local_data(
            sharding, features(share)
        )
        sharded = jax.jit(lambda a, f: loss.regularization(a, a, f, None))
        result["sharded"] = float(sharded(inputs, outputs))
    return result


def _setup_jax(process_id, num_processes, ports):
    import keras

    if num_processes == 1:
        return None
    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{ports[0]}",
        num_processes=num_processes,
        process_id=process_id,
    )
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == num_processes, devices
    keras.distribution.set_distribution(
        # Each process passes its own share of the arrays (no tf.data
        # dataset for Keras to shard).
        keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=False
        )
    )
    return None


def _setup_tensorflow(process_id, num_processes, ports):
    if num_processes > 1:
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": process_id},
            }
        )
    import tensorflow as tf

    if num_processes == 1:
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == num_processes
    return strategy


def _plain_keras_fit(strategy):
    """A `keras.Sequential` fit under `strategy`, without keras_dib."""
    import keras
    import numpy as np

    keras.config.disable_traceback_filtering()
    x, y = _data()
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((32, 32, 3)), keras.layers.Flatten()]
            + [keras.layers.Dense(NUM_CLASSES)]
        )
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    model.fit(x, y, batch_size=GLOBAL_BATCH, verbose=0, shuffle=False)
    assert np.all(np.isfinite(model.get_weights()[0]))
    print("DONE")


def _recorder(stop_at):
    """A callback recording the `(block, epoch)` begun and exiting the
    process at `stop_at` (`"B:E"`, or None)."""
    import keras

    stop = tuple(int(v) for v in stop_at.split(":")) if stop_at else None

    class Recorder(keras.callbacks.Callback):
        begun = []

        def on_epoch_begin(self, epoch, logs=None):
            where = (self.model.active_block, epoch)
            if where == stop:
                sys.stdout.flush()
                os._exit(STOPPED)
            self.begun.append(list(where))

    return Recorder()


def _count_checkpoint_writes():
    """Counts this process' checkpoint writes (renames onto the file)."""
    from keras_dib.models import checkpointing

    count = {"writes": 0}
    replace = os.replace

    def counting_replace(source, destination):
        if os.path.basename(destination) == checkpointing.FILENAME:
            count["writes"] += 1
        return replace(source, destination)

    checkpointing.os.replace = counting_replace
    return count


def main(
    engine,
    process_id,
    num_processes,
    ports,
    output_prefix,
    checkpoint_dir=None,
    stop_at=None,
):
    process_id, num_processes = int(process_id), int(num_processes)
    ports = [int(port) for port in ports.split(",") if port]
    if engine == "jax":
        strategy = _setup_jax(process_id, num_processes, ports)
    else:
        strategy = _setup_tensorflow(process_id, num_processes, ports)
    if engine == "tensorflow-plain":
        return _plain_keras_fit(strategy)

    import keras
    import numpy as np

    import keras_dib

    keras.config.disable_traceback_filtering()
    keras.utils.set_random_seed(0)
    x, y = _data()
    batch_size = GLOBAL_BATCH
    if engine == "jax":
        x = _local_share(x, process_id, num_processes)
        y = _local_share(y, process_id, num_processes)
        batch_size = GLOBAL_BATCH // num_processes

    def build():
        model = keras_dib.build_vgg(
            11,
            num_classes=NUM_CLASSES,
            input_shape=(32, 32, 3),
            width=4,
            granularity="stage",
            **(
                {}
                if engine == "jax"
                else {"batch_norm": False, "head_conv_filters": None}
            ),
        )
        # JAX: a DIB term (alpha=2 is cheap); its Gram matrices must be
        # the global batch's. TensorFlow: each replica has its own Gram
        # matrices and batch statistics, so neither is used (beta=0, no
        # batch normalization) for an exact comparison.
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras_dib.DIB(
                alpha=2.0, beta=0.01 if engine == "jax" else 0.0
            ),
        )
        return model

    if strategy is not None:
        with strategy.scope():
            model = build()
    else:
        model = build()
    from keras_dib import _compat

    # Who writes the checkpoints, printed before the fit (which may fail).
    print(f"chief: {_compat.is_chief_process(model)}", flush=True)
    recorder = _recorder(stop_at)
    count = _count_checkpoint_writes()
    history = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=EPOCHS,
        verbose=0,
        shuffle=False,
        callbacks=[recorder],
        checkpoint_dir=checkpoint_dir or None,
    )
    record = {
        "history": history.history,
        "begun": recorder.begun,
        "checkpoint_writes": count["writes"],
    }
    if engine == "jax":
        dib = keras_dib.DIB(alpha=2.0, beta=0.01)
        record["gram"] = _gram_check(dib, x, num_processes)
    # `predict` on this process' inputs: with several JAX processes Keras
    # cannot gather the outputs (they span the other processes' devices).
    try:
        predictions = model.predict(x, batch_size=batch_size, verbose=0)
        record["predictions"] = np.asarray(predictions).tolist()
    except RuntimeError as error:
        record["predict_error"] = str(error)
    prefix = f"{output_prefix}-{process_id}"
    np.savez(
        prefix + ".npz",
        *[keras.ops.convert_to_numpy(v) for v in model.variables],
    )
    with open(prefix + ".json", "w") as file:
        json.dump(record, file)
    print("DONE")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Tests of keras_dib.callbacks.TensorBoard: one axis across greedy blocks.

The event files are read back with TensorFlow's `summary_iterator` (the
`tensorboard` package is not needed, on any backend).
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dib
from keras_dib.callbacks import TensorBoard

NUM_CLASSES = 3
EPOCHS = 2
BATCH_SIZE = 16
NUM_SAMPLES = 32  # 2 batches per epoch
FIXED_WIDTH = {"sigma": 1.0, "target_sigma": 4.0}


def _data(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=(n,)).astype("int32")
    x = rng.normal(size=(n,) + shape).astype("float32")
    x[..., 0] += y.reshape((n,) + (1,) * (len(shape) - 1))
    return x, y


def _read(folder):
    """`{tag: [(step, value), ...]}` of a run folder, in writing order."""
    events = []
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                number = float(tf.make_ndarray(value.tensor))
                events.append((event.wall_time, value.tag, event.step, number))
    scalars = {}
    for _, tag, step, number in sorted(events, key=lambda e: e[0]):
        scalars.setdefault(tag, []).append((step, number))
    return scalars


def _steps(scalars, tag):
    return [step for step, _ in scalars.get(tag, [])]


def _tiny_greedy_model(num_blocks=3):
    blocks = [
        keras.Sequential(
            [
                keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
            ]
        )
        for _ in range(num_blocks)
    ]
    return keras_dib.GreedyLayerwiseModel(
        blocks,
        head=keras_dib.AuxiliaryHead(NUM_CLASSES, grid_size=1, name="head"),
        num_classes=NUM_CLASSES,
        input_shape=(8, 8, 3),
    )


def test_vgg11_greedy_fit_logs_every_block_on_one_axis(tmp_path):
    model = keras_dib.build_vgg(
        11,
        num_classes=NUM_CLASSES,
        width=1,
        input_shape=(32, 32, 3),
        head_conv_filters=None,
    )
    num_blocks = model.num_blocks
    assert num_blocks == 8
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras_dib.losses.LocalObjective(),
        metrics=["accuracy"],
    )
    x, y = _data(NUM_SAMPLES, (32, 32, 3))
    x_val, y_val = _data(BATCH_SIZE, (32, 32, 3), seed=1)
    log_dir = str(tmp_path / "logs")
    callback = TensorBoard(log_dir, update_freq="batch")
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        validation_data=(x_val, y_val),
        callbacks=[callback],
        verbose=0,
    )
    total_epochs = num_blocks * EPOCHS
    batches_per_epoch = NUM_SAMPLES // BATCH_SIZE
    assert sorted(os.listdir(log_dir)) == sorted(
        f"block_{k}" for k in range(num_blocks)
    )

    # Epoch axis: block k holds global epochs 2k and 2k + 1; read in block
    # order they are 0, 1, ..., 15 (strictly increasing), and the values
    # are the History's at the same index.
    train_steps, val_steps, eval_steps, batch_steps = [], [], [], []
    for block in range(num_blocks):
        train = _read(os.path.join(log_dir, f"block_{block}", "train"))
        validation = _read(
            os.path.join(log_dir, f"block_{block}", "validation")
        )
        steps = _steps(train, "epoch_loss")
        assert steps == [block * EPOCHS + e for e in range(EPOCHS)], block
        train_steps += steps
        val_steps += _steps(validation, "epoch_loss")
        for step, value in train["epoch_loss"]:
            np.testing.assert_allclose(
                value, history.history["loss"][step], rtol=1e-5
            )
            assert history.history["block"][step] == block
        assert [v for _, v in train["epoch_block"]] == [block] * EPOCHS
        assert _steps(train, "epoch_block") == steps
        assert _steps(train, "epoch_learning_rate") == steps
        batch_steps.append(_steps(train, "batch_loss"))
        eval_steps += _steps(validation, "evaluation_loss_vs_iterations")
    assert train_steps == list(range(total_epochs))
    assert val_steps == list(range(total_epochs))

    # Step axis: batch summaries of every block, 1 to 32, each block's
    # after the previous block's.
    flat = [step for steps in batch_steps for step in steps]
    assert flat == list(range(1, total_epochs * batches_per_epoch + 1))
    for earlier, later in zip(batch_steps, batch_steps[1:]):
        assert len(later) == EPOCHS * batches_per_epoch
        assert max(earlier) < min(later)
    # Validation at each epoch's end, at the global step reached.
    assert eval_steps == [
        (epoch + 1) * batches_per_epoch for epoch in range(total_epochs)
    ]


def test_one_run_for_all_blocks(tmp_path):
    model = _tiny_greedy_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras_dib.DIB(alpha=2.0, beta=0.01, **FIXED_WIDTH),
        metrics=["accuracy"],
    )
    x, y = _data(NUM_SAMPLES, (8, 8, 3))
    log_dir = str(tmp_path / "logs")
    callback = TensorBoard(log_dir, run_per_block=False, update_freq=1)
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=[EPOCHS, 0, EPOCHS],
        callbacks=[callback],
        verbose=0,
    )
    assert sorted(os.listdir(log_dir)) == ["train"]
    train = _read(os.path.join(log_dir, "train"))
    # Block 1 trains no epoch: block 2 follows block 0 on both axes.
    assert _steps(train, "epoch_loss") == list(range(2 * EPOCHS))
    assert [v for _, v in train["epoch_block"]] == [0, 0, 2, 2]
    batch_steps = _steps(train, "batch_loss")
    assert batch_steps == list(range(1, 2 * EPOCHS * 2 + 1))
    # The DIB terms are logged like any metric.
    assert _steps(train, "epoch_compression") == list(range(2 * EPOCHS))
    assert callback.log_dir == log_dir


def test_plain_keras_fit_is_keras_tensorboard(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(NUM_CLASSES)]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _data(NUM_SAMPLES, (4,))
    log_dir = str(tmp_path / "logs")
    callback = TensorBoard(log_dir, update_freq="batch")
    model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=2, callbacks=[callback], verbose=0
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        initial_epoch=2,
        epochs=3,
        callbacks=[callback],
        verbose=0,
    )
    train = _read(os.path.join(log_dir, "train"))
    # As Keras: the epochs as `fit` numbers them, steps from 0 per fit.
    assert _steps(train, "epoch_loss") == [0, 1, 2]
    assert _steps(train, "batch_loss") == [1, 2, 3, 4, 1, 2]
    # No block: no block scalar.
    assert "epoch_block" not in train


def test_analysis_callbacks_write_to_the_same_log(tmp_path):
    num_blocks = 2
    model = _tiny_greedy_model(num_blocks=num_blocks)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras_dib.losses.LocalObjective(),
    )
    x, y = _data(NUM_SAMPLES, (8, 8, 3))
    log_dir = str(tmp_path / "logs")
    tensorboard = TensorBoard(log_dir, update_freq="batch")
    information = keras_dib.analysis.InformationPlaneCallback(
        x[:BATCH_SIZE],
        y[:BATCH_SIZE],
        include=("hsic",),
        batch_size=BATCH_SIZE,
        tensorboard=tensorboard,
    )
    gradients = keras_dib.analysis.GradientStatistics(
        x[:BATCH_SIZE],
        y[:BATCH_SIZE],
        every_n_steps=2,
        tensorboard=tensorboard,
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=1,
        # The information callback first: it adds to the epoch logs.
        callbacks=[information, gradients, tensorboard],
        verbose=0,
    )
    assert sorted(os.listdir(log_dir)) == [
        "block_0",
        "block_1",
        "gradients",
        "information_plane",
    ]
    block_names = [block.name for block in model.blocks]
    batch_steps = []
    for block in range(num_blocks):
        train = _read(os.path.join(log_dir, f"block_{block}", "train"))
        # The `log_prefix` entries of the epoch logs, at the global epoch.
        tag = f"epoch_info/{block_names[0]}/nHSIC_XT"
        assert _steps(train, tag) == [block]
        batch_steps.append(_steps(train, "batch_loss"))

    # Information plane: one point per record (before training, then the
    # end of each block's epoch), at the TensorBoard callback's global
    # step: the last batch step of each block.
    records = information.records
    steps = [record["step"] for record in records]
    assert steps == [0] + [max(block_steps) for block_steps in batch_steps]
    assert steps == [0, 2, 4]
    scalars = _read(os.path.join(log_dir, "information_plane"))
    for index, name in enumerate(block_names):
        for key in ("nHSIC_XT", "nHSIC_TY"):
            tag = f"information_plane/block_{index}/{key}"
            assert _steps(scalars, tag) == steps
            np.testing.assert_allclose(
                [value for _, value in scalars[tag]],
                [record["layers"][name][key] for record in records],
                rtol=1e-6,
            )

    # Gradient statistics: at the start and every 2 steps of each block,
    # never going back, tagged by the block trained.
    scalars = _read(os.path.join(log_dir, "gradients"))
    steps = [record["step"] for record in gradients.records]
    assert _steps(scalars, "gradients/probe_loss") == steps
    assert steps == [0, 2, 2, 4]
    values = {
        (tag, step): value
        for tag, points in scalars.items()
        for step, value in points
    }
    tagged_blocks = set()
    for record in gradients.records:
        for layer in record["layers"]:
            tag = (
                f"gradients/block_{layer['block']}/{layer['layer']}"
                "/gradient_norm"
            )
            np.testing.assert_allclose(
                values[(tag, record["step"])], layer["gradient_norm"], rtol=1e-6
            )
            tagged_blocks.add(layer["block"])
    assert tagged_blocks == set(range(num_blocks))


def test_config_and_bad_arguments(tmp_path):
    callback = TensorBoard(
        tmp_path / "logs",
        run_per_block=False,
        histogram_freq=2,
        update_freq="batch",
    )
    config = callback.get_config()
    assert config["log_dir"] == str(tmp_path / "logs")
    assert config["run_per_block"] is False
    assert config["histogram_freq"] == 2
    assert config["update_freq"] == 1
    clone = TensorBoard.from_config(config)
    assert clone.get_config() == config
    assert isinstance(callback, keras.callbacks.TensorBoard)
    assert isinstance(callback, keras_dib.BlockCallback)
    assert keras_dib.callbacks.TensorBoard is TensorBoard

    bad = [
        ({"update_freq": 0}, "update_freq"),
        ({"update_freq": "never"}, "update_freq"),
        ({"update_freq": True}, "update_freq"),
        ({"run_per_block": "yes"}, "run_per_block"),
        ({"log_dir": 3}, "log_dir"),
        ({"histogram_freq": -1}, "histogram_freq"),
        ({"embeddings_freq": 0.5}, "embeddings_freq"),
    ]
    for kwargs, name in bad:
        kwargs.setdefault("log_dir", str(tmp_path / "bad"))
        with pytest.raises(ValueError, match=name):
            TensorBoard(**kwargs)


def test_keras_internals(tmp_path):
    """The private attributes of keras.callbacks.TensorBoard relied upon.

    If this fails after a Keras upgrade, update the "Keras internals"
    section of keras_dib/callbacks.py.
    """
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    callback = keras.callbacks.TensorBoard(
        str(tmp_path / "logs"), write_graph=False
    )
    callback.set_model(model)
    callback._global_train_batch = 7
    callback.on_train_begin()
    assert callback._global_train_batch == 0
    callback.on_train_batch_begin(0)
    assert callback._global_train_batch == 1
    assert hasattr(callback._val_writer, "as_default")
    assert callback._val_writer is callback._val_writer
    assert isinstance(
        _class_attribute(keras.callbacks.TensorBoard, "summary"), property
    )
    callback.on_train_end()

    ours = TensorBoard(str(tmp_path / "ours"), write_graph=False)
    ours.set_model(model)
    ours._step_offset = 5
    ours.on_train_begin()
    assert ours._keras_train_step() == 5
    ours.on_train_batch_begin(0)
    assert ours._keras_train_step() == 6
    ours.on_train_end()


def _class_attribute(cls, name):
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(name)

"""A greedy fit with `checkpoint_dir` that can be made to die on purpose.

Run by `checkpointing_test.py` in a subprocess:

    python resume_worker.py CHECKPOINT_DIR OUTPUT_PREFIX [KILL_POINT]

KILL_POINT sends SIGKILL to this process at one place:

- `batch:B:E:S`: after train batch S of epoch E of block B;
- `block:B`: when block B begins (after the stage change, before training);
- `write:N`: halfway through writing the N-th checkpoint of this process;
- `rename:N`: after the N-th checkpoint file is written, before it replaces
  the previous one.

When the fit completes, every model variable goes to OUTPUT_PREFIX.npz and
the History and the blocks begun in this process to OUTPUT_PREFIX.json.
"""

import io
import json
import os
import signal
import sys

import keras
import numpy as np

import keras_dib
from keras_dib.models import AuxiliaryHead
from keras_dib.models import GreedyLayerwiseModel
from keras_dib.models import checkpointing

EPOCHS = [2, 3, 2]
NUM_CLASSES = 3


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_point(kill_point):
    kind, _, where = kill_point.partition(":")
    count = {"n": 0}
    if kind == "write":
        savez = np.savez

        def broken_savez(file, **arrays):
            count["n"] += 1
            if count["n"] < int(where):
                return savez(file, **arrays)
            buffer = io.BytesIO()
            savez(buffer, **arrays)
            data = buffer.getvalue()
            file.write(data[: len(data) // 2])
            file.flush()
            _die()

        checkpointing.np.savez = broken_savez
    elif kind == "rename":
        replace = os.replace

        def broken_replace(source, destination):
            count["n"] += 1
            if count["n"] >= int(where):
                _die()
            return replace(source, destination)

        checkpointing.os.replace = broken_replace
    return kind, where


class KillAndRecord(keras.callbacks.Callback):
    def __init__(self, kill_point):
        super().__init__()
        self.kind, self.where = _install_kill_point(kill_point or "none:")
        self.blocks_begun = []
        self.epoch = 0

    def on_block_begin(self, block_index, logs=None):
        self.blocks_begun.append(block_index)
        if self.kind == "block" and int(self.where) == block_index:
            _die()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.kind == "batch":
            block, epoch, step = (int(v) for v in self.where.split(":"))
            if (self.model.active_block, self.epoch, batch) == (
                block,
                epoch,
                step,
            ):
                _die()


def _block(filters, pool):
    layers = [
        keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ]
    if pool:
        layers.append(keras.layers.MaxPooling2D(2))
    return keras.Sequential(layers)


def main(checkpoint_dir, output_prefix, kill_point=None):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, NUM_CLASSES, size=(96,)).astype("int32")
    x = rng.normal(size=(96, 8, 8, 3)).astype("float32")
    x[:, :, :, 0] += y[:, None, None]
    model = GreedyLayerwiseModel(
        [_block(4, pool=i == 1) for i in range(len(EPOCHS))],
        head=AuxiliaryHead(NUM_CLASSES, grid_size=1, name="head"),
        auxiliary_heads=[
            AuxiliaryHead(NUM_CLASSES, grid_size=2, dropout=0.3)
            for _ in range(len(EPOCHS) - 1)
        ],
        num_classes=NUM_CLASSES,
        input_shape=(8, 8, 3),
    )
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=20)
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
        loss=keras_dib.DIB(alpha=1.01, beta=0.01),
        metrics=["accuracy"],
    )
    recorder = KillAndRecord(kill_point)
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=EPOCHS,
        verbose=0,
        callbacks=[recorder],
        checkpoint_dir=checkpoint_dir,
    )
    np.savez(
        output_prefix + ".npz",
        *[keras.ops.convert_to_numpy(v) for v in model.variables],
    )
    with open(output_prefix + ".json", "w") as file:
        json.dump(
            {
                "history": history.history,
                "blocks_begun": recorder.blocks_begun,
            },
            file,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])

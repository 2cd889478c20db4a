"""Accuracy of greedy DIB, greedy cross-entropy and end-to-end training.

Trains the SAME network (VGG-11 with batch normalization, one greedy block
per convolution) on the same data with the same optimizer recipe three
ways, in one process and with one seed (`--seeds` for several):

- `greedy_dib`: block by block on `keras_dib.DIB(alpha, beta)`;
- `greedy_ce`: block by block on the auxiliary heads' cross-entropy only;
- `end_to_end`: ordinary backpropagation on the cross-entropy.

Budgets (`--setting`):

- `cpu`: width 16, no augmentation, 2 epochs per block against 5 epochs
  end to end (the CPU recipe of `BASELINES.md`);
- `gpu`: width 64, augmentation on, 5 epochs per block against 30 end to
  end.

Each run prints one JSON line (device, backend, data set, model, settings,
versions, test accuracy of the final model, test accuracy of every block's
auxiliary head, wall time, images/s) and appends it to
`benchmarks/results/accuracy_<setting>.jsonl`. A plot of each greedy
block's auxiliary-head test accuracy as blocks are added, against the
end-to-end accuracy, goes to `benchmarks/results/accuracy_<setting>.png`.

Run from the repository root:

```
python benchmarks/accuracy.py --dataset gtsrb --setting cpu
python benchmarks/accuracy.py --dataset cifar10 --setting gpu --seeds 0,1,2
```
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import json  # noqa: E402
import platform  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import common  # noqa: E402

SETTINGS = {
    "cpu": {
        "width": 16,
        "epochs_per_block": 2,
        "epochs": 5,
        "augment": False,
    },
    "gpu": {
        "width": 64,
        "epochs_per_block": 5,
        "epochs": 30,
        "augment": True,
    },
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "gtsrb", ["gtsrb", "cifar10"], "Data set.")
flags.DEFINE_string(
    "data_dir", None, "Data folder. Default: ../shared/data/<dataset>."
)
flags.DEFINE_enum("setting", "cpu", ["cpu", "gpu"], "Budget (see above).")
flags.DEFINE_list("seeds", ["0"], "Comma-separated seeds.")
flags.DEFINE_list(
    "modes", list(common.MODES), "Training modes to run, in order."
)
flags.DEFINE_integer(
    "train_size", 0, "Training images used (0: the full training set)."
)
flags.DEFINE_integer("test_size", 0, "Test images used (0: all).")
flags.DEFINE_integer("verbose", 2, "Keras verbosity.")
flags.DEFINE_string(
    "results_dir",
    os.path.join(ROOT, "benchmarks", "results"),
    "Where the .jsonl and .png files go.",
)


def _batches(pipeline):
    """NumPy `(x, y)` batches of a `tf.data` or `PyDataset` pipeline."""
    if hasattr(pipeline, "as_numpy_iterator"):
        yield from pipeline.as_numpy_iterator()
    else:
        for index in range(len(pipeline)):
            yield pipeline[index]


def block_test_accuracies(model, test_pipeline):
    """Test accuracy of every block's auxiliary head (the last: the head).

    Runs `blocks[:k + 1]` in inference mode, then `training_heads[k]`, for
    every `k`, reusing the features of block `k` for block `k + 1`.

    Returns:
        A list of `model.num_blocks` floats.
    """
    correct = np.zeros(model.num_blocks)
    count = 0
    for x, y in _batches(test_pipeline):
        features = keras.ops.convert_to_tensor(x)
        for k, (block, head) in enumerate(
            zip(model.blocks, model.training_heads)
        ):
            features = block(features, training=False)
            logits = keras.ops.convert_to_numpy(head(features, training=False))
            correct[k] += np.sum(np.argmax(logits, axis=-1) == np.asarray(y))
        count += len(y)
    return [float(c / count) for c in correct]


def plot(records, path, title):
    """Auxiliary-head test accuracy per block, greedy vs end to end."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    styles = {"greedy_dib": "o-", "greedy_ce": "s--"}
    labels = {
        "greedy_dib": "greedy DIB",
        "greedy_ce": "greedy cross-entropy",
        "end_to_end": "end to end",
    }
    for record in records:
        mode = record["mode"]
        if mode == "end_to_end":
            axes.axhline(
                100 * record["test_accuracy"],
                color="k",
                linestyle=":",
                label=f"{labels[mode]} ({record['settings']['epochs']} epochs)",
            )
        else:
            accuracies = record["block_test_accuracy"]
            axes.plot(
                range(1, len(accuracies) + 1),
                [100 * a for a in accuracies],
                styles.get(mode, "o-"),
                label=f"{labels[mode]} "
                f"({record['settings']['epochs_per_block']} epochs/block)",
            )
    axes.set_xlabel("blocks trained (auxiliary head of the last one)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    data_dir = FLAGS.data_dir or common.default_data_dir(FLAGS.dataset)
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    jsonl = os.path.join(FLAGS.results_dir, f"accuracy_{FLAGS.setting}.jsonl")
    records = []
    for seed in [int(s) for s in FLAGS.seeds]:
        for mode in FLAGS.modes:
            settings = {
                "data_dir": data_dir,
                "depth": 11,
                "granularity": "layer",
                "head_grid_size": 4,
                "batch_size": 128,
                "alpha": 1.01,
                "beta": 0.01,
                "compression": "input",
                "mode": mode,
                "learning_rate": 0.05,
                "optimizer": "sgd",
                "weight_decay": 5e-4,
                "train_size": FLAGS.train_size,
                "test_size": FLAGS.test_size,
                "seed": seed,
                **SETTINGS[FLAGS.setting],
            }
            model, summary, test_pipeline = common.run(
                FLAGS.dataset, settings, output_dir=None, verbose=FLAGS.verbose
            )
            if mode == "end_to_end":
                block_accuracy = None
            else:
                block_accuracy = block_test_accuracies(model, test_pipeline)
            import jax

            record = {
                "benchmark": "accuracy",
                "setting": FLAGS.setting,
                "device": summary["device"],
                "backend": summary["backend"],
                "dataset": summary["dataset"],
                "model": summary["model"],
                "mode": mode,
                "seed": seed,
                "test_accuracy": round(summary["test_accuracy"], 4),
                "block_test_accuracy": block_accuracy
                and [round(a, 4) for a in block_accuracy],
                "best_block": None
                if block_accuracy is None
                else int(np.argmax(block_accuracy)) + 1,
                "block_train_accuracy": [
                    round(b["accuracy"][-1], 4)
                    for b in summary["block_history"]
                ],
                "train_images": summary["train_images"],
                "test_images": summary["test_images"],
                "wall_time_s": summary["wall_time_s"],
                "images_per_s": summary["images_per_s"],
                "settings": {
                    k: v for k, v in settings.items() if k != "data_dir"
                },
                "keras_version": keras.__version__,
                "jax_version": jax.__version__,
                "python": platform.python_version(),
            }
            records.append(record)
            line = json.dumps(record)
            print(line, flush=True)
            with open(jsonl, "a") as f:
                f.write(line + "\n")
    title = (
        f"{records[0]['dataset']}, {records[0]['train_images']} training "
        f"images\n{records[0]['model']}, "
        f"{records[0]['device']}, {records[0]['backend']}"
    )
    plot(
        [r for r in records if r["seed"] == records[0]["seed"]],
        os.path.join(FLAGS.results_dir, f"accuracy_{FLAGS.setting}.png"),
        title,
    )


if __name__ == "__main__":
    app.run(main)

"""Gradient stability: end-to-end versus greedy training of deep plain CNNs.

The DIB paper claims that greedy layer-wise training avoids the vanishing
and exploding gradients of end-to-end backpropagation in deep networks.
This benchmark measures it on networks where end-to-end training is known
to struggle: VGG-16 and VGG-19 without batch normalization, and a plain
stack of 30 convolutions (no batch normalization, no skip connections),
each trained three ways from the SAME initial weights with the SAME
optimizer:

- `end_to_end`: backpropagation through the whole network, cross-entropy;
- `greedy_dib`: one block (one convolution) at a time, each through its
  auxiliary head, on the DIB objective (cross-entropy + beta * I(X; T));
- `greedy_ce`: the same greedy schedule on the cross-entropy only.

A `keras_dib.analysis.GradientStatistics` callback records the gradient
norm of every layer being trained on a fixed probe batch of training
images, every `--every_n_steps` steps and at the start and end of each
fit (each block, for the greedy runs). Per run, one JSON line reports the
spread of the per-layer gradient norms over depth (largest over smallest,
and the first layer's over the last's) at the start, the middle and the
end of each layer's training, whether the loss decreased, the test
accuracy, the time spent and the callback's overhead. The records go to
`benchmarks/results/gradients_records/` and a plot of gradient norm
against depth (start and end of training, one line per run) to
`benchmarks/results/gradients_<data>_<network>_<setting>.png`.

Settings: `--setting=cpu` (width 8, a class-stratified subset of the
training set, few epochs; minutes on 2 CPU cores) and `--setting=gpu`
(width 64, the full training set, 30 end-to-end epochs and 5 per greedy
block, as in BASELINES.md); any flag given explicitly overrides the
setting.

Usage:

```
python benchmarks/gradients.py --dataset=gtsrb --network=vgg16
python benchmarks/gradients.py --dataset=cifar10 --network=vgg16,vgg19,plain30
python benchmarks/gradients.py --setting=gpu --network=vgg19
```
"""

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras_dib  # noqa: E402
import keras_dib.datasets  # noqa: E402
from keras_dib.analysis.gradients import GradientStatistics  # noqa: E402
from keras_dib.analysis.gradients import gradient_norm_profile  # noqa: E402
from keras_dib.analysis.gradients import plot_gradient_norms  # noqa: E402
from keras_dib.testing.test_case import shared_data_dir  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
RUNS = ("end_to_end", "greedy_dib", "greedy_ce")
NETWORKS = ("vgg16", "vgg19", "plain30")
SETTINGS = {
    "cpu": dict(
        width=8,
        train_size=6000,
        test_size=0,
        epochs=3,
        block_epochs=1,
        batch_size=64,
        every_n_steps=25,
        probe_size=64,
    ),
    "gpu": dict(
        width=64,
        train_size=0,
        test_size=0,
        epochs=30,
        block_epochs=5,
        batch_size=128,
        every_n_steps=100,
        probe_size=128,
    ),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "gtsrb", ["gtsrb", "cifar10"], "Data set.")
flags.DEFINE_string(
    "data_dir", None, "Folder of the data set (default ../shared/data/<set>)."
)
flags.DEFINE_list(
    "network", ["vgg16"], f"One or more of {', '.join(NETWORKS)}."
)
flags.DEFINE_list("runs", list(RUNS), f"Some of {', '.join(RUNS)}.")
flags.DEFINE_enum("setting", "cpu", list(SETTINGS), "Default sizes.")
flags.DEFINE_integer("width", None, "Channels of the first layer.")
flags.DEFINE_integer(
    "train_size", None, "Training images (class-stratified subset; 0: all)."
)
flags.DEFINE_integer("test_size", None, "Test images (0: all).")
flags.DEFINE_integer("epochs", None, "End-to-end epochs.")
flags.DEFINE_integer("block_epochs", None, "Greedy epochs per block.")
flags.DEFINE_integer("batch_size", None, "Batch size (fixed).")
flags.DEFINE_integer("every_n_steps", None, "Gradient record interval.")
flags.DEFINE_integer("probe_size", None, "Images in the probe batch.")
flags.DEFINE_float("learning_rate", 0.01, "SGD learning rate (all runs).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (all runs).")
flags.DEFINE_float("alpha", 1.01, "DIB Renyi order.")
flags.DEFINE_float("beta", 0.01, "DIB compression weight.")
flags.DEFINE_integer("plain_depth", 30, "Convolutions of the plain stack.")
flags.DEFINE_integer("seed", 0, "Seed of the subset, weights and shuffling.")
flags.DEFINE_string("device", "CPU, 2 cores", "Device label for the JSON.")
flags.DEFINE_bool(
    "plot_only",
    False,
    "Only redraw the PNGs from the records files of earlier runs.",
)
flags.DEFINE_string(
    "output",
    os.path.join(RESULTS, "gradients.jsonl"),
    "JSON lines file the results are appended to ('' for none).",
)


def _setting(name):
    value = getattr(FLAGS, name)
    return SETTINGS[FLAGS.setting][name] if value is None else value


# === Data ===


def _load(dataset):
    data_dir = FLAGS.data_dir or os.path.join(shared_data_dir() or "", dataset)
    if dataset == "gtsrb":
        (x_train, y_train, _), (x_test, y_test) = keras_dib.datasets.load_gtsrb(
            data_dir
        )
        num_classes = 43
    else:
        (x_train, y_train), (x_test, y_test) = keras_dib.datasets.load_cifar10(
            data_dir
        )
        num_classes = 10
    return (x_train, y_train), (x_test, y_test), num_classes


def _stratified_subset(y, size, rng):
    """Indices of `size` samples, each class in proportion."""
    if not size or size >= len(y):
        return rng.permutation(len(y))
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = max(1, int(round(size * len(members) / len(y))))
        chosen.append(rng.choice(members, count, replace=False))
    chosen = rng.permutation(np.concatenate(chosen))
    return chosen[:size]


def _prepare(dataset, train_size, test_size, batch_size, seed):
    (x_train, y_train), (x_test, y_test), num_classes = _load(dataset)
    rng = np.random.default_rng(seed)
    train = _stratified_subset(y_train, train_size, rng)
    # A whole number of batches: the entropy's scale depends on the batch.
    train = train[: len(train) // batch_size * batch_size]
    test = _stratified_subset(y_test, test_size, rng)
    x_train, y_train = x_train[train], y_train[train].astype("int32")
    x_test, y_test = x_test[np.sort(test)], y_test[np.sort(test)]
    mean = x_train.reshape(-1, 3).mean(0)
    std = x_train.reshape(-1, 3).std(0)

    def standardize(images):
        return ((images.astype("float32") - mean) / std).astype("float32")

    return (
        (standardize(x_train), y_train),
        (standardize(x_test), y_test.astype("int32")),
        num_classes,
    )


# === Networks ===


def build_plain(depth, num_classes, width, input_shape=(32, 32, 3)):
    """A plain stack of `depth` 3x3 convolutions + ReLU, one block each.

    No batch normalization, no skip connections: three stages of equal
    length at `width`, `2 * width` and `4 * width` channels, the first
    convolution of the second and third stages with stride 2, He
    initialization, and a global-average-pooling + Dense head.
    """
    blocks = []
    for index in range(depth):
        stage = min(3 * index // depth, 2)
        first_of_stage = index > 0 and 3 * index // depth != (
            3 * (index - 1) // depth
        )
        blocks.append(
            keras.Sequential(
                [
                    keras.layers.Conv2D(
                        width * 2**stage,
                        3,
                        strides=2 if first_of_stage else 1,
                        padding="same",
                        kernel_initializer="he_normal",
                        name=f"conv{index + 1}",
                    ),
                    keras.layers.ReLU(name=f"relu{index + 1}"),
                ],
                name=f"block{index + 1}",
            )
        )
    auxiliary_heads = [
        keras_dib.models.AuxiliaryHead(
            num_classes, grid_size=2, name=f"auxiliary_head_{index}"
        )
        for index in range(depth - 1)
    ]
    return keras_dib.GreedyLayerwiseModel(
        blocks,
        head=keras_dib.models.AuxiliaryHead(
            num_classes, grid_size=1, name="head"
        ),
        auxiliary_heads=auxiliary_heads,
        num_classes=num_classes,
        input_shape=input_shape,
        name=f"plain{depth}",
    )


def build_network(network, num_classes, width):
    if network == "plain30":
        return build_plain(FLAGS.plain_depth, num_classes, width)
    depth = int(network[3:])
    return keras_dib.build_vgg(
        depth,
        num_classes=num_classes,
        width=width,
        batch_norm=False,
        granularity="layer",
    )


# === Runs ===


def _objective(run):
    if run == "greedy_dib":
        return keras_dib.losses.DIB(alpha=FLAGS.alpha, beta=FLAGS.beta)
    return keras_dib.losses.LocalObjective()


def _summary(stats, history, run, model):
    records = stats.records
    profiles = {
        when: gradient_norm_profile(records, when)
        for when in ("start", "middle", "end")
    }
    summary = {}
    for when, profile in profiles.items():
        summary[f"gradient_max_over_min_{when}"] = profile["max_over_min"]
        summary[f"gradient_first_over_last_{when}"] = profile["first_over_last"]
        summary[f"gradient_norms_{when}"] = [
            float(f"{g:.4g}") for g in profile["gradient_norms"]
        ]
        summary[f"zero_gradient_layers_{when}"] = len(profile["zero_layers"])
    summary["layers_recorded"] = len(profiles["start"]["layers"])
    summary["non_finite_records"] = sum(
        1
        for r in records
        if r["loss"] is None
        or any(layer["gradient_norm"] is None for layer in r["layers"])
    )
    if run == "end_to_end":
        spreads = [
            r["gradient_norm_max_over_min"]
            for r in records
            if r["gradient_norm_max_over_min"] is not None
        ]
        summary["gradient_max_over_min_worst"] = max(spreads, default=None)
        losses = history.history["loss"]
        summary["loss_per_epoch"] = [float(f"{v:.4g}") for v in losses]
        summary["probe_loss_start"] = records[0]["loss"]
        summary["probe_loss_end"] = records[-1]["loss"]
        # The probe batch's loss from the first to the last record, and the
        # training loss from the first to the last epoch when there are
        # several.
        summary["loss_decreased"] = _decreased(
            records[0]["loss"], records[-1]["loss"]
        ) and (len(losses) < 2 or _decreased(losses[0], losses[-1]))
    else:
        per_block = []
        for block in range(model.num_blocks):
            block_records = [r for r in records if r["block"] == block]
            if block_records:
                per_block.append(
                    (block_records[0]["loss"], block_records[-1]["loss"])
                )
        decreased = [_decreased(a, b) for a, b in per_block]
        summary["probe_loss_start_per_block"] = [
            float(f"{a:.4g}") if a is not None else None for a, _ in per_block
        ]
        summary["probe_loss_end_per_block"] = [
            float(f"{b:.4g}") if b is not None else None for _, b in per_block
        ]
        summary["blocks_loss_decreased"] = sum(decreased)
        summary["num_blocks"] = len(per_block)
        summary["loss_decreased"] = bool(decreased) and all(decreased)
        summary["probe_loss_start"] = per_block[0][0] if per_block else None
        summary["probe_loss_end"] = per_block[-1][1] if per_block else None
    return summary


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (of every block)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append((epoch, time.perf_counter() - self._start))


def _steady_overhead(records, timer, every_n_steps, steps_per_epoch):
    """Probe cost once compiled: end-to-end epochs after the first.

    Returns the probe time over the training time of those epochs, the
    mean time of one probe, and the mean time of one training step.
    """
    later = [seconds for epoch, seconds in timer.seconds if epoch >= 1]
    probes = [
        r["seconds"]
        for r in records
        if r["epoch"] >= 1
        and r["stage_step"] > 0
        and r["stage_step"] % every_n_steps == 0
    ]
    if not later or not probes:
        return {}
    training = sum(later) - sum(probes)
    return {
        "probe_overhead_steady": round(sum(probes) / training, 4),
        "probe_seconds_steady": round(float(np.mean(probes)), 4),
        "step_seconds_steady": round(
            training / (len(later) * steps_per_epoch), 4
        ),
    }


def _records_path(network, run):
    name = f"{FLAGS.dataset}_{network}_{FLAGS.setting}_{run}"
    return os.path.join(RESULTS, "gradients_records", f"gradients_{name}.jsonl")


def _plot(network, runs, width):
    png = os.path.join(
        RESULTS, f"gradients_{FLAGS.dataset}_{network}_{FLAGS.setting}.png"
    )
    plot_gradient_norms(
        runs,
        png,
        title=(
            f"{network}, no batch norm, width {width}, "
            f"{FLAGS.dataset}: gradient norm per layer"
        ),
    )
    print(f"plot: {os.path.relpath(png, ROOT)}", flush=True)


def _decreased(start, end):
    return (
        start is not None
        and end is not None
        and bool(np.isfinite(start) and np.isfinite(end))
        and end < start
    )


def run_one(network, run, data, num_classes, initial_weights, width):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(FLAGS.seed)
    model = build_network(network, num_classes, width)
    model.set_weights(initial_weights)
    model.compile(
        optimizer=keras.optimizers.SGD(
            FLAGS.learning_rate, momentum=FLAGS.momentum
        ),
        loss=_objective(run),
        metrics=["accuracy"],
    )
    probe = _setting("probe_size")
    records_path = _records_path(network, run)
    stats = GradientStatistics(
        x_train[:probe],
        y_train[:probe],
        every_n_steps=_setting("every_n_steps"),
        filepath=records_path,
    )
    batch_size = _setting("batch_size")
    if run == "end_to_end":
        epochs, schedule = _setting("epochs"), "end_to_end"
    else:
        epochs, schedule = _setting("block_epochs"), "sequential"
    timer = EpochTimer()
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        schedule=schedule,
        shuffle=True,
        callbacks=[stats, timer],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    evaluation = model.evaluate(
        x_test, y_test, batch_size=256, return_dict=True, verbose=0
    )
    result = {
        "network": network,
        "run": run,
        "num_blocks": model.num_blocks,
        "parameters": int(model.count_params()),
        "test_accuracy": round(float(evaluation["accuracy"]), 4),
        "test_loss": _finite(evaluation["loss"]),
        "fit_seconds": round(fit_seconds, 1),
        "probe_seconds": round(stats.probe_seconds, 1),
        "probe_overhead": round(stats.probe_seconds / fit_seconds, 3),
        "num_probes": stats.num_probes,
        "records": os.path.relpath(records_path, ROOT),
    }
    result["probe_seconds_first"] = round(
        sum(r["seconds"] for r in stats.records if r["stage_step"] == 0), 1
    )
    result.update(
        _steady_overhead(
            stats.records,
            timer,
            _setting("every_n_steps"),
            len(y_train) // batch_size,
        )
    )
    result.update(_summary(stats, history, run, model))
    return result, stats.records


def _finite(value):
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None


def _versions():
    versions = {"keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    try:
        module = __import__(backend if backend != "torch" else "torch")
        versions[backend] = module.__version__
    except ImportError:
        pass
    versions["keras_dib"] = keras_dib.__version__
    return versions


def main(argv):
    del argv
    for network in FLAGS.network:
        if network not in NETWORKS:
            raise ValueError(
                f"`--network` should be in {NETWORKS}. "
                f"Received: network={network!r}"
            )
    for run in FLAGS.runs:
        if run not in RUNS:
            raise ValueError(
                f"`--runs` should be in {RUNS}. Received: run={run!r}"
            )
    width = _setting("width")
    if FLAGS.plot_only:
        for network in FLAGS.network:
            _plot(
                network,
                {
                    run.replace("_", " "): _records_path(network, run)
                    for run in FLAGS.runs
                },
                width,
            )
        return
    settings = {
        "setting": FLAGS.setting,
        "width": width,
        "train_size": _setting("train_size"),
        "test_size": _setting("test_size"),
        "epochs_end_to_end": _setting("epochs"),
        "epochs_per_block": _setting("block_epochs"),
        "batch_size": _setting("batch_size"),
        "every_n_steps": _setting("every_n_steps"),
        "probe_size": _setting("probe_size"),
        "optimizer": f"SGD(lr={FLAGS.learning_rate}, momentum="
        f"{FLAGS.momentum})",
        "dib": {"alpha": FLAGS.alpha, "beta": FLAGS.beta},
        "batch_norm": False,
        "augmentation": False,
        "seed": FLAGS.seed,
    }
    start = time.perf_counter()
    data_train, data_test, num_classes = _prepare(
        FLAGS.dataset,
        settings["train_size"],
        settings["test_size"],
        settings["batch_size"],
        FLAGS.seed,
    )
    settings["train_images"] = len(data_train[1])
    settings["test_images"] = len(data_test[1])
    print(
        f"data: {settings['train_images']} training, "
        f"{settings['test_images']} test images "
        f"({time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    for network in FLAGS.network:
        keras.utils.set_random_seed(FLAGS.seed)
        initial_weights = build_network(
            network, num_classes, width
        ).get_weights()
        runs = {}
        for run in FLAGS.runs:
            result, records = run_one(
                network,
                run,
                (data_train, data_test),
                num_classes,
                initial_weights,
                width,
            )
            runs[run.replace("_", " ")] = records
            line = {
                "benchmark": "gradients",
                "device": FLAGS.device,
                "cpu_count": os.cpu_count(),
                "backend": keras.backend.backend(),
                "dataset": "GTSRB"
                if FLAGS.dataset == "gtsrb"
                else "CIFAR-10 (JPEG copy)",
                **settings,
                **result,
                "versions": _versions(),
                "python": platform.python_version(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            text = json.dumps(line)
            print(text, flush=True)
            if FLAGS.output:
                os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
                with open(FLAGS.output, "a") as file:
                    file.write(text + "\n")
        _plot(network, runs, width)


if __name__ == "__main__":
    app.run(main)

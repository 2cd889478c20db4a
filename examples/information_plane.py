"""Information planes of a VGG trained end to end and greedily.

How does information flow through a network while it trains? This tutorial
trains the same small VGG-11 twice on GTSRB (or CIFAR-10):

1. end to end, by backpropagation with SGD, and
2. greedily, one block at a time, each block on its own deterministic
   information bottleneck objective (`keras_dib.losses.DIB`),

with `keras_dib.analysis.InformationPlaneCallback` on. After every epoch the
callback measures, for the output `T_l` of every block, the matrix-based
Renyi mutual informations `I(X; T_l)` and `I(T_l; Y)` and the normalised
HSIC plane `(nHSIC(X; T_l), nHSIC(T_l; Y))` on a fixed held-out sample. We
then draw both information planes, the `I(X; T)` curves, the
layer-by-layer mutual information matrices, and check the seed paper's
observation that under SGD the layers converge bottom to top.

Run (from the repository root; the defaults take about 3 minutes on a
2-core CPU):

```
python examples/information_plane.py
python examples/information_plane.py --quick   # a one-minute smoke run
python examples/information_plane.py --dataset cifar10 --width 16
```

Outputs (in `--output_dir`, default `runs/information_plane`):
`information_plane_{end_to_end,greedy}.png` (Renyi planes),
`information_plane_hsic_{end_to_end,greedy}.png` (nHSIC planes),
`information_plane_curves.png` (`I(X; T)` per block against the epoch),
`information_plane_mi_matrix.png` (`I(T_i; T_j)` after training) and
`information_plane.json` (every number).

References:
    - Yu, Yu & Principe, "Deep Deterministic Information Bottleneck with
      Matrix-based Entropy Functional", ICASSP 2021.
      https://arxiv.org/abs/2102.00533
    - Sakamoto & Sato, "End-to-End Training Induces Information Bottleneck
      through Layer-Role Differentiation: A Comparative Analysis with
      Layer-wise Training", TMLR 2024. https://arxiv.org/abs/2402.09050
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402  (before keras: quiet TensorFlow start-up)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import keras_dib  # noqa: E402
from keras_dib import analysis  # noqa: E402
from keras_dib import datasets  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "gtsrb", ["gtsrb", "cifar10"], "Data set.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder of the data set. Default: $KERAS_DIB_DATA/<dataset> when set, "
    "else the Keras cache (downloaded once).",
)
flags.DEFINE_integer("width", 8, "VGG width (64 is the standard VGG-11).")
flags.DEFINE_integer("epochs", 12, "Epochs of end-to-end training.")
flags.DEFINE_integer("block_epochs", 2, "Epochs per block, greedy training.")
flags.DEFINE_integer("num_train", 4000, "Training images used (0: all).")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_float("learning_rate", 0.05, "Peak SGD learning rate.")
flags.DEFINE_float("beta", 0.01, "Weight of I(X; T) in the DIB objective.")
flags.DEFINE_integer("analysis_samples", 512, "Held-out analysis samples.")
flags.DEFINE_integer("analysis_batch_size", 128, "Samples per Gram matrix.")
flags.DEFINE_float(
    "tolerance", 0.05, "Convergence tolerance of I(X; T), in bits."
)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("quick", False, "A one-minute smoke run (small data).")
flags.DEFINE_string(
    "output_dir",
    os.path.join("runs", "information_plane"),
    "Where the figures and the JSON file go.",
)


def load_data(name, data_dir):
    """Standardised float32 images and int32 labels, train and test."""
    if name == "gtsrb":
        (x_train, y_train, _), (x_test, y_test) = datasets.load_gtsrb(data_dir)
    else:
        (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(data_dir)
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2))
    return (
        ((x_train - mean) / std, y_train.astype("int32")),
        ((x_test - mean) / std, y_test.astype("int32")),
    )


def sgd(steps):
    """SGD with momentum and a cosine decay over `steps` steps."""
    schedule = keras.optimizers.schedules.CosineDecay(
        FLAGS.learning_rate, decay_steps=max(steps, 1)
    )
    return keras.optimizers.SGD(schedule, momentum=0.9)


def train(model, schedule, epochs, x, y, callback):
    """Fits with the callback on; returns (seconds, callback seconds)."""
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=FLAGS.batch_size,
        epochs=epochs,
        schedule=schedule,
        callbacks=[callback],
        verbose=2,
    )
    return time.perf_counter() - start, callback.total_seconds


def main(argv):
    del argv
    if FLAGS.quick:
        FLAGS.num_train, FLAGS.epochs, FLAGS.block_epochs = 1024, 3, 1
        FLAGS.analysis_samples = 256
    keras.utils.set_random_seed(FLAGS.seed)
    suffix = "_quick" if FLAGS.quick else ""
    os.makedirs(FLAGS.output_dir, exist_ok=True)

    def output(name):
        return os.path.join(FLAGS.output_dir, f"information_plane{name}")

    # --- The data ---------------------------------------------------------
    # A random subset of the training set keeps a CPU run short; the
    # analysis sample is a fixed set of held-out test images, so that the
    # information plane describes what the network does on unseen data.
    data_dir = FLAGS.data_dir
    (x_train, y_train), (x_test, y_test) = load_data(FLAGS.dataset, data_dir)
    num_classes = int(y_train.max()) + 1
    rng = np.random.default_rng(FLAGS.seed)
    if FLAGS.num_train:
        keep = rng.permutation(len(x_train))[: FLAGS.num_train]
        x_train, y_train = x_train[keep], y_train[keep]
    sample = rng.permutation(len(x_test))[: FLAGS.analysis_samples]
    x_sample, y_sample = x_test[sample], y_test[sample]
    steps_per_epoch = len(x_train) // FLAGS.batch_size + (
        len(x_train) % FLAGS.batch_size > 0
    )
    print(
        f"{FLAGS.dataset}: {len(x_train)} training images, {num_classes} "
        f"classes; analysis sample {len(x_sample)} test images in batches "
        f"of {FLAGS.analysis_batch_size}; backend {keras.backend.backend()}"
    )

    def callback(name):
        # The callback draws its fixed sample now and measures every block
        # after every epoch (and once before training). Kernel widths: the
        # 'knn' rule per batch and variable; labels use the label kernel.
        # By default the values also go into each epoch's logs (hence the
        # History) as "info/<block>/I_XT", ...: 40 entries an epoch here,
        # too many for the progress bar, so `log_prefix=None`. And
        # `filepath=...` would write the records to a JSON file as they
        # come; here they go into one summary file at the end.
        return analysis.InformationPlaneCallback(
            x_sample,
            y_sample,
            every_n_epochs=1,
            include=("renyi", "hsic"),
            batch_size=FLAGS.analysis_batch_size,
            log_prefix=None,
        )

    def vgg():
        keras.utils.set_random_seed(FLAGS.seed)
        return keras_dib.build_vgg(
            11, num_classes=num_classes, width=FLAGS.width
        )

    # --- End-to-end training --------------------------------------------
    # One network, one loss (the cross-entropy of the real head), and the
    # gradient flows through every block: the `"end_to_end"` schedule of
    # `GreedyLayerwiseModel.fit` is plain backpropagation.
    end_to_end = vgg()
    end_to_end.compile(
        optimizer=sgd(steps_per_epoch * FLAGS.epochs),
        loss=keras_dib.losses.LocalObjective(),
        metrics=["accuracy"],
    )
    end_to_end_callback = callback("end_to_end")
    end_to_end_time = train(
        end_to_end,
        "end_to_end",
        FLAGS.epochs,
        x_train,
        y_train,
        end_to_end_callback,
    )

    # --- Greedy training with the DIB objective ---------------------------
    # The same architecture, trained block by block: each block learns to
    # classify through its auxiliary head while compressing I(X; T_l), then
    # is frozen. The optimizer (and its cosine schedule) restarts per block.
    greedy = vgg()
    greedy.compile(
        optimizer=sgd(steps_per_epoch * FLAGS.block_epochs),
        loss=keras_dib.losses.DIB(alpha=1.01, beta=FLAGS.beta),
        metrics=["accuracy"],
    )
    greedy_callback = callback("greedy")
    greedy_time = train(
        greedy,
        "sequential",
        FLAGS.block_epochs,
        x_train,
        y_train,
        greedy_callback,
    )

    # --- Test accuracy ----------------------------------------------------
    accuracy = {
        name: float(
            model.evaluate(x_test, y_test, batch_size=256, verbose=0)[1]
        )
        for name, model in (("end_to_end", end_to_end), ("greedy", greedy))
    }
    print(f"Test accuracy: {accuracy}")

    # --- The information planes -------------------------------------------
    # One trajectory per block, points coloured by epoch. End to end, all
    # blocks move at once; greedily, block l only moves during its stage.
    for name, source in (
        ("end_to_end", end_to_end_callback),
        ("greedy", greedy_callback),
    ):
        title = "end to end (SGD)" if name == "end_to_end" else "greedy (DIB)"
        analysis.plot_information_plane(
            source,
            filepath=output(f"_{name}{suffix}.png"),
            title=f"VGG-11 width {FLAGS.width}, {FLAGS.dataset}: {title}",
        )
        analysis.plot_information_plane(
            source,
            filepath=output(f"_hsic_{name}{suffix}.png"),
            x_key="nHSIC_XT",
            y_key="nHSIC_TY",
            title=f"nHSIC plane, {title}",
        )
    analysis.plot_information_curves(
        end_to_end_callback,
        filepath=output(f"_curves{suffix}.png"),
        key="I_XT",
        title="I(X; T) per block, end to end (SGD)",
    )

    # --- Layer-by-layer mutual information ------------------------------
    # I(T_i; T_j) after training: how much each block's representation
    # shares with the others. Computed once, on the same analysis sample.
    matrices = {}
    figure = Figure(figsize=(11.0, 4.6), layout="constrained")
    panels = figure.subplots(1, 2)
    for panel, (name, model) in zip(
        panels, (("end_to_end", end_to_end), ("greedy", greedy))
    ):
        matrix, names = analysis.mutual_information_matrix(
            model, x_sample, batch_size=FLAGS.analysis_batch_size
        )
        matrices[name] = matrix.tolist()
        analysis.plot_mutual_information_matrix(
            matrix,
            [str(index + 1) for index in range(len(names))],
            axes=panel,
            title=f"I(T_i; T_j) after training, {name.replace('_', ' ')}",
        )
    figure.savefig(output(f"_mi_matrix{suffix}.png"), dpi=150)

    # --- Do layers converge bottom to top? ------------------------------
    # For each block, the first epoch from which I(X; T) (and I(T; Y))
    # stays within `tolerance` bits of its final value.
    convergence = {
        name: {
            key: analysis.convergence_epochs(source, key, FLAGS.tolerance)
            for key in ("I_XT", "I_TY")
        }
        for name, source in (
            ("end_to_end", end_to_end_callback),
            ("greedy", greedy_callback),
        )
    }
    for name, epochs in convergence["end_to_end"]["I_XT"].items():
        print(
            f"end to end, {name}: I(X;T) settled at epoch {epochs}, "
            f"I(T;Y) at epoch {convergence['end_to_end']['I_TY'][name]}"
        )
    settled = list(convergence["end_to_end"]["I_XT"].values())
    bottom_to_top = all(a <= b for a, b in zip(settled, settled[1:]))
    verdict = str(bottom_to_top)
    if accuracy["end_to_end"] < 0.5:
        # An untrained network's layers "settle" trivially: no evidence.
        verdict += (
            f" (not evidence: the network reached only "
            f"{accuracy['end_to_end']:.0%} test accuracy"
            + (", as --quick runs do)" if FLAGS.quick else ")")
        )
    print(f"Bottom-to-top convergence of I(X;T) end to end: {verdict}")

    # --- Overhead of the callback ---------------------------------------
    # Fit time includes the callback's; the first record also compiles the
    # estimator (and on JAX each new shape), so report the median record.
    overhead = {}
    for name, (seconds, callback_seconds), source in (
        ("end_to_end", end_to_end_time, end_to_end_callback),
        ("greedy", greedy_time, greedy_callback),
    ):
        epochs = source.epochs_seen
        overhead[name] = {
            "fit_seconds": seconds,
            "callback_seconds": callback_seconds,
            "training_seconds_per_epoch": (seconds - callback_seconds) / epochs,
            "median_record_seconds": float(
                np.median([r["seconds"] for r in source.records[1:]])
            ),
            "records": len(source.records),
        }
    print(f"Overhead: {json.dumps(overhead, indent=1)}")

    summary = {
        "device": "CPU",
        "backend": keras.backend.backend(),
        "data": FLAGS.dataset,
        "settings": {
            "width": FLAGS.width,
            "epochs": FLAGS.epochs,
            "block_epochs": FLAGS.block_epochs,
            "num_train": len(x_train),
            "batch_size": FLAGS.batch_size,
            "learning_rate": FLAGS.learning_rate,
            "beta": FLAGS.beta,
            "analysis_samples": len(x_sample),
            "analysis_batch_size": FLAGS.analysis_batch_size,
            "kernel_width": "knn (k=10) per batch; label kernel for Y",
            "alpha": 1.01,
            "tolerance": FLAGS.tolerance,
            "seed": FLAGS.seed,
        },
        "test_accuracy": accuracy,
        "convergence_epochs": convergence,
        "bottom_to_top_end_to_end": bottom_to_top,
        "overhead": overhead,
        "layer_names": names,
        "mutual_information_matrix": matrices,
        "records": {
            "end_to_end": end_to_end_callback.records,
            "greedy": greedy_callback.records,
        },
    }
    with open(output(f"{suffix}.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    print(f"Wrote {output(suffix + '.json')} and the figures.")


if __name__ == "__main__":
    common.start(main)

"""Accuracy of greedy DIB, greedy cross-entropy and end-to-end training.

Trains the SAME network (VGG-11 with batch normalization, one greedy block
per convolution) on the same data with the same optimizer recipe three
ways, in one process and with one seed (`--seeds` for several):

- `greedy_dib`: block by block on `keras_dib.DIB(alpha, beta)`;
- `greedy_ce`: block by block on the auxiliary heads' cross-entropy only;
- `end_to_end`: ordinary backpropagation on the cross-entropy;
- `simultaneous_dib` (with `--modes`): every block at once on its own DIB
  objective, the gradient stopped between blocks (decoupled greedy
  learning), for the end-to-end number of epochs.

`--architecture resnet --depth 18` swaps the VGG-11 for a CIFAR-style
ResNet-18 (one greedy block per residual block).

Budgets (`--setting`):

- `cpu`: width 16, no augmentation, 2 epochs per block against 5 epochs
  end to end (the CPU recipe of `BASELINES.md`);
- `gpu`: width 64, augmentation on, 5 epochs per block against 30 end to
  end.

Each run prints one JSON line (device, backend, data set, model, settings,
versions, test accuracy of the final model, test accuracy of every block's
auxiliary head, wall time, images/s, and, with `--track_accuracy` (on by
default), the test accuracy after every epoch against the training seconds
so far, evaluations excluded: the wall time to a given accuracy; greedy
epochs are measured through the head of the block being trained; these
per-epoch numbers are reported, never used to choose anything) and appends
it to
`benchmarks/results/accuracy_<setting>.jsonl`. A plot of each greedy
block's auxiliary-head test accuracy as blocks are added, against the
end-to-end accuracy, goes to `benchmarks/results/accuracy_<setting>.png`.

Run from the repository root:

```
python benchmarks/accuracy.py --dataset gtsrb --setting cpu
python benchmarks/accuracy.py --dataset cifar10 --setting gpu --seeds 0,1,2
# Choosing a recipe on a validation split (5000 training images, whole
# tracks), never on the test set; records the validation accuracies:
python benchmarks/accuracy.py --modes greedy_dib --validation_size 5000 \
    --head_conv_filters 32 --variant_name val_head_conv32
# The chosen recipe on the full training set, then the plot of its records:
python benchmarks/accuracy.py --head_conv_filters 32 --variant_name conv32
python benchmarks/accuracy.py --plot_variants conv32 \
    --plot_name accuracy_cpu_full.png
# ResNet-18, and the simultaneous schedule:
python benchmarks/accuracy.py --architecture resnet --depth 18 \
    --modes greedy_dib,end_to_end --head_conv_filters 32
python benchmarks/accuracy.py --modes simultaneous_dib --head_conv_filters 32
# Ablation of the last block's head (validation split): the network's own
# global-pooling classifier against a head built like the auxiliary ones:
python benchmarks/accuracy.py --architecture resnet --modes greedy_dib \
    --head_conv_filters 32 --validation_size 5000 --final_head auxiliary \
    --variant_name val_conv32_final_auxiliary
# The memory-balanced split (heads convolving at 8x8; VGG: each block cut
# before its max pooling), on the validation split:
python benchmarks/accuracy.py --modes greedy_dib --validation_size 4000 \
    --epochs_per_block 1 --head_conv_filters 32 --head_downsample_size 8 \
    --pool_in_next_block --variant_name val_e1_dib_balanced
```

Greedy runs without augmentation use `fit(cache_prefix=True)` by default.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import platform  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import benchmark_common as bench  # noqa: E402

from keras_dib import recipes  # noqa: E402

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
    "data_dir", None, "Data folder. Default: the development copy."
)
flags.DEFINE_enum("setting", "cpu", ["cpu", "gpu"], "Budget (see above).")
flags.DEFINE_list("seeds", ["0"], "Comma-separated seeds.")
flags.DEFINE_list(
    "modes",
    ["greedy_dib", "greedy_ce", "end_to_end"],
    f"Training modes to run, in order, among {recipes.MODES}.",
)
flags.DEFINE_enum(
    "architecture", "vgg", list(recipes.ARCHITECTURES), "Network family."
)
flags.DEFINE_integer(
    "depth", None, "VGG: 11 (default), 13, 16, 19; ResNet: 18 (default), 34."
)
flags.DEFINE_integer("width", None, "Overrides the setting's width.")
flags.DEFINE_float("alpha", 1.01, "Order of the Renyi entropy (DIB modes).")
flags.DEFINE_float("beta", 0.01, "Weight of the DIB compression term.")
flags.DEFINE_integer(
    "train_size", 0, "Training images used (0: the full training set)."
)
flags.DEFINE_integer("test_size", 0, "Test images used (0: all).")
flags.DEFINE_integer(
    "validation_size",
    0,
    "Hold out about this many training images (whole GTSRB tracks, drawn "
    "with the seed) and report validation accuracies instead of test "
    "accuracies: for choosing a recipe without looking at the test set "
    "(0: train on everything, report test accuracy).",
)
flags.DEFINE_string(
    "select_depth",
    None,
    "Greedy modes, with --validation_size: `fit(select_depth=...)` (e.g. "
    "val_accuracy) chooses the depth on the validation split, and the "
    "record reports the TEST accuracy of the selected network (the test "
    "set used once, for reporting).",
)
flags.DEFINE_integer(
    "depth_patience",
    None,
    "With --select_depth: `fit(depth_patience=...)`: stop training deeper "
    "blocks once this many in a row have not improved on the best one's "
    "validation metric.",
)
flags.DEFINE_bool(
    "refit_selected_depth",
    False,
    "With --select_depth: then train a fresh network on the whole "
    "training set (the validation split included) up to the chosen depth, "
    "and report its test accuracy (wall time: both fits).",
)
flags.DEFINE_string(
    "variant_name",
    "baseline",
    "Label of the recipe variant, recorded in every JSON line.",
)
flags.DEFINE_string(
    "head_conv_filters",
    "0",
    "Auxiliary heads' 3x3 convs (+ BN + ReLU) before the pooling: '32', "
    "'32,32', 'auglocal' or '0' (none).",
)
flags.DEFINE_enum(
    "objective",
    "dib",
    list(recipes.OBJECTIVES),
    "Local objective of the *_dib modes (see keras_dib.recipes).",
)
flags.DEFINE_float(
    "gamma", None, "Weight of I(T;Y) (default: the objective's)."
)
flags.DEFINE_integer(
    "head_hidden_units",
    0,
    "Auxiliary heads: units of a hidden Dense layer (0: none).",
)
flags.DEFINE_integer(
    "head_downsample_size",
    0,
    "Auxiliary heads: average-pool larger feature maps down to about this "
    "side before their convolutions (0: none).",
)
flags.DEFINE_enum(
    "granularity",
    "layer",
    ["layer", "stage"],
    "Block split: 'layer' = one block per conv layer (VGG) / residual "
    "block (ResNet); 'stage' = one block per VGG stage / ResNet stage.",
)
flags.DEFINE_bool(
    "pool_in_next_block",
    False,
    "VGG only: each stage's max pooling starts the next block instead of "
    "ending the stage's last one (the memory-balanced split).",
)
flags.DEFINE_enum(
    "final_head",
    "classifier",
    list(recipes.FINAL_HEADS),
    "The last block's head: the network's classifier (global pooling + "
    "Dense) or one built like the auxiliary heads (also used at inference).",
)
flags.DEFINE_integer(
    "head_grid_size", 4, "Grid side of the auxiliary heads' pooling."
)
flags.DEFINE_bool(
    "cache_prefix",
    None,
    "Greedy modes: `fit(cache_prefix=True)` (default: on without "
    "augmentation).",
)
flags.DEFINE_integer(
    "epochs_per_block", None, "Overrides the setting's epochs per block."
)
flags.DEFINE_integer(
    "epochs", None, "Overrides the setting's end-to-end epochs."
)
flags.DEFINE_list(
    "plot_variants",
    [],
    "Train nothing: plot the full-training-set test records of these "
    "variants (all seeds) from the .jsonl into --plot_name.",
)
flags.DEFINE_string(
    "plot_name",
    None,
    "File name of the plot in --results_dir (default accuracy_<setting>.png).",
)
flags.DEFINE_bool(
    "track_accuracy",
    True,
    "Evaluate after every epoch (the validation split if any, else the "
    "test set, through the head of the block being trained; reported, "
    "never used for choices) and record accuracy against training time.",
)
flags.DEFINE_integer("verbose", 2, "Keras verbosity.")
flags.DEFINE_string(
    "results_dir",
    os.path.join(ROOT, "benchmarks", "results"),
    "Where the .jsonl and .png files go.",
)


# Accuracies whose training time to reach is reported.
THRESHOLDS = {"gtsrb": (0.8, 0.9, 0.95), "cifar10": (0.5, 0.6, 0.7, 0.8)}


def accuracy_curve(summary):
    """`[[training seconds, accuracy, block], ...]` at every epoch's end.

    The accuracy is the per-epoch evaluation's (`val_accuracy` of each
    block's history: the head of the block being trained); None when
    nothing was evaluated per epoch.
    """
    blocks = summary["block_history"]
    if not all("val_accuracy" in block for block in blocks):
        return None
    accuracies = [
        (a, k) for k, block in enumerate(blocks) for a in block["val_accuracy"]
    ]
    return [
        [round(t, 2), round(a, 4), k + 1]
        for t, (a, k) in zip(summary["epoch_seconds"], accuracies)
    ]


def seconds_to_accuracy(curve, thresholds):
    """The training seconds at which `curve` first reaches each threshold."""
    return {
        str(threshold): next(
            (t for t, accuracy, _ in curve if accuracy >= threshold), None
        )
        for threshold in thresholds
    }


def _batches(pipeline):
    """NumPy `(x, y)` batches of a `tf.data` or `PyDataset` pipeline."""
    if hasattr(pipeline, "as_numpy_iterator"):
        yield from pipeline.as_numpy_iterator()
    else:
        for index in range(len(pipeline)):
            yield pipeline[index]


def block_test_accuracies(model, test_pipeline, num_blocks=None):
    """Test accuracy of every block's auxiliary head (the last: the head).

    Runs `blocks[:k + 1]` in inference mode, then `training_heads[k]`, for
    every `k` below `num_blocks` (default: all), reusing the features of
    block `k` for block `k + 1`.

    Returns:
        A list of `num_blocks` floats.
    """
    num_blocks = num_blocks or model.num_blocks
    correct = np.zeros(num_blocks)
    count = 0
    pairs = list(zip(model.blocks, model.training_heads))[:num_blocks]
    for x, y in _batches(test_pipeline):
        features = keras.ops.convert_to_tensor(x)
        for k, (block, head) in enumerate(pairs):
            features = block(features, training=False)
            logits = keras.ops.convert_to_numpy(head(features, training=False))
            correct[k] += np.sum(np.argmax(logits, axis=-1) == np.asarray(y))
        count += len(y)
    return [float(c / count) for c in correct]


def _label(record):
    """Legend label of a record: mode, variant and budget."""
    mode = record["mode"]
    names = {
        "greedy_dib": "greedy DIB",
        "greedy_ce": "greedy cross-entropy",
        "end_to_end": "end to end",
        "simultaneous_dib": "simultaneous DIB",
    }
    variant = record.get("variant", "baseline")
    variant = "" if variant == "baseline" else f", {variant}"
    if mode not in recipes.GREEDY_MODES:
        budget = f"{record['settings']['epochs']} epochs"
    else:
        budget = f"{record['settings']['epochs_per_block']} epochs/block"
    return f"{names[mode]} ({budget}{variant})"


def plot(records, path, title):
    """Auxiliary-head test accuracy per block, greedy vs end to end.

    Records with the same label (mode, variant, budget) are averaged over
    their seeds: the line is the mean, the bars or band the min-max range.
    """
    from matplotlib.figure import Figure

    groups = {}
    for record in records:
        groups.setdefault(_label(record), []).append(record)
    curves = [r for r in records if r.get("epoch_test_curve")]
    figure = Figure(figsize=(12.5 if curves else 7.0, 4.6))
    axes = figure.add_subplot(1, 2 if curves else 1, 1)
    styles = {"greedy_dib": "o-", "greedy_ce": "s--", "simultaneous_dib": "^-."}
    e2e_styles = iter([":", "-."])
    num_blocks = 1
    for label, group in groups.items():
        mode = group[0]["mode"]
        seeds = f", {len(group)} seeds" if len(group) > 1 else ""
        if mode == "end_to_end":
            accuracies = 100 * np.array([r["test_accuracy"] for r in group])
            line = axes.axhline(
                accuracies.mean(),
                color="k",
                linestyle=next(e2e_styles, "--"),
                label=f"{label}{seeds}",
            )
            if len(group) > 1:
                axes.axhspan(
                    accuracies.min(),
                    accuracies.max(),
                    color=line.get_color(),
                    alpha=0.1,
                )
        else:
            # Seeds may train different numbers of blocks (a depth
            # refit): missing blocks are NaN.
            width = max(len(r["block_test_accuracy"]) for r in group)
            accuracies = np.full((len(group), width), np.nan)
            for row, record in zip(accuracies, group):
                row[: len(record["block_test_accuracy"])] = 100 * np.array(
                    record["block_test_accuracy"]
                )
            blocks = np.arange(1, width + 1)
            num_blocks = max(num_blocks, len(blocks))
            mean = np.nanmean(accuracies, axis=0)
            bars = axes.errorbar(
                blocks,
                mean,
                yerr=[
                    mean - np.nanmin(accuracies, 0),
                    np.nanmax(accuracies, 0) - mean,
                ],
                fmt=styles.get(mode, "o-"),
                capsize=3,
                label=f"{label}{seeds}",
            )
            # The depth `fit(select_depth=...)` chose on validation, per
            # seed: the test accuracy the run reports.
            for record in group:
                chosen = record.get("inference_blocks")
                if chosen:
                    axes.plot(
                        chosen,
                        100 * record["test_accuracy"],
                        "*",
                        markersize=14,
                        color=bars[0].get_color(),
                        markeredgecolor="black",
                    )
    axes.set_xticks(range(1, num_blocks + 1))
    axes.set_xlabel("blocks trained (auxiliary head of the last one)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if curves:
        _plot_curves(figure.add_subplot(1, 2, 2), curves)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _plot_curves(axes, records):
    """Test accuracy after every epoch against training seconds."""
    for record in records:
        curve = np.array(record["epoch_test_curve"], dtype=float)
        seeds = f", seed {record['seed']}" if record["seed"] else ""
        axes.plot(
            curve[:, 0],
            100 * curve[:, 1],
            ".-" if record["mode"] != "end_to_end" else "k:",
            label=f"{_label(record)}{seeds}",
        )
    axes.set_xlabel("training seconds (per-epoch evaluations excluded)")
    axes.set_ylabel("test accuracy after each epoch (%)")
    axes.set_title(
        "accuracy against wall time (greedy: the head of the block "
        "being trained)",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def _title(records):
    # Every model plotted (e.g. layer and stage granularity), in order.
    models = "\n".join(dict.fromkeys(r["model"] for r in records))
    return (
        f"{records[0]['dataset']}, {records[0]['train_images']} training "
        f"images\n{models}, "
        f"{records[0]['device']}, {records[0]['backend']}"
    )


def plot_from_jsonl(jsonl, variants, path, dataset=None, model_prefix=None):
    """Plots the test-set records of `variants` found in `jsonl`.

    `dataset` (a title such as "GTSRB 32x32") and `model_prefix` (such as
    "VGG-11-BN") keep only the records of that data set and network.
    """
    with open(jsonl) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [
        r
        for r in records
        if r.get("split", "test") == "test"
        and r.get("variant", "baseline") in variants
        and not r["settings"].get("train_size")
        and (dataset is None or r["dataset"] == dataset)
        and (model_prefix is None or r["model"].startswith(model_prefix))
    ]
    if not records:
        raise ValueError(
            f"No full-data test records of variants {variants} (data set "
            f"{dataset}, model {model_prefix}) in {jsonl}"
        )
    plot(records, path, _title(records))


def main(argv):
    del argv
    data_dir = FLAGS.data_dir or bench.default_data_dir(FLAGS.dataset)
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    jsonl = os.path.join(FLAGS.results_dir, f"accuracy_{FLAGS.setting}.jsonl")
    plot_name = FLAGS.plot_name or f"accuracy_{FLAGS.setting}.png"
    unknown = sorted(set(FLAGS.modes) - set(recipes.MODES))
    if unknown:
        raise app.UsageError(
            f"--modes should be among {recipes.MODES}. Received: {unknown}"
        )
    if FLAGS.pool_in_next_block and FLAGS.architecture != "vgg":
        raise app.UsageError(
            "--pool_in_next_block is a VGG option. Received: "
            f"--architecture={FLAGS.architecture}"
        )
    if FLAGS.select_depth and not FLAGS.validation_size:
        raise app.UsageError(
            "--select_depth chooses on a validation split: give "
            f"--validation_size too. Received: --select_depth="
            f"{FLAGS.select_depth} without it."
        )
    depth = FLAGS.depth or recipes.DEFAULT_DEPTHS[FLAGS.architecture]
    if FLAGS.plot_variants:
        plot_from_jsonl(
            jsonl,
            FLAGS.plot_variants,
            os.path.join(FLAGS.results_dir, plot_name),
            dataset=recipes.DATASETS[FLAGS.dataset]["title"],
            model_prefix=recipes.model_family(FLAGS.architecture, depth),
        )
        return
    records = []
    for seed in [int(s) for s in FLAGS.seeds]:
        for mode in FLAGS.modes:
            settings = {
                "data_dir": data_dir,
                "architecture": FLAGS.architecture,
                "depth": depth,
                "granularity": FLAGS.granularity,
                "head_grid_size": FLAGS.head_grid_size,
                "head_conv_filters": FLAGS.head_conv_filters,
                "head_hidden_units": FLAGS.head_hidden_units,
                "head_downsample_size": FLAGS.head_downsample_size,
                "pool_in_next_block": FLAGS.pool_in_next_block,
                "final_head": FLAGS.final_head,
                "cache_prefix": FLAGS.cache_prefix,
                "validation_size": FLAGS.validation_size,
                "select_depth": FLAGS.select_depth,
                "depth_patience": FLAGS.depth_patience,
                "refit_selected_depth": FLAGS.refit_selected_depth,
                "batch_size": 128,
                "alpha": FLAGS.alpha,
                "beta": FLAGS.beta,
                "compression": "input",
                "objective": FLAGS.objective,
                "gamma": FLAGS.gamma,
                "mode": mode,
                "learning_rate": 0.05,
                "optimizer": "sgd",
                "weight_decay": 5e-4,
                "train_size": FLAGS.train_size,
                "test_size": FLAGS.test_size,
                "seed": seed,
                **SETTINGS[FLAGS.setting],
            }
            for name in ("width", "epochs_per_block", "epochs"):
                if FLAGS[name].value is not None:
                    settings[name] = FLAGS[name].value
            settings["cache_prefix"] = recipes.resolve_cache_prefix(settings)
            model, summary, test_pipeline, validation_pipeline = recipes.run(
                FLAGS.dataset,
                settings,
                output_dir=None,
                verbose=FLAGS.verbose,
                monitor_test=FLAGS.track_accuracy,
            )
            # With a validation split, everything is measured on it and the
            # test set is not reported (recipes are chosen on validation).
            # With --select_depth the validation split only chooses the
            # depth, and the test set is reported.
            validating = (
                validation_pipeline is not None and not FLAGS.select_depth
            )
            split = "validation" if validating else "test"
            eval_pipeline = validation_pipeline if validating else test_pipeline
            if mode == "end_to_end":
                block_accuracy = None
            else:
                # A refit network, or one stopped by --depth_patience,
                # trained only its first blocks.
                block_accuracy = block_test_accuracies(
                    model,
                    eval_pipeline,
                    summary["inference_blocks"]
                    if FLAGS.refit_selected_depth
                    else summary["trained_blocks"],
                )
            import jax

            curve = accuracy_curve(summary)
            record = {
                "benchmark": "accuracy",
                "setting": FLAGS.setting,
                "device": summary["device"],
                "backend": summary["backend"],
                "dataset": summary["dataset"],
                "model": summary["model"],
                "mode": mode,
                "variant": FLAGS.variant_name,
                "seed": seed,
                "split": split,
                f"{split}_accuracy": round(summary[f"{split}_accuracy"], 4),
                f"block_{split}_accuracy": block_accuracy
                and [round(a, 4) for a in block_accuracy],
                "best_block": None
                if block_accuracy is None
                else int(np.argmax(block_accuracy)) + 1,
                "inference_blocks": summary["inference_blocks"],
                "trained_blocks": summary["trained_blocks"],
                "validation_accuracy_at_selection": summary[
                    "validation_accuracy"
                ],
                "block_train_accuracy": [
                    round(b["accuracy"][-1], 4)
                    for b in summary["block_history"]
                    if b.get("accuracy")
                ],
                # With --refit_selected_depth: the depth-selection run.
                "selection": summary["selection"],
                "train_images": summary["train_images"],
                "test_images": 0 if validating else summary["test_images"],
                "validation_images": summary["validation_images"],
                "wall_time_s": summary["wall_time_s"],
                # Training seconds (per-epoch evaluations excluded) and the
                # evaluated split's accuracy at the end of every epoch.
                # The curve is of the split evaluated while training.
                f"epoch_{summary['monitored'] or split}_curve": curve,
                f"seconds_to_{summary['monitored'] or split}_accuracy": curve
                and seconds_to_accuracy(curve, THRESHOLDS[FLAGS.dataset]),
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
    if FLAGS.validation_size and not FLAGS.select_depth:
        return
    plot(
        [r for r in records if r["seed"] == records[0]["seed"]],
        os.path.join(FLAGS.results_dir, plot_name),
        _title(records),
    )


if __name__ == "__main__":
    app.run(main)

"""The command line shared by the image-classification examples.

`examples/gtsrb.py`, `examples/cifar10.py` and `examples/cifar100.py` are
thin wrappers around `main` below: one flag per setting of
`keras_dib.recipes.run` (with its default from
`keras_dib.recipes.DEFAULT_SETTINGS`), `--quick`, and the report. The
training itself (data, model, optimizer, objective) is the library's
`keras_dib.recipes`, which `benchmarks/accuracy.py` uses too, so that the
examples and the recorded results train exactly the same way.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# TensorFlow (imported by the data pipelines) prints its start-up (oneDNN,
# CUDA probes) through a native logger that ignores TF_CPP_MIN_LOG_LEVEL
# before it is initialised, then probes CUDA ("failed call to cuInit", an
# ERROR line) on CPU-only machines. Unless the user chose a level, a run
# stays quiet: native logs below FATAL are off and that import's native
# stderr is discarded (Python errors still propagate as exceptions).
_QUIET_TENSORFLOW = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly():
    """Imports TensorFlow with its native start-up lines discarded."""
    if not _QUIET_TENSORFLOW:
        return
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


# Keras imports TensorFlow now on its backend; on the others the data
# pipelines do later, after `--help` (see `start`).
if os.environ["KERAS_BACKEND"] == "tensorflow":
    _import_tensorflow_quietly()

from absl import flags  # noqa: E402

from keras_dib import recipes  # noqa: E402
from keras_dib.recipes import ARCHITECTURES  # noqa: E402
from keras_dib.recipes import DATASETS  # noqa: E402
from keras_dib.recipes import DEFAULT_DEPTHS  # noqa: E402
from keras_dib.recipes import FINAL_HEADS  # noqa: E402
from keras_dib.recipes import GREEDY_MODES  # noqa: E402
from keras_dib.recipes import MODES  # noqa: E402
from keras_dib.recipes import OBJECTIVES  # noqa: E402
from keras_dib.recipes import SMALL_TRAINING_SET  # noqa: E402

_DEFAULTS = recipes.DEFAULT_SETTINGS

# The `--quick` smoke-run settings.
QUICK = {
    "width": 8,
    "granularity": "stage",
    "train_size": 2000,
    "test_size": 1000,
    # One epoch per block barely moves the batch-norm statistics (5% test
    # accuracy measured on CPU, JAX); three gave 8% in 20 s of training.
    "epochs_per_block": 3,
    "epochs": 5,
    "batch_size": 128,
}


def define_flags(dataset):
    """Defines the command-line flags shared by the examples."""
    flags.DEFINE_string(
        "data_dir",
        _DEFAULTS["data_dir"],
        "Folder of the data set's archives (default: $KERAS_DIB_DATA/"
        f"{dataset} when that variable is set, else the Keras cache, "
        "downloading if needed).",
    )
    flags.DEFINE_enum(
        "architecture",
        _DEFAULTS["architecture"],
        list(ARCHITECTURES),
        "VGG with batch normalization or CIFAR-style ResNet.",
    )
    flags.DEFINE_integer(
        "depth",
        _DEFAULTS["depth"],
        "VGG: 11 (default), 13, 16 or 19; ResNet: 18 (default) or 34.",
    )
    flags.DEFINE_integer(
        "width",
        _DEFAULTS["width"],
        "Channels of the first layer (16: a CPU-sized network; 64: the "
        "standard one).",
    )
    flags.DEFINE_enum(
        "granularity",
        _DEFAULTS["granularity"],
        ["layer", "stage"],
        "One greedy block per convolution (VGG) or residual block (ResNet), "
        "or one per stage.",
    )
    flags.DEFINE_integer(
        "head_grid_size",
        _DEFAULTS["head_grid_size"],
        "Grid side of the auxiliary heads' pooling.",
    )
    flags.DEFINE_string(
        "head_conv_filters",
        _DEFAULTS["head_conv_filters"],
        "Auxiliary heads' 3x3 convolutions (each + batch norm + ReLU) "
        "before the pooling: filters of one ('32'), of several ('32,32'), "
        "'auglocal' (thinned copies of the following blocks) or '0' (none). "
        "The examples default to '32', the fastest on a CPU; build_vgg's "
        "default, chosen on a validation split, is 'auglocal'.",
    )
    flags.DEFINE_integer(
        "head_hidden_units",
        _DEFAULTS["head_hidden_units"],
        "Units of a hidden Dense layer in each auxiliary head (0: none).",
    )
    flags.DEFINE_integer(
        "head_downsample_size",
        _DEFAULTS["head_downsample_size"],
        "Auxiliary heads average-pool feature maps larger than about this "
        "side down to it before their convolutions (0: none). 8, as in "
        "build_vgg, makes block 1's head 4 times cheaper. With "
        "--pool_in_next_block: the memory-balanced split.",
    )
    flags.DEFINE_bool(
        "pool_in_next_block",
        _DEFAULTS["pool_in_next_block"],
        "VGG: each stage's max pooling starts the next block instead of "
        "ending the stage's last one (the memory-balanced split, with "
        "--head_downsample_size 8: every block <= 50% of end to end's step "
        "memory).",
    )
    flags.DEFINE_enum(
        "final_head",
        _DEFAULTS["final_head"],
        list(FINAL_HEADS),
        "The last block's head: the network's classifier (global pooling + "
        "Dense) or a head built like the auxiliary ones (also the "
        "classifier at inference).",
    )
    flags.DEFINE_bool(
        "cache_prefix",
        _DEFAULTS["cache_prefix"],
        "Greedy modes: compute the frozen blocks' output once per block "
        "instead of once per epoch (`fit(cache_prefix=True)`). Default: on "
        "for the greedy modes without augmentation, off otherwise.",
    )
    flags.DEFINE_integer(
        "validation_size",
        _DEFAULTS["validation_size"],
        "Hold out about this many training images (drawn with the seed; "
        "whole tracks for GTSRB) as a validation set for model selection "
        "(0: none).",
    )
    flags.DEFINE_string(
        "select_depth",
        _DEFAULTS["select_depth"],
        "Greedy modes, with --validation_size: keep the network truncated "
        "at the block whose head scores best on this validation metric "
        "(`fit(select_depth=...)`, e.g. val_accuracy).",
    )
    flags.DEFINE_integer(
        "depth_patience",
        _DEFAULTS["depth_patience"],
        "With --select_depth: stop training deeper blocks once this many "
        "blocks in a row have not improved on the best one's validation "
        "metric (`fit(depth_patience=...)`; saves their time).",
    )
    flags.DEFINE_bool(
        "refit_selected_depth",
        _DEFAULTS["refit_selected_depth"],
        "With --select_depth: then train a fresh network on every training "
        "image (the validation split included), up to the chosen depth.",
    )
    flags.DEFINE_integer(
        "epochs_per_block",
        _DEFAULTS["epochs_per_block"],
        "Epochs per greedy block.",
    )
    flags.DEFINE_integer(
        "epochs", _DEFAULTS["epochs"], "Epochs of end-to-end training."
    )
    flags.DEFINE_integer(
        "batch_size",
        _DEFAULTS["batch_size"],
        "Training batch size. Default: 128, or 32 below "
        f"{SMALL_TRAINING_SET:,} training images (each greedy block needs a "
        "few hundred optimizer steps).",
    )
    flags.DEFINE_float(
        "alpha", _DEFAULTS["alpha"], "Order of the Renyi entropy (DIB)."
    )
    flags.DEFINE_float(
        "beta", _DEFAULTS["beta"], "Weight of the DIB compression term."
    )
    flags.DEFINE_enum(
        "objective",
        _DEFAULTS["objective"],
        list(OBJECTIVES),
        "Local objective of the *_dib modes: DIB (CE + beta I(X;T)), "
        "relevance_dib (CE + beta I(X;T) - gamma I(T;Y)), "
        "information_bottleneck (-gamma I(T;Y) + beta I(X;T), no CE into "
        "the block), similarity (PredSim, beta weights the similarity "
        "term) or information_preservation (CE - beta I(X;T)).",
    )
    flags.DEFINE_float(
        "gamma",
        _DEFAULTS["gamma"],
        "Weight of the relevance term I(T;Y) (default: the objective's).",
    )
    flags.DEFINE_enum(
        "compression",
        _DEFAULTS["compression"],
        ["input", "block_input", "entropy"],
        "Compression target of the DIB term.",
    )
    flags.DEFINE_enum("mode", _DEFAULTS["mode"], list(MODES), "Training mode.")
    flags.DEFINE_bool(
        "augment",
        _DEFAULTS["augment"],
        "Pad-4 random crops (and flips for CIFAR).",
    )
    flags.DEFINE_float(
        "learning_rate", _DEFAULTS["learning_rate"], "Peak SGD learning rate."
    )
    flags.DEFINE_enum(
        "optimizer", _DEFAULTS["optimizer"], ["sgd", "adam"], "Optimizer."
    )
    flags.DEFINE_float(
        "weight_decay", _DEFAULTS["weight_decay"], "Decoupled weight decay."
    )
    flags.DEFINE_integer(
        "train_size",
        _DEFAULTS["train_size"],
        "Training images used (0: all of them).",
    )
    flags.DEFINE_integer(
        "test_size",
        _DEFAULTS["test_size"],
        "Test images used (0: all of them).",
    )
    flags.DEFINE_string(
        "output_dir", None, f"Output folder. Default: runs/{dataset}."
    )
    flags.DEFINE_bool(
        "quick",
        False,
        "Smoke run: width 8, one block per stage, 2000 training and 1000 "
        "test images, 3 epochs per block (5 end to end); flags given "
        "explicitly take precedence. It checks that everything runs, in "
        "about a minute on 2 CPU cores; expect low accuracy (GTSRB: about "
        "28% test accuracy with JAX), not a result.",
    )
    flags.DEFINE_integer("seed", _DEFAULTS["seed"], "Random seed.")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity (0, 1 or 2).")


def settings_from_flags(flag_values):
    """The run settings as a dict, with `--quick` applied."""
    # One flag per setting of `keras_dib.recipes.run`.
    settings = {name: flag_values[name].value for name in _DEFAULTS}
    if flag_values.quick:
        # `--quick` sets what was not given explicitly on the command line.
        settings.update(
            {k: v for k, v in QUICK.items() if not flag_values[k].present}
        )
    settings["quick"] = flag_values.quick
    recipes.check_settings(settings)
    return settings


def _print_memory_estimate(dataset, settings):
    """Prints the activation memory of each greedy block vs end to end."""
    depth = settings["depth"] or DEFAULT_DEPTHS[settings["architecture"]]
    model = recipes.build_model(
        DATASETS[dataset]["num_classes"],
        depth=depth,
        width=settings["width"],
        granularity=settings["granularity"],
        architecture=settings["architecture"],
        final_head=settings["final_head"],
        head_grid_size=settings["head_grid_size"],
        head_conv_filters=recipes.parse_conv_filters(
            settings["head_conv_filters"]
        ),
        head_hidden_units=settings["head_hidden_units"] or None,
        input_shape=(32, 32, 3),
        **recipes.split_options(settings),
    )
    # The batch size the run will use (its default needs the training set's
    # size: a full set, unless --train_size says otherwise).
    batch_size = settings["batch_size"] or recipes.default_batch_size(
        settings["train_size"] or SMALL_TRAINING_SET
    )
    end_to_end, blocks = recipes.activation_memory(model, batch_size)
    ratios = ", ".join(f"{b / end_to_end:.0%}" for b in blocks)
    print(
        f"Activation memory per training step (estimate from layer "
        f"shapes, batch {batch_size}): end to end "
        f"{end_to_end / 2**20:.0f} MiB; greedy blocks 1-{len(blocks)}: "
        f"{ratios} of it (the largest, {max(blocks) / 2**20:.0f} MiB, "
        f"saves {1 - max(blocks) / end_to_end:.0%}).",
        flush=True,
    )


def start(main_function):
    """`absl.app.run(main_function)`: `--help` exits 0 (absl: 1), quiet logs."""
    import sys

    from absl import app
    from absl import logging

    if any(arg in ("--help", "-h", "-?") for arg in sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)

    def quiet_main(argv):
        _import_tensorflow_quietly()
        # absl logs INFO by default (e.g. JAX's "Unable to initialize
        # backend 'tpu'"); keep WARNING unless --verbosity was given.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return main_function(argv)

    app.run(quiet_main)


def main(dataset, flag_values):
    """The body of every example script: train, evaluate, save, report."""
    settings = settings_from_flags(flag_values)
    output_dir = flag_values.output_dir or os.path.join("runs", dataset)
    if (
        flag_values.verbose
        and settings["mode"] in GREEDY_MODES
        and settings["architecture"] == "vgg"
    ):
        _print_memory_estimate(dataset, settings)
    _, summary, _, _ = recipes.run(
        dataset, settings, output_dir, verbose=flag_values.verbose
    )
    print(
        f"{summary['dataset']}, {summary['mode']}: test accuracy "
        f"{summary['test_accuracy']:.2%} after {summary['wall_time_s']:.0f} s "
        f"of training on {summary['device']} ({summary['backend']}). "
        f"Saved to {output_dir}/{recipes.output_name(dataset, summary['mode'])}"
        ".{keras,json}."
    )
    return summary

"""Peak memory of greedy block training against end-to-end training.

The claim measured (issue 4): training one greedy block keeps only that
block's activations for backpropagation (the frozen blocks before it run in
inference mode under `stop_gradient`), so its peak memory should be well
below end-to-end training of the same network, on the same batch.

For every greedy block of a VGG-11-BN (`schedule="sequential"`, the block's
own stage, on `keras_dib.DIB(alpha=1.01, beta=0.01)`) and for end-to-end
training (cross-entropy), a FRESH subprocess builds the model, trains that
one stage for `--steps` steps on the same batches, and measures:

- on JAX (CPU or GPU), the stage's train step is jitted exactly as Keras
  3.15's JAX trainer jits it (`keras/src/backend/jax/trainer.py`:
  `jax.jit(model.train_step, donate_argnums=0)` over the state
  `(trainable, non_trainable, optimizer, metrics variables)` and a batch
  `(x, y, sample_weight)`, after `model.enter_stage(...)` as
  `GreedyLayerwiseModel.fit` enters a stage), lowered, compiled and run:
  - XLA's compiled memory analysis: argument, output, alias and temp
    sizes; `step = argument + output - alias + temp` is what one step
    holds (temp holds the activations kept for the backward pass); a
    static analysis, free of noise;
  - the resident set size (RSS, Linux `/proc`): its peak during the
    compilation and during the first execution of the step (VmHWM, reset
    with `clear_refs` before each), minus the RSS before it; later steps
    reuse the first one's memory, so their RSS rise measures nothing;
- on other backends, a `model.fit` of the stage (`epochs=[0, ..., 1, ...,
  0]`): the RSS peak during it (compilation included) minus the RSS
  before it (XLA's analysis is JAX-only);
- everywhere, `resource.getrusage().ru_maxrss` after training minus the
  RSS before it (compilation included);
- on a GPU: the allocator's peak, `jax.Device.memory_stats()
  ["peak_bytes_in_use"]` (torch: `torch.cuda.max_memory_allocated`,
  TensorFlow: `get_memory_info("GPU:0")["peak"]`), absolute and minus the
  bytes in use before training; the fresh process per configuration is
  what resets it.

The simultaneous schedule (`--simultaneous`, on by default: every block
and its head trained at once, the gradient stopped between blocks) is
measured the same way, as one more configuration. `--architecture resnet`
measures a CIFAR-style ResNet-18 instead of the VGG-11.

One JSON line per configuration (block or end to end, batch size) is
printed and appended to `<output_dir>/memory.jsonl`, with a `method` field
saying how each number was measured and each block's ratio to end to end;
a bar chart (peak per block against end to end, with the ratios) goes to
`<output_dir>/memory_<setting>.png` (`memory_<setting>_<variant>.png` for a
`--variant` other than `default`).

Settings: `--setting=cpu` (width 16, batch 128, 3 steps) and
`--setting=gpu` (width 64, batch sizes 64 to 512); flags given explicitly
override the setting. The data are real GTSRB training images from
`../shared/data/gtsrb` (`--data=synthetic` for random ones).

Usage (from the repository root):

```
python benchmarks/memory.py --setting=cpu
python benchmarks/memory.py --setting=gpu
python benchmarks/memory.py --width=4 --blocks=1 --batch_sizes=16 \
    --output_dir=/tmp/memory
```
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# On JAX's CPU backend the eigendecomposition (alpha=1.01) runs in
# OpenBLAS, whose threads fight XLA's for the cores (3-5x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import benchmark_common as bench  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from keras_dib import recipes  # noqa: E402

SETTINGS = {
    "cpu": {"width": 16, "batch_sizes": [128], "steps": 3},
    "gpu": {"width": 64, "batch_sizes": [64, 128, 256, 512], "steps": 5},
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("setting", "cpu", list(SETTINGS), "Default sizes.")
flags.DEFINE_integer("width", None, "Channels of the first layer.")
flags.DEFINE_enum(
    "architecture", "vgg", list(recipes.ARCHITECTURES), "Network family."
)
flags.DEFINE_integer(
    "depth", None, "VGG: 11 (default), 13, 16, 19; ResNet: 18 (default), 34."
)
flags.DEFINE_bool(
    "simultaneous",
    True,
    "Also measure the simultaneous schedule (every block and head trained "
    "at once, the gradient stopped between blocks).",
)
flags.DEFINE_list("batch_sizes", None, "Batch sizes (one run each).")
flags.DEFINE_integer("steps", None, "Training steps per configuration.")
flags.DEFINE_list(
    "blocks", [], "Greedy blocks to measure, 1-based (default: all)."
)
flags.DEFINE_string(
    "objective", "dib_1.01", "Greedy objective: dib_<alpha> or ce."
)
flags.DEFINE_integer(
    "head_downsample_size",
    0,
    "Auxiliary heads average-pool larger feature maps down to about this "
    "side before their convolutions (0: no downsampling, the default).",
)
flags.DEFINE_string(
    "head_conv_filters",
    "32",
    "Auxiliary heads' 3x3 convolutions: '32', '32,32', 'auglocal' or '0' "
    "(none); default '32', the heads of the earlier records.",
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
    "ending the stage's last one.",
)
flags.DEFINE_string(
    "variant",
    "default",
    "Label of the split/head variant, recorded in every JSON line.",
)
flags.DEFINE_list(
    "compare_variants",
    [],
    "Measure nothing: plot each block's XLA step memory as a fraction of "
    "end to end for these variants (latest records of each, one model: "
    "--architecture) from <output_dir>/memory.jsonl into "
    "memory_<setting>_<architecture>_variants.png.",
)
flags.DEFINE_enum("data", "gtsrb", ["gtsrb", "synthetic"], "Input images.")
flags.DEFINE_string("data_dir", None, "GTSRB folder (../shared/data/gtsrb).")
flags.DEFINE_string(
    "output_dir", bench.RESULTS, "Where memory.jsonl and the PNG go."
)
flags.DEFINE_integer("timeout", 1200, "Seconds allowed per subprocess.")
# Internal: the subprocess measuring one configuration.
flags.DEFINE_string("worker", None, "Internal: stage to measure.")
flags.DEFINE_string("worker_data", None, "Internal: .npz of the batches.")
flags.DEFINE_string("worker_output", None, "Internal: result .json.")

METHOD = {
    "training": "JAX: the stage's train step jitted exactly as Keras 3.15's "
    "JAX trainer jits it (jax.jit(model.train_step, donate_argnums=0) over "
    "(trainable, non_trainable, optimizer, metrics variables) and a batch, "
    "after model.enter_stage), run for --steps batches; other backends: "
    "model.fit of the stage for --steps steps",
    "device_peak": "accelerator allocator peak while training, one fresh "
    "process per configuration (jax memory_stats()['peak_bytes_in_use'], "
    "torch max_memory_allocated, TensorFlow get_memory_info()['peak']); "
    "null on CPU",
    "xla": "JAX only: .memory_analysis() of the lowered and compiled "
    "step; step = argument + output - alias + temp bytes (temp holds the "
    "activations kept for the backward pass); static, free of noise",
    "rss_compile": "JAX only: Linux /proc VmHWM (reset with clear_refs) "
    "during the step's XLA compilation minus VmRSS before it",
    "rss_first_step": "JAX only: VmHWM during the first execution of the "
    "compiled step minus VmRSS before it (its buffers are allocated then; "
    "MALLOC_MMAP_THRESHOLD_=65536 so they take fresh pages); later steps "
    "reuse memory and their RSS rise is not a measure",
    "rss_fit": "non-JAX only: VmHWM during model.fit (compilation "
    "included) minus VmRSS before it",
    "ru_maxrss": "resource.getrusage(RUSAGE_SELF).ru_maxrss after "
    "training minus VmRSS before it, fresh process (compilation included)",
}


def _setting(name):
    value = getattr(FLAGS, name)
    return SETTINGS[FLAGS.setting][name] if value is None else value


# === One configuration (in its own process) ===


def _device_memory():
    """(bytes in use, peak bytes) of the accelerator, or None on CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if not stats:
            return None
        return stats.get("bytes_in_use"), stats.get("peak_bytes_in_use")
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        info = tf.config.experimental.get_memory_info("GPU:0")
        return info["current"], info["peak"]
    return None


def _reset_device_peak():
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    elif backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
    # JAX cannot reset its peak: the fresh process is the reset.


def _depth():
    return FLAGS.depth or recipes.DEFAULT_DEPTHS[FLAGS.architecture]


def _builder_kwargs():
    """The split and head options given by flags, for the builder."""
    # Passed even when 0 (none): the builder's default may downsample.
    kwargs = {"head_downsample_size": FLAGS.head_downsample_size or None}
    if FLAGS.pool_in_next_block:
        kwargs["pool_in_next_block"] = True
    kwargs["head_conv_filters"] = recipes.parse_conv_filters(
        FLAGS.head_conv_filters
    )
    return kwargs


def _trainable_parameters(model, stage):
    if stage == bench.END_TO_END:
        layers = model.blocks + [model.head]
    elif stage == bench.SIMULTANEOUS:
        layers = model.blocks + model.training_heads
    else:
        layers = [model.blocks[stage], model.training_heads[stage]]
    return int(
        sum(np.prod(v.shape) for layer in layers for v in layer.weights)
        - sum(
            np.prod(v.shape)
            for layer in layers
            for v in layer.non_trainable_weights
        )
    )


def jitted_train_step(model, stage, batch):
    """The stage's train step, jitted as Keras' JAX trainer jits it.

    Reproduces `keras/src/backend/jax/trainer.py` (Keras 3.15):
    `make_train_function` jits `self.train_step` with `donate_argnums=0`,
    and `fit` calls it on `state = (trainable_variables,
    non_trainable_variables, optimizer_variables, metrics_variables)` and
    a batch `(x, y, sample_weight)`. The stage is entered as
    `GreedyLayerwiseModel.fit` enters it (`enter_stage`: the trainable
    block, a fresh optimizer, built) and the compiled metrics are built
    (`_symbolic_build`), as `fit` does.

    Returns:
        `(step, state)`: the `jax.jit` of the train step (not compiled
        yet) and the initial state.
    """
    import jax

    schedule = bench.stage_schedule(stage)
    block = None if schedule != "sequential" else stage
    model.enter_stage(schedule, block)
    model._symbolic_build(data_batch=batch)
    state = model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
    )
    return jax.jit(model.train_step, donate_argnums=0), state


def _xla_sizes(compiled):
    analysis = compiled.memory_analysis()
    sizes = {
        name: int(getattr(analysis, f"{name}_size_in_bytes"))
        for name in ("argument", "output", "alias", "temp", "generated_code")
    }
    sizes["step"] = (
        sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
    )
    return sizes


def _measure_jax(model, stage, batches, result):
    """JAX: compile the trainer's step (XLA analysis), then run it."""
    import jax

    step, state = jitted_train_step(model, stage, batches[0])
    rss_before = bench.resident_bytes()
    reset = bench.reset_peak_resident()
    start = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    result["compile_seconds"] = round(time.perf_counter() - start, 2)
    rss_compile = bench.peak_resident_bytes() - rss_before
    result["xla"] = _xla_sizes(compiled)
    # The first execution: the step's buffers are allocated for the first
    # time (MALLOC_MMAP_THRESHOLD_ keeps the compiler's freed memory from
    # being reused for them).
    rss_step_before = bench.resident_bytes()
    bench.reset_peak_resident()
    logs, state = compiled(state, batches[0])
    jax.block_until_ready(state)
    rss_first_step = bench.peak_resident_bytes() - rss_step_before
    start = time.perf_counter()
    for batch in batches[1:]:
        logs, state = compiled(state, batch)
    jax.block_until_ready(state)
    if len(batches) > 1:
        result["step_seconds"] = round(
            (time.perf_counter() - start) / (len(batches) - 1), 4
        )
    result["loss_finite"] = bool(np.isfinite(float(logs["loss"])))
    maxrss = 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_before_training_bytes"] = rss_before
    result["rss_compile_peak_minus_before_bytes"] = (
        rss_compile if reset else None
    )
    result["rss_first_step_peak_minus_before_bytes"] = (
        rss_first_step if reset else None
    )
    result["rss_fit_peak_minus_before_bytes"] = None
    result["ru_maxrss_minus_before_bytes"] = maxrss - rss_before


def _measure_fit(model, stage, x, y, batch_size, steps, result):
    """Other backends: a `fit` of the stage (compilation included)."""
    rss_before = bench.resident_bytes()
    reset = bench.reset_peak_resident()
    start = time.perf_counter()
    history = bench.fit_stage(
        model, stage, x, y, batch_size, epochs=1, steps=steps
    )
    result["fit_seconds"] = round(time.perf_counter() - start, 2)
    result["loss_finite"] = bool(np.isfinite(history.history["loss"][-1]))
    maxrss = 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["xla"] = None
    result["rss_before_training_bytes"] = rss_before
    result["rss_compile_peak_minus_before_bytes"] = None
    result["rss_first_step_peak_minus_before_bytes"] = None
    result["rss_fit_peak_minus_before_bytes"] = (
        bench.peak_resident_bytes() - rss_before if reset else None
    )
    result["ru_maxrss_minus_before_bytes"] = maxrss - rss_before


def measure(stage, x, y, batch_size, steps):
    """Memory of training `stage` for `steps` steps, in this process."""
    width = _setting("width")
    model = bench.build_model(
        width,
        bench.objective(FLAGS.objective),
        depth=_depth(),
        granularity=FLAGS.granularity,
        architecture=FLAGS.architecture,
        **_builder_kwargs(),
    )
    result = {
        "stage": bench.stage_label(stage),
        "model": bench.model_description(
            model,
            width,
            _depth(),
            granularity=FLAGS.granularity,
            architecture=FLAGS.architecture,
        ),
        "num_blocks": model.num_blocks,
        "trainable_parameters": _trainable_parameters(model, stage),
    }
    device = _device_memory()
    _reset_device_peak()
    if keras.backend.backend() == "jax":
        batches = [
            (
                x[i * batch_size : (i + 1) * batch_size],
                y[i * batch_size : (i + 1) * batch_size],
                None,
            )
            for i in range(steps)
        ]
        _measure_jax(model, stage, batches, result)
    else:
        _measure_fit(model, stage, x, y, batch_size, steps, result)
    after = _device_memory()
    if device is None or after is None:
        result["device_bytes_before_training"] = None
        result["device_peak_bytes"] = None
        result["device_peak_minus_before_bytes"] = None
    else:
        result["device_bytes_before_training"] = int(device[0])
        result["device_peak_bytes"] = int(after[1])
        result["device_peak_minus_before_bytes"] = int(after[1] - device[0])
    return result


def worker():
    data = np.load(FLAGS.worker_data)
    stage = FLAGS.worker
    if stage not in (bench.END_TO_END, bench.SIMULTANEOUS):
        stage = int(stage)
    result = measure(
        stage, data["x"], data["y"], int(data["batch_size"]), _setting("steps")
    )
    with open(FLAGS.worker_output, "w") as f:
        json.dump(result, f)


# === The driver ===


def _run_worker(stage, data_path, directory):
    output = os.path.join(directory, f"{bench.stage_label(stage)}.json")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--worker={stage}",
        f"--worker_data={data_path}",
        f"--worker_output={output}",
        f"--setting={FLAGS.setting}",
        f"--width={_setting('width')}",
        f"--steps={_setting('steps')}",
        f"--objective={FLAGS.objective}",
        f"--architecture={FLAGS.architecture}",
        f"--depth={_depth()}",
        f"--granularity={FLAGS.granularity}",
        f"--head_downsample_size={FLAGS.head_downsample_size}",
        f"--{'' if FLAGS.pool_in_next_block else 'no'}pool_in_next_block",
        f"--head_conv_filters={FLAGS.head_conv_filters}",
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    completed = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=FLAGS.timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"The measurement of {bench.stage_label(stage)} failed:\n"
            + completed.stderr[-4000:]
        )
    with open(output) as f:
        return json.load(f)


def _ratio(value, reference):
    if value is None or not reference:
        return None
    return round(value / reference, 4)


def _primary(result):
    """The headline number: device peak on a GPU, else XLA, else RSS."""
    if result["device_peak_bytes"] is not None:
        return result["device_peak_bytes"], "device_peak"
    if result["xla"] is not None:
        return result["xla"]["step"], "xla"
    if result["rss_fit_peak_minus_before_bytes"] is not None:
        return result["rss_fit_peak_minus_before_bytes"], "rss_fit"
    return result["ru_maxrss_minus_before_bytes"], "ru_maxrss"


RATIOS = {
    "device_peak": "device_peak_bytes",
    "device_peak_minus_before": "device_peak_minus_before_bytes",
    "rss_compile": "rss_compile_peak_minus_before_bytes",
    "rss_first_step": "rss_first_step_peak_minus_before_bytes",
    "rss_fit": "rss_fit_peak_minus_before_bytes",
    "ru_maxrss": "ru_maxrss_minus_before_bytes",
}


def _ratios(result, reference):
    ratios = {
        name: _ratio(result[key], reference[key])
        for name, key in RATIOS.items()
    }
    for name in ("step", "temp"):
        ratios[f"xla_{name}"] = _ratio(
            result["xla"] and result["xla"][name],
            reference["xla"] and reference["xla"][name],
        )
    return ratios


PLOTTED = (
    ("device_peak_bytes", "accelerator allocator peak"),
    ("xla_step_bytes", "XLA analysis of the train step"),
    ("rss_first_step_peak_minus_before_bytes", "RSS rise, first step"),
    ("rss_fit_peak_minus_before_bytes", "RSS rise in fit (with compiling)"),
    ("ru_maxrss_minus_before_bytes", "ru_maxrss rise (with compiling)"),
)


def _plotted(record, key):
    if key == "xla_step_bytes":
        return record["xla"] and record["xla"]["step"]
    return record[key]


def _block_order(record):
    if record["stage"] == bench.SIMULTANEOUS:
        return 10**6 - 1
    if record["stage"] == bench.END_TO_END:
        return 10**6
    return int(record["stage"].split("_")[1])


def plot(records, path):
    """Peak memory per greedy block against end to end.

    One row of panels per batch size, one panel per measurement method
    (their scales differ: the RSS in fit includes XLA's compiler), the
    block's ratio to end to end above each bar.
    """
    from matplotlib.figure import Figure

    batch_sizes = sorted({r["batch_size"] for r in records})
    methods = [
        (key, title)
        for key, title in PLOTTED
        if all(_plotted(r, key) is not None for r in records)
    ]
    figure = Figure(figsize=(4.2 * len(methods), 3.4 * len(batch_sizes) + 0.6))
    first = records[0]
    figure.suptitle(
        f"Peak memory of one greedy block (DIB) vs end to end: "
        f"{first['model']}\n{first['device']}, {first['backend']}, "
        f"{first['dataset']}",
        fontsize=9,
    )
    for row, batch_size in enumerate(batch_sizes):
        rows = sorted(
            [r for r in records if r["batch_size"] == batch_size],
            key=_block_order,
        )
        short = {bench.END_TO_END: "e2e", bench.SIMULTANEOUS: "sim"}
        labels = [short.get(r["stage"], r["stage"][6:]) for r in rows]
        for column, (key, title) in enumerate(methods):
            axes = figure.add_subplot(
                len(batch_sizes),
                len(methods),
                row * len(methods) + column + 1,
            )
            values = [_plotted(r, key) / 2**20 for r in rows]
            colors = [
                {"e2e": "k", "sim": "C1"}.get(label, "C0") for label in labels
            ]
            bars = axes.bar(range(len(rows)), values, 0.7, color=colors)
            if labels[-1] == "e2e" and values[-1] > 0:
                for bar, value in zip(bars[:-1], values[:-1]):
                    axes.annotate(
                        f"{value / values[-1]:.2f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            axes.set_xticks(range(len(rows)), labels)
            axes.set_xlabel(
                "greedy block, sim(ultaneous) (ratio to e2e above)",
                fontsize=8,
            )
            axes.set_ylabel("MiB", fontsize=8)
            axes.set_title(f"{title}, batch {batch_size}", fontsize=8)
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _latest_ratios(records, model, variant, batch_size):
    """{block: XLA step ratio to end to end} of a variant's latest run."""
    rows = [
        r
        for r in records
        if r.get("model") == model
        and r.get("variant") == variant
        and r.get("batch_size") == batch_size
        and r.get("schedule") == "sequential"
        and r.get("xla")
    ]
    ratios = {}
    for r in sorted(rows, key=lambda r: r["time"]):
        ratios[_block_order(r)] = r["ratio_to_end_to_end"]["xla_step"]
    return ratios


def plot_variants(records, variants, path):
    """Grouped bars: each block's step memory / end to end's, per variant."""
    from matplotlib.figure import Figure

    model = next(
        r["model"]
        for r in reversed(records)
        if r.get("variant") == variants[0]
        and FLAGS.architecture in r["model"].lower()
    )
    batch_size = _setting("batch_sizes")[0]
    figure = Figure(figsize=(7.5, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    step = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        ratios = _latest_ratios(records, model, variant, int(batch_size))
        if not ratios:
            raise app.UsageError(
                f"No sequential records of variant {variant!r} for {model} "
                f"at batch {batch_size} in memory.jsonl."
            )
        blocks = sorted(ratios)
        axes.bar(
            [b - 0.4 + step * (index + 0.5) for b in blocks],
            [ratios[b] for b in blocks],
            step,
            label=f"{variant} (max {max(ratios.values()):.0%})",
        )
    axes.axhline(0.5, color="k", linestyle="--", linewidth=0.8)
    axes.text(0.55, 0.51, "50% of end to end", fontsize=7)
    axes.set_xlabel("greedy block", fontsize=8)
    axes.set_ylabel("train-step memory / end to end's", fontsize=8)
    first = records[-1]
    axes.set_title(
        f"{model}, batch {batch_size}: XLA step analysis\n"
        f"{first['device']}, {first['backend']}, {first['dataset']}",
        fontsize=8,
    )
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3, axis="y")
    axes.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    if FLAGS.worker is not None:
        worker()
        return
    if FLAGS.compare_variants:
        jsonl = os.path.join(FLAGS.output_dir, "memory.jsonl")
        with open(jsonl) as f:
            records = [json.loads(line) for line in f if line.strip()]
        png = os.path.join(
            FLAGS.output_dir,
            f"memory_{FLAGS.setting}_{FLAGS.architecture}_variants.png",
        )
        plot_variants(records, FLAGS.compare_variants, png)
        print(f"plot: {png}", flush=True)
        return
    if FLAGS.pool_in_next_block and FLAGS.architecture != "vgg":
        raise app.UsageError(
            "--pool_in_next_block is a VGG option. Received: "
            f"--architecture={FLAGS.architecture}"
        )
    width = _setting("width")
    steps = _setting("steps")
    batch_sizes = [int(b) for b in _setting("batch_sizes")]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    jsonl = os.path.join(FLAGS.output_dir, "memory.jsonl")
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        for batch_size in batch_sizes:
            x, y, dataset = bench.load_images(
                FLAGS.data, batch_size * steps, FLAGS.data_dir
            )
            data_path = os.path.join(directory, f"batches_{batch_size}.npz")
            np.savez(data_path, x=x, y=y, batch_size=batch_size)
            # End to end first: the reference of the blocks' ratios, and
            # the number of blocks (no model is built in this process).
            reference = _run_worker(bench.END_TO_END, data_path, directory)
            stages = bench.parse_stages(FLAGS.blocks, reference["num_blocks"])
            if FLAGS.simultaneous:
                stages.append(bench.SIMULTANEOUS)
            for stage in [bench.END_TO_END] + stages:
                if stage == bench.END_TO_END:
                    result = reference
                else:
                    result = _run_worker(stage, data_path, directory)
                primary, primary_method = _primary(result)
                record = {
                    **bench.base_record("memory", FLAGS.setting),
                    "load_average_note": "2-core machine shared with other "
                    "jobs; memory numbers do not depend on the load",
                    "dataset": dataset,
                    "batch_size": batch_size,
                    "steps": steps,
                    "variant": FLAGS.variant,
                    "schedule": bench.stage_schedule(stage),
                    "objective": "cross-entropy"
                    if stage == bench.END_TO_END
                    else FLAGS.objective,
                    **result,
                    "peak_bytes": primary,
                    "peak_method": primary_method,
                    "ratio_to_end_to_end": _ratios(result, reference),
                    "method": METHOD,
                    "settings": {
                        "width": width,
                        "architecture": FLAGS.architecture,
                        "depth": _depth(),
                        "granularity": FLAGS.granularity,
                        "head_grid_size": 4,
                        "head_conv_filters": FLAGS.head_conv_filters,
                        "head_downsample_size": FLAGS.head_downsample_size
                        or None,
                        "pool_in_next_block": FLAGS.pool_in_next_block,
                        "optimizer": "SGD(0.05, momentum=0.9)",
                        "data": FLAGS.data,
                    },
                }
                records.append(bench.write_record(record, jsonl))
    suffix = "" if FLAGS.variant == "default" else f"_{FLAGS.variant}"
    png = os.path.join(FLAGS.output_dir, f"memory_{FLAGS.setting}{suffix}.png")
    plot(records, png)
    print(
        f"plot: {png} ({time.perf_counter() - start:.0f} s in all)", flush=True
    )


if __name__ == "__main__":
    app.run(main)

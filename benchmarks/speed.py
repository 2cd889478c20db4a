"""Training speed of greedy blocks against end to end, and the Renyi cost.

Two measurements on a VGG-11-BN (one greedy block per convolution), with
real GTSRB training images (`--data=synthetic` for random ones):

1. Throughput: images/s of each greedy block's training step
   (`schedule="sequential"`, the block's own stage, so the step includes
   the frozen blocks before it, run in inference mode) with three local
   objectives, `keras_dib.DIB(alpha=1.01)` (eigendecompositions),
   `DIB(alpha=2)` (matrix products, no eigendecomposition) and the
   cross-entropy only (`keras_dib.losses.LocalObjective`, i.e. beta=0),
   and of the end-to-end step (cross-entropy), at `--batch_size`.
2. The share of the step time spent in the Renyi terms, on the same block
   and the same batches: `share = (t_DIB - t_CE) / t_DIB`, for alpha=1.01
   and alpha=2, at each of `--batch_sizes` on each of `--share_blocks`.

Timing: every configuration is timed by `--repeats` runs of `model.fit`
(`--epochs` epochs of `--steps` steps over the same `steps * batch_size`
images; for a greedy block `epochs=[0, ..., epochs, ..., 0]`, so each run
re-traces and recompiles the step as a greedy stage does), the objectives
of one block interleaved run by run and end to end timed both before and
after the blocks. A run's first epoch includes tracing and XLA compilation
and is reported apart (`first_epoch_s`; `compile_s` = that minus a steady
epoch). The step time is the FASTEST later epoch over all runs divided by
`--steps` (other jobs on a shared machine only ever slow an epoch down;
the median is reported as `step_ms_median`). The process's CPU time (all
threads, `time.process_time()`) per step is reported too
(`cpu_ms_per_step`, fastest epoch, and a Renyi share computed from it):
it is less sensitive than wall time to other jobs on a shared machine.
The machine's load average is recorded with every line and every run: on
the shared 2-core CPU wall-clock timings are noisy, and two
configurations are comparable only when they ran under a similar load.

With `--cache_prefix` the greedy blocks are fitted with
`fit(cache_prefix=True)`: the frozen blocks' output is computed once
before the stage's epochs (that time is in `fit_seconds`, outside the
epochs), so a block's step no longer includes the frozen blocks.

One JSON line per configuration is printed and appended to
`<output_dir>/speed.jsonl`; a plot (images/s per block and objective
against end to end; Renyi share against batch size) goes to
`<output_dir>/speed_<setting>.png` (`speed_<setting>_cache_prefix.png`
with `--cache_prefix`).

Settings: `--setting=cpu` (width 16, 2 runs of 3 epochs of 10 steps,
share at batch sizes 64, 128, 256 on block 1) and `--setting=gpu` (width
64, 2 runs of 4 epochs of 50 steps, batch sizes 64 to 512 on blocks 1 and
8); flags given explicitly override the setting.

Usage (from the repository root):

```
python benchmarks/speed.py --setting=cpu
python benchmarks/speed.py --setting=gpu
python benchmarks/speed.py --width=4 --blocks=1 --batch_size=16 \
    --batch_sizes=16 --objectives=ce,dib_2 --repeats=1 \
    --output_dir=/tmp/speed
```
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

import benchmark_common as bench  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

OBJECTIVES = ("dib_1.01", "dib_2", "ce")
SETTINGS = {
    "cpu": {
        "width": 16,
        "steps": 10,
        "epochs": 3,
        "batch_sizes": [64, 128, 256],
        "share_blocks": ["1"],
        "repeats": 2,
    },
    "gpu": {
        "width": 64,
        "steps": 50,
        "epochs": 4,
        "batch_sizes": [64, 128, 256, 512],
        "share_blocks": ["1", "8"],
        "repeats": 2,
    },
}
LOAD_NOTE = (
    "load_average: os.getloadavg() when the line was written; the cores "
    "are shared with other jobs, so timings are noisy and comparable only "
    "under a similar load"
)

FLAGS = flags.FLAGS
flags.DEFINE_enum("setting", "cpu", list(SETTINGS), "Default sizes.")
flags.DEFINE_integer("width", None, "Channels of the first VGG layer.")
flags.DEFINE_integer("batch_size", 128, "Batch size of the throughput part.")
flags.DEFINE_list("batch_sizes", None, "Batch sizes of the Renyi share.")
flags.DEFINE_integer("steps", None, "Steps per timed epoch.")
flags.DEFINE_integer("epochs", None, "Epochs (>= 2; the first compiles).")
flags.DEFINE_integer("repeats", None, "Timed fits per configuration.")
flags.DEFINE_list(
    "blocks", [], "Greedy blocks of the throughput part, 1-based (all)."
)
flags.DEFINE_list(
    "share_blocks", None, "Blocks of the Renyi share part, 1-based."
)
flags.DEFINE_list(
    "objectives", list(OBJECTIVES), f"Some of {', '.join(OBJECTIVES)}."
)
flags.DEFINE_list(
    "parts", ["throughput", "share"], "Parts to run: throughput, share."
)
flags.DEFINE_bool(
    "cache_prefix",
    False,
    "Greedy blocks: fit(cache_prefix=True), the frozen blocks' output "
    "computed once per fit instead of on every step (its time is in "
    "`fit_seconds`, not in the epochs).",
)
flags.DEFINE_enum("data", "gtsrb", ["gtsrb", "synthetic"], "Input images.")
flags.DEFINE_string("data_dir", None, "GTSRB folder (../shared/data/gtsrb).")
flags.DEFINE_string(
    "output_dir", bench.RESULTS, "Where speed.jsonl and the PNG go."
)


def _setting(name):
    value = getattr(FLAGS, name)
    return SETTINGS[FLAGS.setting][name] if value is None else value


class EpochTimer(keras.callbacks.Callback):
    """Wall time and process CPU time (all threads) of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


class Timings:
    """Times stages of fresh models, one model per objective.

    Every `run` is one `fit` (a re-traced, recompiled step, as a greedy
    stage gets) of `epochs` epochs; `summary` pools every run of a
    configuration so far.
    """

    def __init__(self, width, images, labels, steps, epochs, cache_prefix):
        self.cache_prefix = cache_prefix
        self.width = width
        self.images = images
        self.labels = labels
        self.steps = steps
        self.epochs = epochs
        self.models = {}
        self.runs = {}

    def model(self, objective):
        if objective not in self.models:
            self.models[objective] = bench.build_model(
                self.width, bench.objective(objective)
            )
        return self.models[objective]

    def count(self, objective, stage, batch_size):
        return len(self.runs.get((objective, stage, batch_size), []))

    def run(self, objective, stage, batch_size):
        """One timed fit of `stage` (a block index or END_TO_END)."""
        count = self.steps * batch_size
        timer = EpochTimer()
        start = time.perf_counter()
        bench.fit_stage(
            self.model(objective),
            stage,
            self.images[:count],
            self.labels[:count],
            batch_size,
            epochs=self.epochs,
            steps=self.steps,
            callbacks=[timer],
            cache_prefix=self.cache_prefix,
        )
        fit_seconds = time.perf_counter() - start
        key = (objective, stage, batch_size)
        self.runs.setdefault(key, []).append(
            {
                "epoch_seconds": timer.seconds,
                "epoch_cpu_seconds": timer.cpu_seconds,
                "fit_seconds": fit_seconds,
                "load": os.getloadavg()[0],
            }
        )

    def summary(self, objective, stage, batch_size):
        """Step time from the fastest steady epoch of all runs.

        Other jobs on a shared machine only ever slow an epoch down, so
        the minimum over the steady epochs (every epoch but each run's
        first) is the estimate least affected by them; the median is
        reported too.
        """
        runs = self.runs[(objective, stage, batch_size)]
        steady = [s for run in runs for s in run["epoch_seconds"][1:]]
        fastest = float(np.min(steady))
        cpu = [s for run in runs for s in run["epoch_cpu_seconds"][1:]]
        first = runs[0]["epoch_seconds"][0]
        images = self.steps * batch_size
        return {
            "step_ms": round(1000 * fastest / self.steps, 3),
            "images_per_s": round(images / fastest, 1),
            "step_ms_median": round(
                1000 * float(np.median(steady)) / self.steps, 3
            ),
            "cpu_ms_per_step": round(1000 * float(np.min(cpu)) / self.steps, 3),
            "first_epoch_s": round(first, 3),
            "compile_s": round(first - fastest, 3),
            "epoch_seconds": [
                [round(s, 4) for s in run["epoch_seconds"]] for run in runs
            ],
            "epoch_cpu_seconds": [
                [round(s, 4) for s in run["epoch_cpu_seconds"]] for run in runs
            ],
            "fit_seconds": [round(r["fit_seconds"], 3) for r in runs],
            "one_minute_load_per_run": [round(r["load"], 2) for r in runs],
        }


def _share(dib, cross_entropy, suffix, name="step_ms"):
    """`(t_DIB - t_CE) / t_DIB` from the `{name}{suffix}` fields."""
    t_dib = dib[f"{name}{suffix}"]
    return round((t_dib - cross_entropy[f"{name}{suffix}"]) / t_dib, 4)


def _objective_name(objective, stage):
    if stage == bench.END_TO_END:
        return "cross-entropy (end to end)"
    return {
        "ce": "cross-entropy only (LocalObjective, beta=0)",
        "dib_1.01": "DIB(alpha=1.01, beta=0.01)",
        "dib_2": "DIB(alpha=2, beta=0.01)",
    }.get(objective, objective)


def plot(records, path):
    """Images/s per block and objective; Renyi share against batch size."""
    from matplotlib.figure import Figure

    throughput = [r for r in records if r["part"] == "throughput"]
    shares = [r for r in records if r["part"] == "renyi_share"]
    panels = int(bool(throughput)) + int(bool(shares))
    figure = Figure(figsize=(6.0 * panels, 4.4))
    first = records[0]
    threads = first.get("environment", {}).get("OPENBLAS_NUM_THREADS")
    figure.suptitle(
        f"{first['model']}\n{first['device']}, {first['backend']}, "
        f"{first['dataset']}"
        + (f"; OPENBLAS_NUM_THREADS={threads}" if threads else ""),
        fontsize=9,
    )
    column = 1
    if throughput:
        axes = figure.add_subplot(1, panels, column)
        column += 1
        styles = {"dib_1.01": "o-", "dib_2": "s-", "ce": "^--"}
        for objective in OBJECTIVES:
            rows = sorted(
                [
                    r
                    for r in throughput
                    if r["objective"] == objective and r["block"] is not None
                ],
                key=lambda r: r["block"],
            )
            if rows:
                axes.plot(
                    [r["block"] for r in rows],
                    [r["images_per_s"] for r in rows],
                    styles[objective],
                    label=f"greedy, {_objective_name(objective, 0)}",
                )
        for r in throughput:
            if r["block"] is None:
                axes.axhline(
                    r["images_per_s"],
                    color="k",
                    linestyle=":",
                    label="end to end (cross-entropy)",
                )
        axes.set_yscale("log")
        axes.set_xticks(sorted({r["block"] for r in throughput if r["block"]}))
        axes.set_xlabel("greedy block trained")
        axes.set_ylabel("training images/s (log scale)")
        cached = throughput[0]["settings"].get("cache_prefix")
        axes.set_title(
            f"Training step throughput, batch {throughput[0]['batch_size']}"
            + (", fit(cache_prefix=True)" if cached else ""),
            fontsize=9,
        )
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7)
    if shares:
        axes = figure.add_subplot(1, panels, column)
        keys = sorted({(r["block"], r["alpha"]) for r in shares})
        for block, alpha in keys:
            rows = sorted(
                [
                    r
                    for r in shares
                    if r["block"] == block and r["alpha"] == alpha
                ],
                key=lambda r: r["batch_size"],
            )
            line = axes.plot(
                [r["batch_size"] for r in rows],
                [100 * r["renyi_share"] for r in rows],
                "o-" if alpha != 2 else "s-",
                label=f"block {block}, alpha={alpha:g} (wall time)",
            )[0]
            axes.plot(
                [r["batch_size"] for r in rows],
                [100 * r["renyi_share_cpu_time"] for r in rows],
                "o--" if alpha != 2 else "s--",
                color=line.get_color(),
                alpha=0.6,
                label=f"block {block}, alpha={alpha:g} (process CPU time)",
            )
        axes.axhline(15, color="r", linestyle=":", label="15% target")
        axes.set_xscale("log", base=2)
        sizes = sorted({r["batch_size"] for r in shares})
        axes.set_xticks(sizes, [str(size) for size in sizes])
        axes.minorticks_off()
        axes.set_xlabel("batch size")
        axes.set_ylabel("Renyi terms' share of the step time (%)")
        axes.set_title(
            "(t_DIB - t_CE) / t_DIB, same block and batch", fontsize=9
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    width = _setting("width")
    steps = _setting("steps")
    epochs = _setting("epochs")
    if epochs < 2:
        raise ValueError(
            f"`--epochs` should be >= 2 (the first compiles). Received: "
            f"epochs={epochs}"
        )
    for objective in FLAGS.objectives:
        if objective not in OBJECTIVES:
            raise ValueError(
                f"`--objectives` should be among {OBJECTIVES}. Received: "
                f"{objective!r}"
            )
    batch_sizes = [int(b) for b in _setting("batch_sizes")]
    repeats = _setting("repeats")
    parts = list(FLAGS.parts)
    largest = max([FLAGS.batch_size] + batch_sizes)
    images, labels, dataset = bench.load_images(
        FLAGS.data, steps * largest, FLAGS.data_dir
    )
    timings = Timings(width, images, labels, steps, epochs, FLAGS.cache_prefix)
    probe = timings.model("ce")
    model_name = bench.model_description(probe, width)
    stages = bench.parse_stages(FLAGS.blocks, probe.num_blocks)
    share_stages = bench.parse_stages(
        _setting("share_blocks"), probe.num_blocks
    )
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    jsonl = os.path.join(FLAGS.output_dir, "speed.jsonl")
    settings = {
        "width": width,
        "depth": 11,
        "granularity": "layer",
        "head_grid_size": 4,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "optimizer": "SGD(0.05, momentum=0.9)",
        "data": FLAGS.data,
        "repeats": repeats,
        "cache_prefix": FLAGS.cache_prefix,
        "timing": "each configuration is `repeats` model.fit runs of "
        "`epochs` epochs of `steps_per_epoch` steps, the objectives of a "
        "block interleaved; step_ms = the fastest epoch other than a run's "
        "first / steps (step_ms_median: the median one); compile_s = the "
        "first run's first epoch - the fastest epoch",
    }

    def record(part, **fields):
        return bench.write_record(
            {
                **bench.base_record("speed", FLAGS.setting),
                "load_average_note": LOAD_NOTE,
                "dataset": dataset,
                "model": model_name,
                "part": part,
                **fields,
                "settings": settings,
            },
            jsonl,
        )

    records = []
    start = time.perf_counter()

    def run_until(objective, stage, batch_size, runs):
        while timings.count(objective, stage, batch_size) < runs:
            timings.run(objective, stage, batch_size)

    def throughput(objective, stage, batch_size):
        return record(
            "throughput",
            stage=bench.stage_label(stage),
            block=None if stage == bench.END_TO_END else stage + 1,
            objective=objective,
            objective_description=_objective_name(objective, stage),
            batch_size=batch_size,
            **timings.summary(objective, stage, batch_size),
        )

    if "throughput" in parts:
        batch_size = FLAGS.batch_size
        # End to end before and after the blocks, so that a change of the
        # machine's load during the run is seen by both sides.
        run_until("ce", bench.END_TO_END, batch_size, (repeats + 1) // 2)
        for stage in stages:
            # The objectives interleaved, `repeats` times.
            for runs in range(1, repeats + 1):
                for objective in FLAGS.objectives:
                    run_until(objective, stage, batch_size, runs)
            for objective in FLAGS.objectives:
                records.append(throughput(objective, stage, batch_size))
        run_until("ce", bench.END_TO_END, batch_size, repeats)
        records.append(throughput("ce", bench.END_TO_END, batch_size))
    alphas = [o for o in FLAGS.objectives if o.startswith("dib_")]
    if "share" in parts and alphas:
        for stage in share_stages:
            for batch_size in batch_sizes:
                for runs in range(1, repeats + 1):
                    for objective in ["ce"] + alphas:
                        run_until(objective, stage, batch_size, runs)
                cross_entropy = timings.summary("ce", stage, batch_size)
                for objective in alphas:
                    dib = timings.summary(objective, stage, batch_size)
                    records.append(
                        record(
                            "renyi_share",
                            stage=bench.stage_label(stage),
                            block=stage + 1,
                            objective=objective,
                            alpha=float(objective[4:]),
                            batch_size=batch_size,
                            dib_step_ms=dib["step_ms"],
                            ce_step_ms=cross_entropy["step_ms"],
                            renyi_share=_share(dib, cross_entropy, ""),
                            renyi_share_of_medians=_share(
                                dib, cross_entropy, "_median"
                            ),
                            dib_cpu_ms_per_step=dib["cpu_ms_per_step"],
                            ce_cpu_ms_per_step=cross_entropy["cpu_ms_per_step"],
                            renyi_share_cpu_time=_share(
                                dib, cross_entropy, "", "cpu_ms_per_step"
                            ),
                            dib_epoch_seconds=dib["epoch_seconds"],
                            ce_epoch_seconds=cross_entropy["epoch_seconds"],
                            dib_load_per_run=dib["one_minute_load_per_run"],
                            ce_load_per_run=cross_entropy[
                                "one_minute_load_per_run"
                            ],
                        )
                    )
    suffix = "_cache_prefix" if FLAGS.cache_prefix else ""
    png = os.path.join(FLAGS.output_dir, f"speed_{FLAGS.setting}{suffix}.png")
    if records:
        plot(records, png)
    print(
        f"plot: {png} ({time.perf_counter() - start:.0f} s in all)", flush=True
    )


if __name__ == "__main__":
    app.run(main)

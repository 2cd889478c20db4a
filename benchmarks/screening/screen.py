"""One screening run of a training recipe on a GTSRB validation split.

Trains one recipe with `keras_dib.recipes`' data, model and training
helpers (the same code path as `examples/gtsrb.py`) and appends one JSON line
to `benchmarks/results/screening_cpu.jsonl`: settings, sizes, seed, backend,
device, validation accuracy after every epoch and per block, final
validation accuracy, training seconds, total process seconds and passes
over the data.

Screening runs (`--validation_size > 0`) never evaluate the test set. The
final run of the chosen recipe (`--test_run`, no validation hold-out)
evaluates the full test set once and is marked `"test_run": true`.

Run from the repository root, one run per process:

```
KERAS_BACKEND=jax OPENBLAS_NUM_THREADS=1 .venv/bin/python \
    benchmarks/screening/screen.py --tag main_w16 --set width=16 \
    --set epochs_per_block=2 --set head_conv_filters=32 \
    --set validation_size=4000
```
"""

import os
import time

START = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
import keras  # noqa: E402

from keras_dib import recipes  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "screening_cpu.jsonl")
DEVICE = "CPU, 2 cores (shared)"

# The recipe's settings (`keras_dib.recipes.DEFAULT_SETTINGS`) with those
# of the recorded screens where they differ.
DEFAULTS = dict(
    recipes.DEFAULT_SETTINGS,
    # ../shared/data/gtsrb next to the repository.
    data_dir=os.path.join(os.path.dirname(ROOT), "shared", "data", "gtsrb"),
    depth=11,
    head_conv_filters=32,
    # 0: no downsampling, as in the recorded screens (build_vgg's default
    # pools block 1's head input to 8x8 since 2026-12-03).
    head_downsample_size=0,
    validation_size=4000,
    epochs=5,
    batch_size=128,
)


def _cpu_seconds():
    t = os.times()
    return t.user + t.system


def parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tag", required=True, help="name of the recipe")
    parser.add_argument("--goal", default="main_job")
    parser.add_argument(
        "--set", action="append", default=[], help="key=value (JSON value)"
    )
    parser.add_argument("--test_run", action="store_true")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    s = dict(DEFAULTS)
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in s:
            raise SystemExit(f"unknown setting {key}")
        s[key] = parse_value(value)
    if args.test_run:
        s["validation_size"] = 0
    elif not s["validation_size"]:
        raise SystemExit("screening runs need a validation split")
    else:
        # Never look at the test set while screening: a token evaluation
        # of 1 image (recipes.run always evaluates it), not recorded.
        s["test_size"] = 1

    cpu_before = _cpu_seconds()
    model, summary, _, _ = recipes.run(
        "gtsrb", s, output_dir=None, verbose=args.verbose
    )
    blocks = summary["block_history"]
    greedy = s["mode"] in recipes.GREEDY_MODES
    passes = model.num_blocks * s["epochs_per_block"] if greedy else s["epochs"]
    key = "val_accuracy"
    record = {
        "benchmark": "screening",
        "goal": args.goal,
        "tag": args.tag,
        "test_run": bool(args.test_run),
        "dataset": summary["dataset"],
        "model": summary["model"],
        "num_blocks": model.num_blocks,
        "mode": s["mode"],
        "seed": s["seed"],
        "backend": keras.backend.backend(),
        "device": DEVICE,
        "train_images": summary["train_images"],
        "validation_images": summary["validation_images"],
        "test_images": summary["test_images"] if args.test_run else 0,
        "passes_over_data": passes,
        "validation_accuracy": summary["validation_accuracy"],
        "block_validation_accuracy": [
            round(b[key][-1], 4) for b in blocks if b.get(key)
        ]
        or None,
        "epoch_validation_accuracy": [
            [round(v, 4) for v in b.get(key, [])] for b in blocks
        ],
        "block_train_accuracy": [
            round(b["accuracy"][-1], 4) for b in blocks if b.get("accuracy")
        ],
        "test_accuracy": summary["test_accuracy"] if args.test_run else None,
        "training_wall_s": summary["wall_time_s"],
        "epoch_seconds": summary["epoch_seconds"],
        "evaluation_s": summary["evaluation_seconds"],
        "total_process_wall_s": round(time.perf_counter() - START, 1),
        "load1_at_end": round(os.getloadavg()[0], 2),
        # CPU seconds (user + system, all threads) of this process: less
        # sensitive than wall seconds to the other jobs on the 2 cores.
        "process_cpu_s": round(_cpu_seconds(), 1),
        "run_cpu_s": round(_cpu_seconds() - cpu_before, 1),
        "settings": {
            k: v for k, v in summary["settings"].items() if k != "data_dir"
        },
        "keras_version": keras.__version__,
    }
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(
        "RECORD",
        json.dumps(
            {
                k: record[k]
                for k in (
                    "tag",
                    "validation_accuracy",
                    "block_validation_accuracy",
                    "block_train_accuracy",
                    "test_accuracy",
                    "training_wall_s",
                    "total_process_wall_s",
                    "passes_over_data",
                    "train_images",
                    "validation_images",
                    "load1_at_end",
                    "run_cpu_s",
                )
            }
        ),
    )


if __name__ == "__main__":
    main()

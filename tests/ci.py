"""Runs every tier of the test suite once per Keras backend, in parallel.

The README's test command (and `.ci/run`) ends with this script:

    .venv/bin/python tests/ci.py

Each backend's pass runs every tier (`--run_large`; the `backend_free`
tests run in the torch pass only). The JAX and TensorFlow passes, the
longest, are each cut in two shards (`tests/models/` and the rest), so
that five processes share the cores instead of one long pass running
alone at the end on one of them. Every shard's output is printed when it ends,
with the slowest tests (`--durations=20`); the exit status is non-zero if
any shard failed. Extra arguments go to every pytest process (for
example `-x` or `-k checkpoint`).
"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join("tests", "models")

# (name, KERAS_BACKEND, test paths and options).
SHARDS = [
    ("jax (tests/models)", "jax", [MODELS]),
    ("jax (the rest)", "jax", ["tests", f"--ignore={MODELS}"]),
    ("tensorflow (tests/models)", "tensorflow", [MODELS]),
    ("tensorflow (the rest)", "tensorflow", ["tests", f"--ignore={MODELS}"]),
    ("torch", "torch", ["tests"]),
]
PYTEST_OPTIONS = [
    "-q",
    "-p",
    "no:cacheprovider",
    "--run_large",
    "--backend_free_on=torch",
    "--durations=20",
]


def main(extra_arguments):
    started = time.monotonic()
    running = []
    for name, backend, paths in SHARDS:
        log = tempfile.TemporaryFile(mode="w+")
        command = [sys.executable, "-m", "pytest"] + PYTEST_OPTIONS
        process = subprocess.Popen(
            command + paths + extra_arguments,
            cwd=ROOT,
            env=dict(os.environ, KERAS_BACKEND=backend),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running.append((name, process, log))
    try:
        return _wait(running, started)
    finally:
        for _, process, _ in running:
            if process.poll() is None:
                process.kill()


def _wait(running, started):
    """Prints each shard's output as it ends; returns the exit status."""
    failed = []
    while running:
        for entry in list(running):
            name, process, log = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log.seek(0)
            elapsed = time.monotonic() - started
            print(
                f"=== {name} (pytest exit {process.returncode}, "
                f"{elapsed:.0f} s)",
                flush=True,
            )
            print(log.read(), flush=True)
            log.close()
            # 5: no test collected (a `-k` that selects none in a shard).
            if process.returncode not in (0, 5):
                failed.append(name)
        time.sleep(1)
    total = time.monotonic() - started
    if failed:
        print(f"=== FAILED: {', '.join(failed)} ({total:.0f} s)")
        return 1
    print(f"=== every shard passed ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

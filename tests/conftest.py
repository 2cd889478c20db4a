"""Test tiers (markers registered in pyproject.toml).

- Default tier: every test not marked `large`. `pytest tests` runs it (the
  `large` tests are reported as skipped).
- `large`: tests that start fresh Python interpreters (examples, benchmarks,
  kill-and-resume, distribution, cross-backend loading) or read the real
  data sets in ../shared/data. `pytest tests --run_large` adds them; CI
  runs every tier.
- `backend_free`: tests whose result does not depend on the Keras backend
  (data loading and caching, plots), or that cover every backend from any
  one of them (cross-backend loading). They run by default; with
  `--backend_free_on=BACKEND` they run only when the Keras backend is
  BACKEND (deselected otherwise), so that CI runs them in one backend's
  pass only.

XLA (JAX, and TensorFlow's jit-compiled steps) compiles the tests' tiny
models without LLVM's expensive optimisations (`XLA_FLAGS`, set here before
any backend is imported and inherited by the tests' subprocesses): the
compilation, not the few steps run, is most of each fit's time on CPU.
Set `XLA_FLAGS` yourself to override.

OpenMP (torch's CPU kernels, OpenBLAS) runs one thread per process
(`OMP_NUM_THREADS=1`, inherited by the subprocesses): CI runs the three
backends' passes in parallel on two cores, where OpenMP threads spin
waiting for each other and for the cores (the GTSRB example's --quick run
on torch: 139 s of CPU with the default threads, 30 s with one, under
load). Set `OMP_NUM_THREADS` yourself to override.

On JAX, one pass of the suite shares a persistent compilation cache (a
temporary folder, removed at the end; inherited by the tests' subprocesses,
which start fresh interpreters): the same tiny models are compiled by many
tests and by every kill-and-resume or example subprocess. Every compilation
is cached (no minimum compile time). Set `JAX_COMPILATION_CACHE_DIR`
yourself to keep or share the cache, or to an empty string to turn it off.
"""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)
os.environ.setdefault("OMP_NUM_THREADS", "1")
_JAX_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="keras_dib_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_addoption(parser):
    parser.addoption(
        "--run_large",
        action="store_true",
        default=False,
        help="also run the tests marked `large` (subprocess, real-data, "
        "example and benchmark tests)",
    )
    parser.addoption(
        "--backend_free_on",
        default=None,
        choices=("tensorflow", "jax", "torch"),
        help="run the tests marked `backend_free` only on this Keras "
        "backend (deselect them on the others)",
    )


def pytest_collection_modifyitems(config, items):
    backend_free_on = config.getoption("--backend_free_on")
    if backend_free_on:
        import keras

        if keras.backend.backend() != backend_free_on:
            free = [i for i in items if i.get_closest_marker("backend_free")]
            config.hook.pytest_deselected(items=free)
            items[:] = [i for i in items if i not in free]
    if config.getoption("--run_large"):
        return
    skip_large = pytest.mark.skip(reason="large: run with --run_large")
    for item in items:
        if item.get_closest_marker("large"):
            item.add_marker(skip_large)


def pytest_unconfigure(config):
    if _JAX_CACHE:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)

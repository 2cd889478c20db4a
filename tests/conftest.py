"""Test tiers (markers registered in pyproject.toml).

- Default tier: every test not marked `large`. `pytest tests` runs it (the
  `large` tests are reported as skipped).
- `large`: tests that start fresh Python interpreters (examples, benchmarks,
  kill-and-resume, distribution, cross-backend loading) or read the real
  data sets in ../shared/data. `pytest tests --run_large` adds them; CI
  runs every tier.
- `backend_free`: tests whose result does not depend on the Keras backend
  (data loading and caching, plots). They run in every pass by default;
  CI runs them in one backend's pass only (`-m "not backend_free"` in the
  others).
"""

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--run_large",
        action="store_true",
        default=False,
        help="also run the tests marked `large` (subprocess, real-data, "
        "example and benchmark tests)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run_large"):
        return
    skip_large = pytest.mark.skip(reason="large: run with --run_large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)

"""The real data sets in ../shared/data, decoded once per test process.

The tests that train or export on real GTSRB images share one decoded copy
(`gtsrb()`, no disk cache: nothing is written outside the test's folders)
instead of each decoding the archives again. The arrays are read-only, so a
test cannot change what the next one sees.
"""

import functools
import os

from keras_dib.testing.test_case import shared_data_dir


def shared_dir(name):
    """`../shared/data/<name>` when that folder exists, else None."""
    root = shared_data_dir()
    path = root and os.path.join(root, name)
    return path if path and os.path.isdir(path) else None


@functools.cache
def gtsrb():
    """`load_gtsrb`'s arrays of the shared copy, or None without it."""
    path = shared_dir("gtsrb")
    if path is None:
        return None
    from keras_dib.datasets import load_gtsrb

    (x_train, y_train, tracks), (x_test, y_test) = load_gtsrb(path, cache=False)
    for array in (x_train, y_train, tracks, x_test, y_test):
        array.setflags(write=False)
    return (x_train, y_train, tracks), (x_test, y_test)

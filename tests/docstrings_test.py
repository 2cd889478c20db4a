"""Every `>>>` example in keras_dib's docstrings runs.

The docstrings of every module of the package (`pkgutil.walk_packages`),
private modules (`keras_dib._compat`, `keras_dib.ops._tensors`, ...)
included: their examples document helpers the library's own code relies
on, and they run like the others (importing the private name in the
example). One test per docstring with examples, named by its qualified
name, run by `doctest` with `ELLIPSIS` and `NORMALIZE_WHITESPACE` on fresh
globals holding only `keras`, `keras_dib`, `np` (NumPy) and `ops`
(`keras.ops`): every other name an example uses is defined in the example
itself. Outputs are written so that every backend prints the same (Python
floats rounded, shapes as tuples, comparisons as booleans).

The examples are kept small (widths 4 to 8, a few samples, one epoch a
block) so that the whole module runs in well under a minute. Files they
write go to folders from `tempfile.mkdtemp()`. Lines marked
`# doctest: +SKIP`, and why:

- `keras_dib.export.export_for_serving`: the export itself, which on JAX
  and torch starts a TensorFlow subprocess to write the SavedModel (about
  10 s and a second interpreter); `tests/export_test.py` covers it. The
  example still builds the model it would export.

Result independent of the backend (`backend_free`): CI runs it in the
torch pass only; it passes on JAX and TensorFlow too.
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_dib

pytestmark = pytest.mark.backend_free

MIN_DOCSTRINGS = 40


def _docstrings_with_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    modules = [keras_dib] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(keras_dib.__path__, "keras_dib.")
    ]
    for module in modules:
        for test in finder.find(module):
            if test.examples:
                tests[test.name] = test
    return [tests[name] for name in sorted(tests)]


DOCSTRINGS = _docstrings_with_examples()


def test_docstrings_are_collected():
    assert len(DOCSTRINGS) >= MIN_DOCSTRINGS, [t.name for t in DOCSTRINGS]


@pytest.mark.parametrize("test", DOCSTRINGS, ids=[t.name for t in DOCSTRINGS])
def test_docstring_examples_run(test):
    test.globs = {
        "keras": keras,
        "keras_dib": keras_dib,
        "np": np,
        "ops": keras.ops,
    }
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report = []
    try:
        result = runner.run(test, out=report.append, clear_globs=True)
    finally:
        keras.backend.clear_session()
    skipped = [e for e in test.examples if e.options.get(doctest.SKIP)]
    assert result.attempted == len(test.examples) - len(skipped)
    if result.failed:
        pytest.fail("".join(report), pytrace=False)

"""The public API: every exported name is documented and registered."""

import inspect

import keras
import pytest

import keras_dib

MODULES = [
    keras_dib,
    keras_dib.losses,
    keras_dib.models,
    keras_dib.ops,
    keras_dib.datasets,
    keras_dib.analysis,
    keras_dib.callbacks,
    keras_dib.recipes,
]
EXPORTS = [
    (module.__name__, name, getattr(module, name))
    for module in MODULES
    for name in module.__all__
]


def test_all_public_names_are_exported():
    # (Every name in `__all__` exists: EXPORTS above getattr's each one.)
    for module in MODULES:
        assert len(set(module.__all__)) == len(module.__all__), module
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
        }
        missing = public - set(module.__all__)
        assert not missing, f"{module.__name__}: not in __all__: {missing}"


@pytest.mark.parametrize(
    "module_name, name, obj",
    [e for e in EXPORTS if inspect.isfunction(e[2]) or inspect.isclass(e[2])],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_documented(module_name, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{module_name}.{name} has no docstring"
    summary = doc.strip().splitlines()[0]
    assert summary.endswith("."), f"{module_name}.{name}: {summary!r}"
    if inspect.isclass(obj) or inspect.signature(obj).parameters:
        assert "Args:" in doc, f"{module_name}.{name} documents no Args"


@pytest.mark.parametrize(
    "module_name, name, obj",
    [
        e
        for e in EXPORTS
        if inspect.isclass(e[2])
        and issubclass(e[2], (keras.layers.Layer, keras.losses.Loss))
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_registered(module_name, name, obj):
    registered = keras.saving.get_registered_name(obj)
    assert registered.startswith("keras_dib>"), (module_name, registered)
    assert keras.saving.get_registered_object(registered) is obj


def test_version():
    assert isinstance(keras_dib.__version__, str)
    assert keras_dib.__version__.count(".") >= 1

"""Tests for vicourse.runtime: the environment check and the description."""

import importlib
import platform

import pytest

import vicourse
from vicourse import runtime


def test_describe_lists_versions_and_devices():
    text = vicourse.runtime.describe()
    assert f"Python {platform.python_version()}" in text
    for name in ("tensorflow", "tensorflow-probability", "tf-keras"):
        assert f"{name} {runtime._version(name)}" in text
    assert "devices: " in text and "CPU:0" in text


def test_check_environment_names_missing_package_and_fix(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "tf_keras":
            raise ImportError("No module named 'tf_keras'")
        return real_import(name, *args)

    monkeypatch.setattr(runtime.importlib, "import_module", fake_import)
    message = r'`tf-keras`.*pip install "tf-keras>=2.16"'
    with pytest.raises(runtime.MissingDependencyError, match=message):
        runtime.check_environment()


def test_check_environment_explains_tfp_needs_tf_keras(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "tensorflow_probability":
            raise ImportError("Keras 3 found")
        return real_import(name, *args)

    monkeypatch.setattr(runtime.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match="TFP imports tf_keras: Keras 3 on its own is not enough"):
        runtime.check_environment()


def test_check_environment_passes_here():
    assert runtime.check_environment() is None


def test_mismatched_tf_keras_is_explained():
    with pytest.raises(runtime.MissingDependencyError, match=r'tf-keras 2.19.0 does not match '
                       r'TensorFlow 2.21.0.*pip install "tf-keras~=2.21.0"'):
        runtime._check_keras_matches_tensorflow("2.21.0", "2.19.0")
    runtime._check_keras_matches_tensorflow("2.19.1", "2.19.0")  # same minor: fine
    runtime._check_keras_matches_tensorflow("2.21.0-rc1", "2.21.0")

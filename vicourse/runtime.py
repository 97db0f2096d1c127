"""Runtime checks: is the TensorFlow stack importable, and what does it run on.

The course needs TensorFlow 2, TensorFlow Probability and ``tf_keras`` (the Keras 2 package
that TFP imports; Keras 3 alone breaks TFP). :func:`check_environment` names what is missing
and the ``pip`` command that fixes it; :func:`describe` prints the versions and devices.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform

__all__ = ["check_environment", "describe", "MissingDependencyError"]

# Quiet TensorFlow's C++ start-up banner unless the user has chosen a level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_REQUIREMENTS = (
    ("tensorflow", "tensorflow", "tensorflow>=2.16"),
    ("tf_keras", "tf-keras", "tf-keras>=2.16 (the same minor version as tensorflow)"),
    ("tensorflow_probability", "tensorflow-probability", "tensorflow-probability>=0.24"),
)


class MissingDependencyError(ImportError):
    """Raised when a package the course needs cannot be imported."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _check_keras_matches_tensorflow(tf_version: str, keras_version: str) -> None:
    """tf-keras is released in step with TensorFlow: the two must share a minor version."""
    tf_minor, keras_minor = _minor(tf_version), _minor(keras_version)
    if tf_minor and keras_minor and tf_minor != keras_minor:
        wanted = f"{tf_minor[0]}.{tf_minor[1]}"
        raise MissingDependencyError(
            f"tf-keras {keras_version} does not match TensorFlow {tf_version}: tf-keras is "
            f"released with each TensorFlow version and must have the same minor version. "
            f'Fix: pip install "tf-keras~={wanted}.0" (or install the TensorFlow version '
            f"that matches your tf-keras)."
        )


def check_environment() -> None:
    """Check that TensorFlow, tf-keras and TensorFlow Probability import together.

    Colab ships all three (for example TensorFlow 2.19, tf-keras 2.19 and TFP 0.25 in its
    2026.01 runtime), and the package's version ranges admit them, so installing
    ``vicourse`` there neither upgrades nor downgrades them.

    Raises
    ------
    MissingDependencyError
        A subclass of ``ImportError`` whose message names the missing, broken or
        mismatched package and the ``pip install`` command that fixes it.
    """
    for module, dist, spec in _REQUIREMENTS:
        try:
            importlib.import_module(module)
        except ImportError as err:
            hint = ""
            if module == "tensorflow_probability":
                hint = " TFP imports tf_keras: Keras 3 on its own is not enough."
            raise MissingDependencyError(
                f"vicourse needs the package `{dist}`, which failed to import ({err}).{hint} "
                f'Fix: pip install "{spec.split(" ")[0]}"'
            ) from err
    tensorflow = importlib.import_module("tensorflow")
    tf_keras = importlib.import_module("tf_keras")
    _check_keras_matches_tensorflow(
        getattr(tensorflow, "__version__", ""), getattr(tf_keras, "__version__", "")
    )


def _devices() -> list[str]:
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices():
        label = device.name.replace("/physical_device:", "")
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            label += f" ({details.get('device_name', 'unknown GPU')})"
        names.append(label)
    return names


def describe() -> str:
    """A short report of the Python, TensorFlow, TFP and tf-keras versions and the devices.

    Returns
    -------
    str
        Several lines, for example ``"Python 3.11.7 | TensorFlow 2.21.0 | ..."`` then
        ``"devices: CPU:0"`` (a GPU is listed with its name when TensorFlow sees one).
    """
    check_environment()
    versions = " | ".join(
        [f"Python {platform.python_version()}"]
        + [
            f"{dist} {_version(dist)}"
            for dist in ("tensorflow", "tensorflow-probability", "tf-keras")
        ]
    )
    devices = _devices()
    gpu = "yes" if any("GPU" in d for d in devices) else "no (CPU only)"
    return f"{versions}\ndevices: {', '.join(devices)}\nGPU: {gpu}"

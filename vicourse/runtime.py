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


def check_environment() -> None:
    """Check that TensorFlow, tf-keras and TensorFlow Probability import together.

    Raises
    ------
    MissingDependencyError
        A subclass of ``ImportError`` whose message names the missing or broken package
        and the ``pip install`` command that fixes it.
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

"""Input validation shared by the public functions (private).

Every check raises ``ValueError`` or ``TypeError`` with a message that names the argument and
says what to fix. Checks that need tensor *values* (finiteness, positivity) run only when the
value is concrete (eager mode); inside a traced ``tf.function`` only static shapes are checked.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "as_float_tensor",
    "as_points",
    "check_distribution",
    "mean_and_stderr",
    "check_finite",
    "check_positive",
    "check_positive_int",
    "common_float_dtype",
]

_FLOAT_DTYPES = (tf.float32, tf.float64)


def common_float_dtype(*values) -> tf.DType:
    """The float dtype the inputs should share: float64 if any input is float64, else float32."""
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            continue
        if tf.as_dtype(dtype) == tf.float64:
            return tf.float64
    return tf.float32


def _is_boolean(value) -> bool:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except ValueError:  # ragged nesting: conversion below reports it
            return False
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)) == np.bool_


def as_float_tensor(value, name: str, dtype: tf.DType | None = None) -> tf.Tensor:
    """Convert ``value`` to a float32 or float64 tensor, or raise ``TypeError`` naming ``name``."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be numeric (an array or a number), got a string {value!r}.")
    if _is_boolean(value):
        raise TypeError(
            f"`{name}` must hold real numbers, got booleans. "
            f"Convert it with np.asarray({name}, dtype=float)."
        )
    try:
        tensor = tf.convert_to_tensor(value, dtype_hint=dtype or tf.float32)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must be numeric (an array or a number) and rectangular, got "
            f"{type(value).__name__}: {err}"
        ) from None
    if tensor.dtype == tf.bool or tensor.dtype == tf.string or tensor.dtype.is_complex:
        raise TypeError(
            f"`{name}` must hold real numbers, got dtype {tensor.dtype.name}. "
            f"Convert it with np.asarray({name}, dtype=float)."
        )
    if dtype is None:
        dtype = tensor.dtype if tensor.dtype in _FLOAT_DTYPES else tf.float32
    return tf.cast(tensor, dtype)


def _concrete(tensor):
    """The NumPy value of ``tensor`` if it has one (eager), else ``None`` (symbolic)."""
    if isinstance(tensor, tf.Tensor) and not hasattr(tensor, "numpy"):
        return None
    try:
        return np.asarray(tensor)
    except (TypeError, ValueError, NotImplementedError):
        return None


def check_finite(tensor: tf.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values."""
    value = _concrete(tensor)
    if value is not None and not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ValueError(
            f"`{name}` contains {bad} NaN or infinite value(s). Remove or impute them first."
        )


def check_positive(tensor: tf.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``tensor`` is finite and strictly positive."""
    check_finite(tensor, name)
    value = _concrete(tensor)
    if value is not None and not np.all(value > 0):
        raise ValueError(
            f"`{name}` must be strictly positive (it is a scale), got {np.min(value)!r} "
            f"as its smallest value."
        )


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer, else raise with the fix."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}.")
    return int(value)


def as_points(x, name: str = "x") -> tf.Tensor:
    """Validate data points: shape [N] (read as D = 1) or [N, D], non-empty, finite."""
    x = as_float_tensor(x, name, common_float_dtype(x))
    if x.shape.rank == 1:
        x = x[:, tf.newaxis]
    if x.shape.rank != 2:
        raise ValueError(
            f"`{name}` must have shape [N] or [N, D], got shape {x.shape.as_list()}. "
            "Reshape it so that rows are observations."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape.as_list()}); pass at least one point.")
    check_finite(x, name)
    return x


def check_distribution(value, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a TFP distribution."""
    if not isinstance(value, tfp.distributions.Distribution):
        raise TypeError(
            f"`{name}` must be a tfp.distributions.Distribution, got {type(value).__name__}. "
            f"Wrap it, e.g. tfd.Normal(loc, scale)."
        )


def mean_and_stderr(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Monte Carlo mean over axis 0 and its standard error, sd / sqrt(S) (unbiased sd)."""
    num = tf.cast(tf.shape(values)[0], values.dtype)
    mean = tf.reduce_mean(values, axis=0)
    stderr = tf.math.reduce_std(values, axis=0) * tf.sqrt(num / (num - 1.0)) / tf.sqrt(num)
    return mean, stderr

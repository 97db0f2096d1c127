"""Input validation shared by the public functions (private).

Every public function checks its inputs here, up front, and every check raises
``ValueError`` (a bad value or shape) or ``TypeError`` (a bad type or dtype) with a message
that names the argument as the function's signature does and says what to fix.
``tests/test_contract.py`` runs every public function through one battery of bad inputs.

Checks that need tensor *values* (finiteness, positivity) run when the value is concrete
(eager mode, NumPy or Python input); inside a traced ``tf.function`` only static shapes and
dtypes are checked.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "MAX_INT32",
    "as_float_tensor",
    "as_matrix",
    "as_points",
    "call_distribution",
    "built_distribution",
    "built_mixture",
    "call_log_density",
    "check_batch_shape",
    "check_bool",
    "check_choice",
    "check_count",
    "check_distribution",
    "check_event_vector",
    "check_finite",
    "check_min_count",
    "check_options",
    "check_finite_result",
    "check_minibatches",
    "check_mean_field",
    "check_positive",
    "check_real",
    "check_sample_budget",
    "check_same_space",
    "check_scalar_batch",
    "check_shape",
    "check_strategy",
    "check_support",
    "common_float_dtype",
    "default_tolerance",
    "joint_components",
    "mean_and_stderr",
]

MAX_INT32 = 2**31 - 1
"""Largest count TensorFlow's int32 loop counters and shapes hold without wrapping."""

_FLOAT_DTYPES = (tf.float32, tf.float64)


def common_float_dtype(*values) -> tf.DType:
    """The float dtype the inputs should share: float64 if any input is float64, else float32.

    Python floats carry no dtype; integers are converted to float32 unless another input is
    float64.
    """
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            continue
        try:
            if tf.as_dtype(dtype) == tf.float64:
                return tf.float64
        except TypeError:  # an object dtype, for example; conversion reports it later
            continue
    return tf.float32


def _numpy_dtype(value):
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (ValueError, TypeError):  # ragged nesting: conversion below reports it
            return None
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        return None


def as_float_tensor(value, name: str, dtype: tf.DType | None = None) -> tf.Tensor:
    """Convert ``value`` to a float32 or float64 tensor, or raise ``TypeError`` naming ``name``.

    Integers are accepted and converted; booleans, strings, complex numbers and ``None`` are
    not.
    """
    if value is None:
        raise TypeError(f"`{name}` is required and must be numeric, got None.")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be numeric (an array or a number), got a string {value!r}.")
    np_dtype = _numpy_dtype(value)
    if np_dtype is not None and (np_dtype == np.bool_ or np_dtype.kind in "cUS"):
        kind = "booleans" if np_dtype == np.bool_ else f"dtype {np_dtype.name}"
        raise TypeError(
            f"`{name}` must hold real numbers, got {kind}. "
            f"Convert it with np.asarray({name}, dtype=float)."
        )
    try:
        tensor = tf.convert_to_tensor(value, dtype_hint=dtype or tf.float32)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must be numeric (an array or a number) and rectangular, got "
            f"{type(value).__name__}: {err}"
        ) from None
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
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


def check_finite(tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values."""
    value = _concrete(tensor)
    if value is not None and not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ValueError(
            f"`{name}` contains {bad} NaN or infinite value(s). Remove or impute them first."
        )


def check_positive(tensor, name: str, what: str = "it is a scale") -> None:
    """Raise ``ValueError`` unless every entry of ``tensor`` is finite and strictly positive."""
    check_finite(tensor, name)
    value = _concrete(tensor)
    if value is not None and not np.all(value > 0):
        raise ValueError(
            f"`{name}` must be strictly positive ({what}), got {np.min(value)!r} "
            f"as its smallest value."
        )


def check_shape(tensor: tf.Tensor, name: str, shape: Sequence[int], meaning: str = "") -> None:
    """Raise ``ValueError`` unless ``tensor`` has exactly ``shape`` (no broadcasting)."""
    shape = list(shape)
    if tensor.shape.rank is None or tensor.shape.as_list() != shape:
        detail = f" ({meaning})" if meaning else ""
        raise ValueError(
            f"`{name}` must have shape {shape}{detail}, got shape {tensor.shape.as_list()}. "
            "Nothing is broadcast: pass exactly this shape."
        )


def check_batch_shape(tensor: tf.Tensor, name: str, batch_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a scalar or has exactly ``batch_shape``."""
    batch_shape = list(batch_shape)
    if tensor.shape.rank == 0 or tensor.shape.as_list() == batch_shape:
        return
    raise ValueError(
        f"`{name}` must be a scalar or have the batch shape {batch_shape}, got shape "
        f"{tensor.shape.as_list()}. Nothing is broadcast: a parameter of another shape "
        "would silently turn one problem into many."
    )


def check_count(
    value, name: str, minimum: int = 1, maximum: int = MAX_INT32, why: str | None = None
) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``.

    ``why`` explains a ``maximum`` other than int32's (it replaces the generic reason).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int, got {type(value).__name__} {value!r}. "
            f"Pass e.g. {name}={max(minimum, 1) * 10}."
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    if value > maximum:
        if why is not None:
            raise ValueError(f"`{name}` must be at most {maximum:,} ({why}), got {value:,}.")
        reason = (
            "it would overflow TensorFlow's int32 counters and shapes"
            if maximum == MAX_INT32
            else "that is the documented limit"
        )
        raise ValueError(
            f"`{name}` must be at most {maximum:,} ({reason}), got {value:,}. "
            "Use a smaller value, or run the work in several calls."
        )
    return value


def check_real(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    why: str = "",
) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number in the given range.

    ``why``, if given, says in the error message where the range comes from.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        array = _concrete(value)
        if (
            array is None
            or array.shape != ()
            or array.dtype == np.bool_
            or array.dtype.kind not in "fiu"
        ):
            raise TypeError(
                f"`{name}` must be a real number, got {type(value).__name__} {value!r}."
            )
        value = array.item()
    value = float(value)
    lo = "" if low is None else (f">= {low}" if low_inclusive else f"> {low}")
    hi = "" if high is None else (f"<= {high}" if high_inclusive else f"< {high}")
    wanted = " and ".join(part for part in (lo, hi) if part) or "finite"
    if why:
        wanted = f"{wanted} ({why})"
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number ({wanted}), got {value}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"`{name}` must be {wanted}, got {value}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"`{name}` must be {wanted}, got {value}.")
    return value


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


def check_choice(value, name: str, choices: Sequence[str], hint: str = "") -> str:
    """Return ``value`` if it is one of ``choices``; the error lists them (and ``hint``)."""
    if not isinstance(value, str) or value not in choices:
        detail = f" ({hint})" if hint else ""
        raise ValueError(f"`{name}` must be one of {tuple(choices)}{detail}, got {value!r}.")
    return value


def default_tolerance(dtype: tf.DType, float64: float, float32: float) -> float:
    """A convergence tolerance that the dtype can resolve."""
    return float64 if dtype == tf.float64 else float32


def as_points(x, name: str = "x") -> tf.Tensor:
    """Validate data points: shape [N] (read as D = 1) or [N, D], non-empty, finite.

    Integer data are accepted and converted to float32 (float64 input stays float64).
    """
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


def as_matrix(x, name: str = "x", dtype: tf.DType | None = None) -> tf.Tensor:
    """Validate a data matrix: exactly shape [N, D] (rows are data points), non-empty, finite.

    Unlike :func:`as_points`, a vector is not read as D = 1: a model whose input layer has
    D units needs rows of D numbers. Integers are converted (to ``dtype``, else float32).
    """
    x = as_float_tensor(x, name, dtype or common_float_dtype(x))
    if x.shape.rank != 2:
        raise ValueError(
            f"`{name}` must have shape [N, D] (one row per data point, images flattened), got "
            f"shape {x.shape.as_list()}. Reshape it, e.g. {name}.reshape(len({name}), -1)."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape.as_list()}); pass at least one row.")
    check_finite(x, name)
    return x


def check_minibatches(dataset, name: str, batch_size: int) -> tf.TensorSpec:
    """Check that ``dataset`` is a ``tf.data.Dataset`` of float minibatches of shape
    ``[batch_size, D]`` (static), and return its element spec.

    Only the element spec is checked here: the values are read later, so their finiteness
    is checked on the results (:func:`check_finite_result`).
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`{name}` must be a tf.data.Dataset, got {type(dataset).__name__}.")
    spec = dataset.element_spec
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            f"`{name}` must yield single tensors of shape [B, D], got elements {spec}. "
            f"Map it to the data alone, e.g. {name}.map(lambda x, y: x)."
        )
    if spec.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must yield float32 or float64 minibatches, got {spec.dtype.name}. "
            f"Convert them, e.g. {name}.map(lambda x: tf.cast(x, tf.float32))."
        )
    shape = spec.shape
    if shape.rank != 2 or shape[1] is None or shape[1] == 0 or shape[0] != batch_size:
        raise ValueError(
            f"`{name}` must yield minibatches of the static shape [batch_size, D] = "
            f"[{batch_size}, D], got {shape}. Batch it with "
            f".batch({batch_size}, drop_remainder=True), so that every minibatch is full."
        )
    return spec


def check_finite_result(tensors, name: str, detail: str) -> None:
    """Raise ``ValueError`` naming ``name`` if a result computed from it is not finite.

    For inputs whose values cannot be checked up front (a ``tf.data.Dataset`` is read
    while the algorithm runs); ``detail`` says where the problem appeared.
    """
    for tensor in tf.nest.flatten(tensors):
        value = _concrete(tensor)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(
                f"`{name}` yielded NaN or infinite values: the fit became non-finite "
                f"{detail}. Remove or impute them in the pipeline first."
            )


# ---------------------------------------------------------------------------------------
# Distributions and user callables
# ---------------------------------------------------------------------------------------


def _float_parameters(distribution, prefix=""):
    """Yield ``(name, tensor)`` for every floating-point parameter, nested ones included."""
    for key, value in distribution.parameters.items():
        if value is None or key in ("validate_args", "allow_nan_stats", "name"):
            continue
        label = f"{prefix}{key}"
        if isinstance(value, tfp.distributions.Distribution):
            yield from _float_parameters(value, prefix=f"{label}.")
            continue
        if isinstance(value, (tfp.bijectors.Bijector, str, bool)) or callable(value):
            continue
        try:
            tensor = tf.convert_to_tensor(value)
        except (TypeError, ValueError):
            continue
        if tensor.dtype.is_floating:
            yield label, tensor


def built_distribution(value):
    """``value`` if it is a distribution; the distribution a TFP ``DeferredModule`` builds
    (what the ``tfp.experimental.vi`` surrogate builders return); else ``None``."""
    if isinstance(value, tfp.distributions.Distribution):
        return value
    if isinstance(value, tfp.experimental.util.DeferredModule):
        built = value._build_module()  # noqa: SLF001 (TFP has no public accessor)
        if isinstance(built, tfp.distributions.Distribution):
            return built
    return None


def check_distribution(value, name: str) -> None:
    """Raise unless ``value`` is a TFP distribution with finite, valid parameters.

    The parameters are checked once, eagerly: non-finite values raise, and a copy with
    ``validate_args=True`` runs TFP's own checks (a negative scale, for example), so that
    invalid parameters never come back as a silent NaN. A ``DeferredModule`` that builds a
    distribution (the ``tfp.experimental.vi`` builders return one) is accepted.
    """
    built = built_distribution(value)
    if built is None:
        raise TypeError(
            f"`{name}` must be a tfp.distributions.Distribution, got {type(value).__name__}. "
            f"Wrap it, e.g. tfd.Normal(loc, scale)."
        )
    if not tf.executing_eagerly():
        return
    value = built
    for label, tensor in _float_parameters(value):
        array = _concrete(tensor)
        if array is not None and not np.all(np.isfinite(array)):
            raise ValueError(
                f"`{name}` has a NaN or infinite parameter `{label}`. "
                "Build it from finite parameters."
            )
    try:
        value.copy(validate_args=True)
    except (tf.errors.InvalidArgumentError, ValueError) as err:
        detail = str(err).strip().splitlines()[0][:200]
        raise ValueError(
            f"`{name}` has invalid parameters: {detail}. Build it with valid parameters "
            "(for example a positive scale)."
        ) from None


def joint_components(distribution) -> list | None:
    """``[(label, component), ...]`` of a joint distribution whose components are all
    distributions (in ``tf.nest.flatten`` order, the order of its samples' parts), or
    ``None`` if ``distribution`` is not a joint distribution."""
    if not isinstance(distribution, tfp.distributions.JointDistribution):
        return None
    model = getattr(distribution, "model", None)
    if isinstance(model, Mapping):
        labels = tf.nest.flatten(type(model)((key, str(key)) for key in model))
    elif hasattr(model, "_fields"):  # a namedtuple
        labels = list(model._fields)
    elif isinstance(model, (list, tuple)):
        labels = [str(i) for i in range(len(model))]
    else:
        return []  # a coroutine model: no static list of components
    return list(zip(labels, tf.nest.flatten(model), strict=True))


def check_mean_field(distribution, name: str) -> None:
    """Raise unless ``distribution`` is a product of independent parts: a joint distribution
    (``JointDistributionNamed``/``Sequential``) whose components are all distributions, none
    depending on another, or any other (single) distribution."""
    built = built_distribution(distribution)
    components = joint_components(built)
    if components is None:
        return
    dependent = [
        label for label, part in components if not isinstance(part, tfp.distributions.Distribution)
    ]
    if not components or dependent:
        which = f" (components {dependent} depend on others)" if dependent else ""
        raise ValueError(
            f"`{name}` must be mean-field, a product of independent factors{which}. Build it "
            "as a tfd.JointDistributionNamed or tfd.JointDistributionSequential of "
            "distributions, each a tfd.Independent of per-coordinate factors."
        )


def check_same_space(first, second, names: tuple[str, str], *, batch: bool = True) -> None:
    """Raise unless two distributions share an event shape, a dtype and (if ``batch``) a
    batch shape. Nothing is broadcast between them."""
    a, b = names
    if first.event_shape.is_fully_defined() and second.event_shape.is_fully_defined():
        if first.event_shape != second.event_shape:
            raise ValueError(
                f"`{a}` and `{b}` must have the same event shape, got "
                f"{first.event_shape.as_list()} and {second.event_shape.as_list()}. "
                "Compare distributions over the same space."
            )
    if batch and first.batch_shape.is_fully_defined() and second.batch_shape.is_fully_defined():
        if first.batch_shape != second.batch_shape:
            raise ValueError(
                f"`{a}` and `{b}` must have the same batch shape, got "
                f"{first.batch_shape.as_list()} and {second.batch_shape.as_list()}. "
                "Nothing is broadcast: build both with the same batch shape."
            )
    if first.dtype != second.dtype:
        raise TypeError(
            f"`{a}` and `{b}` must have the same dtype, got {first.dtype.name} and "
            f"{second.dtype.name}. Build both from float64 (or both from float32) parameters."
        )


def _shape_list(shape):
    """A TensorShape, or a joint distribution's structure of them, with plain lists."""
    if isinstance(shape, tf.TensorShape):
        return shape.as_list()
    return tf.nest.map_structure(lambda part: tf.TensorShape(part).as_list(), shape)


def _num_elements(shape) -> int:
    total = 1
    for dim in tf.TensorShape(shape).as_list():
        total *= dim if dim is not None else 1
    return total


def check_scalar_batch(distribution, name: str) -> None:
    """Raise unless ``distribution`` has batch shape [] (one problem at a time); for a joint
    distribution, every component's batch shape must be []."""
    shapes = tf.nest.flatten(distribution.batch_shape)
    if any(tf.TensorShape(shape).rank != 0 for shape in shapes):
        raise ValueError(
            f"`{name}` must have batch shape [], got {_shape_list(distribution.batch_shape)}. "
            "Fit one problem at a time; tfd.Independent turns a batch into an event."
        )


def check_sample_budget(num_samples: int, distribution, name: str = "num_samples") -> None:
    """Raise ``ValueError`` if ``num_samples`` draws would not fit in one int32-indexed tensor."""
    # A joint distribution has one event shape (and batch shape) per part.
    batch = max(_num_elements(part) for part in tf.nest.flatten(distribution.batch_shape))
    event = sum(_num_elements(part) for part in tf.nest.flatten(distribution.event_shape))
    per_draw = batch * event
    if num_samples * per_draw > MAX_INT32:
        raise ValueError(
            f"`{name}` = {num_samples:,} draws of {per_draw:,} numbers each would need a tensor "
            f"of {num_samples * per_draw:,} elements, more than TensorFlow indexes "
            f"({MAX_INT32:,}). Use fewer samples, or average several calls."
        )


def _describe_sample(z) -> str:
    """'shape [S, ...] and dtype ...' of a sample, or of each part of a joint sample."""
    parts = tf.nest.flatten(z)
    if len(parts) == 1 and not tf.nest.is_nested(z):
        return f"shape {parts[0].shape.as_list()} and dtype {parts[0].dtype.name}"
    shapes = tf.nest.map_structure(lambda v: f"{v.shape.as_list()} {v.dtype.name}", z)
    return f"parts {shapes}"


def call_log_density(
    fn: Callable,
    z: tf.Tensor,
    name: str,
    expected_shape: Sequence[int],
    dtype: tf.DType,
    source: str,
    what: str = "one value per sample",
    layout: str = "[S, *batch]",
) -> tf.Tensor:
    """Call a user's log-density on ``z`` and check its output before any arithmetic.

    The result must have exactly ``expected_shape`` (``[S, *batch]``, or the ``layout`` that
    ``what`` describes) and ``dtype``: a shape such as ``[S, 1]`` would otherwise broadcast against
    ``[S]`` into ``[S, S]``. ``z`` may be a structure (a joint distribution's sample).
    """
    if not callable(fn):
        raise TypeError(
            f"`{name}` must be callable (z -> log-density of shape [S, *batch]), got "
            f"{type(fn).__name__}."
        )
    z_dtype = tf.nest.flatten(z)[0].dtype
    try:
        value = fn(z)
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise TypeError(
            f"`{name}` failed when called on z of {_describe_sample(z)} (drawn from "
            f"`{source}`): {detail}. Check that it accepts a batch of samples on the first "
            f"axis and computes in {z_dtype.name}; build `{source}` from parameters of your "
            "model's dtype."
        ) from err
    try:
        value = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must return a tensor, got {type(value).__name__}.") from err
    if value.dtype != dtype:
        raise TypeError(
            f"`{name}` returned dtype {value.dtype.name}, but `{source}` is {dtype.name}. "
            f"Build `{source}` from {value.dtype.name} parameters (or compute the "
            f"log-density in {dtype.name})."
        )
    expected = list(expected_shape)
    if value.shape.rank is not None and value.shape.as_list() != expected:
        raise ValueError(
            f"`{name}` must return {what}, shape {expected} ({layout}), got shape "
            f"{value.shape.as_list()}. Sum over data points and event axes inside it; "
            "nothing is broadcast."
        )
    return value


def mean_and_stderr(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Monte Carlo mean over axis 0 and its standard error, sd / sqrt(S) (unbiased sd)."""
    num = tf.cast(tf.shape(values)[0], values.dtype)
    mean = tf.reduce_mean(values, axis=0)
    stderr = tf.math.reduce_std(values, axis=0) * tf.sqrt(num / (num - 1.0)) / tf.sqrt(num)
    return mean, stderr


def call_distribution(
    fn: Callable,
    arg: tf.Tensor,
    name: str,
    batch_shape: Sequence[int],
    event_shape: Sequence[int],
    dtype: tf.DType,
    *,
    what: str,
    source: str,
):
    """Call a user callable that must return a TFP distribution, and check it.

    ``fn(arg)`` must return a ``tfp.distributions.Distribution`` of exactly ``batch_shape``
    and ``event_shape`` (nothing is broadcast) and of ``dtype`` (the dtype of ``source``).
    ``what`` says what the distribution is, for the message (e.g. "q(z | x)").
    """
    if not callable(fn):
        raise TypeError(
            f"`{name}` must be callable (it maps a tensor to {what}, a TFP distribution), got "
            f"{type(fn).__name__}."
        )
    try:
        value = fn(arg)
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise TypeError(
            f"`{name}` failed when called on a tensor of shape {arg.shape.as_list()} and dtype "
            f"{arg.dtype.name}: {detail}. It must accept a batch on the leading axes and return "
            f"{what}."
        ) from err
    if not isinstance(value, tfp.distributions.Distribution):
        raise TypeError(
            f"`{name}` must return {what} as a tfp.distributions.Distribution, got "
            f"{type(value).__name__}."
        )
    if value.dtype != dtype:
        raise TypeError(
            f"`{name}` returned a distribution of dtype {value.dtype.name}, but `{source}` is "
            f"{dtype.name}. Build both in the same dtype."
        )
    batch_shape, event_shape = list(batch_shape), list(event_shape)
    got_batch, got_event = value.batch_shape, value.event_shape
    if got_batch.as_list() != batch_shape or got_event.as_list() != event_shape:
        raise ValueError(
            f"`{name}` must return {what} with batch shape {batch_shape} and event shape "
            f"{event_shape}, got batch shape {got_batch} and event shape {got_event} "
            f"({type(value).__name__}). Nothing is broadcast: wrap per-coordinate "
            "distributions in tfd.Independent(..., reinterpreted_batch_ndims=1) so that the "
            "last axis is the event."
        )
    return value


def _support_base(distribution):
    """The innermost distribution of ``Independent`` / ``Sample`` wrappers."""
    while isinstance(distribution, (tfp.distributions.Independent, tfp.distributions.Sample)):
        distribution = distribution.distribution
    return distribution


def check_support(
    distribution, x, name: str, data_name: str = "x", *, check_log_prob: bool = True
) -> None:
    """Raise ``ValueError`` if the data ``x`` lie outside the support of ``distribution``.

    Discrete likelihoods are checked by their support: a Bernoulli needs values in
    {0, 1}, a Binomial integers in [0, total_count], a Poisson non-negative integers. With
    ``check_log_prob`` (``x`` must then match the distribution's shape), any likelihood
    must also give a finite log-density at ``x``. (Without this check a Bernoulli
    evaluated at 16 returns a finite but meaningless number.)
    """
    values = _concrete(x)
    if values is None:
        return
    base = _support_base(distribution)
    family = type(base).__name__
    fix = (
        "Use a likelihood whose support holds the data (make_decoder(..., likelihood=...)), "
        "or transform the data"
    )
    if isinstance(base, tfp.distributions.Bernoulli):
        bad = values[(values != 0) & (values != 1)]
        if bad.size:
            raise ValueError(
                f"`{name}` returns a Bernoulli likelihood, whose support is {{0, 1}}, but "
                f"`{data_name}` holds other values (e.g. {bad.flat[0].item()!r}). Binarize the "
                f"data (e.g. {data_name} > threshold), or use a Binomial likelihood for integer "
                "counts (make_decoder(..., likelihood='binomial', total_count=...))."
            )
    elif isinstance(base, (tfp.distributions.Binomial, tfp.distributions.Poisson)):
        upper = np.inf
        if isinstance(base, tfp.distributions.Binomial):
            upper = np.min(_concrete(base.total_count))
        bad = values[(values < 0) | (values > upper) | (values != np.round(values))]
        if bad.size:
            support = "{0, 1, 2, ...}" if upper == np.inf else f"{{0, 1, ..., {upper:g}}}"
            raise ValueError(
                f"`{name}` returns a {family} likelihood, whose support is {support}, but "
                f"`{data_name}` holds other values (e.g. {bad.flat[0].item()!r}). {fix}."
            )
    if not check_log_prob:
        return
    log_prob = _concrete(distribution.log_prob(x))
    if log_prob is not None and not np.all(np.isfinite(log_prob)):
        raise ValueError(
            f"`{name}` returns a {family} likelihood whose log-density is not finite at some "
            f"rows of `{data_name}`: the data lie outside its support. {fix}."
        )


def check_strategy(strategy, name: str = "strategy") -> None:
    """Raise ``TypeError`` unless ``strategy`` is ``None`` or a ``tf.distribute.Strategy``."""
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            f"`{name}` must be a tf.distribute.Strategy (e.g. tf.distribute.MirroredStrategy()) "
            f"or None, got {type(strategy).__name__}."
        )


# ---------------------------------------------------------------------------------------
# Chapters 9 and 10: surrogate families, PSIS and posterior summaries
# ---------------------------------------------------------------------------------------


def built_mixture(value):
    """``(mixture, bijector)`` if ``value`` is a ``tfd.MixtureSameFamily`` (``bijector`` is
    ``None``) or a ``tfd.TransformedDistribution`` of one (or a ``DeferredModule`` that
    builds either); else ``None``."""
    built = built_distribution(value)
    if isinstance(built, tfp.distributions.MixtureSameFamily):
        return built, None
    if isinstance(built, tfp.distributions.TransformedDistribution) and isinstance(
        built.distribution, tfp.distributions.MixtureSameFamily
    ):
        return built.distribution, built.bijector
    return None


def check_min_count(value, name: str, minimum: int, reason: str) -> int:
    """``check_count`` with a domain minimum whose error message says why (``reason``)."""
    value = check_count(value, name)
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum:,} ({reason}), got {value:,}.")
    return value


def check_options(options: dict, allowed: Sequence[str], what: str) -> None:
    """Raise ``TypeError`` for a keyword option outside ``allowed``, listing the valid ones."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"`{unknown[0]}` is not an option of {what}; the options are "
            f"{', '.join(sorted(allowed))}."
        )


def check_event_vector(event_shape, name: str = "event_shape") -> int:
    """Return ``D`` for an event shape ``[D]`` (or the int ``D``), with ``D >= 1``."""
    if isinstance(event_shape, numbers.Integral) and not isinstance(event_shape, bool):
        return check_count(event_shape, name)
    if isinstance(event_shape, np.ndarray):
        event_shape = event_shape.tolist()
    if not isinstance(event_shape, (list, tuple, tf.TensorShape)):
        raise TypeError(
            f"`{name}` must be [D], a list of one int, got {type(event_shape).__name__} "
            f"{event_shape!r}. Pass e.g. {name}=[2]."
        )
    dims = list(event_shape)
    if len(dims) != 1:
        raise ValueError(
            f"`{name}` must be [D], one axis of latent variables, got {dims}. Flatten the "
            "latent variables into one vector (a tfb.Reshape can restore a shape)."
        )
    return check_count(dims[0], name)

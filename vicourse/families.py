r"""Richer variational families: full-rank Gaussians, normalizing flows and mixtures.

Chapter 9 (:doc:`/book/chapters/09_richer_families`) compares four families on targets
with known answers (:mod:`vicourse.targets`). :func:`make_surrogate` builds each one from
TFP's pieces, ready for :func:`vicourse.fit_vi`:

- ``"mean_field"``: :math:`q(z) = \prod_i \mathcal N(z_i; m_i, s_i^2)`, :math:`2D`
  parameters, :math:`O(D)` per sample; no correlations (chapter 4);
- ``"full_rank"``: :math:`q(z) = \mathcal N(z; m, LL^\top)` with :math:`L` lower triangular,
  :math:`D + D(D+1)/2` parameters, :math:`O(D^2)` per sample; any linear correlation, one
  mode, Gaussian tails;
- ``"flow"``: :math:`z = T(\varepsilon)` with :math:`\varepsilon \sim \mathcal N(0, I)` and
  :math:`T` a stack of invertible layers (inverse autoregressive flow
  :cite:p:`kingma2016improved`, masked autoregressive flow
  :cite:p:`papamakarios2017masked`, or RealNVP :cite:p:`dinh2017density`), with
  :math:`\log q(z) = \log \mathcal N(\varepsilon) - \log|\det \partial T / \partial
  \varepsilon|` :cite:p:`rezende2015variational,papamakarios2021normalizing`;
- ``"mixture"``: :math:`q(z) = \sum_k w_k \mathcal N(z; m_k, \Sigma_k)`, fitted with the
  stratified ELBO (``estimator="stratified"`` in :func:`vicourse.fit_vi`), which is
  differentiable in the weights :cite:p:`morningstar2021automatic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from vicourse._seed import sanitize_seed
from vicourse._validation import (
    as_float_tensor,
    check_batch_shape,
    check_choice,
    check_count,
    check_event_vector,
    check_finite,
    check_options,
    check_positive,
    check_shape,
)

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["FLOWS", "KINDS", "make_surrogate"]

KINDS = ("mean_field", "full_rank", "flow", "mixture")
"""The families of :func:`make_surrogate`."""

FLOWS = ("iaf", "maf", "real_nvp")
"""The flows of ``make_surrogate("flow", ...)`` (inverse autoregressive, masked
autoregressive and RealNVP)."""

_COMMON = ("loc", "scale", "dtype")
_OPTIONS = {
    "mean_field": _COMMON,
    "full_rank": _COMMON,
    "flow": (*_COMMON, "flow", "num_layers", "hidden_units"),
    "mixture": (*_COMMON, "num_components", "covariance"),
}
_MAX_LAYERS = 64


# ---------------------------------------------------------------------------------------
# Standardized units: every trainable parameter lives in u = (z - loc) / scale
# ---------------------------------------------------------------------------------------


def _check_dtype(dtype) -> tf.DType:
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be tf.float32 or tf.float64, got {dtype!r}.") from None
    if dtype not in (tf.float32, tf.float64):
        raise TypeError(f"`dtype` must be tf.float32 or tf.float64, got {dtype.name}.")
    return dtype


def _check_loc(options, dim, dtype, kind, num_components):
    """The initial location: ``[D]``, or ``[K, D]`` (one per component) for a mixture."""
    if "loc" not in options:
        return tf.zeros([dim], dtype)
    loc = as_float_tensor(options["loc"], "loc", dtype)
    if kind == "mixture" and loc.shape.rank == 2:
        check_shape(loc, "loc", [num_components, dim], "[K, D]: one mean per component")
    else:
        check_shape(
            loc,
            "loc",
            [dim],
            "[D]: the initial mean"
            + (", or [K, D] for the components" if kind == "mixture" else ""),
        )
    check_finite(loc, "loc")
    return loc


def _check_scale(options, dim, dtype):
    """The initial scale: a positive scalar or ``[D]``, returned as ``[D]``."""
    if "scale" not in options:
        return tf.ones([dim], dtype)
    scale = as_float_tensor(options["scale"], "scale", dtype)
    check_batch_shape(scale, "scale", [dim])
    check_positive(scale, "scale")
    return scale * tf.ones([dim], dtype)


def _standardized(center, scale) -> tfb.Bijector:
    """``u -> center + scale * u`` (elementwise): standardized units to the problem's."""
    return tfb.Chain([tfb.Shift(center), tfb.Scale(scale)])


def _trainable_loc(initial, center, scale, name):
    return tfp.util.TransformedVariable(initial, _standardized(center, scale), name=name)


def _trainable_diag(initial, scale, name):
    return tfp.util.TransformedVariable(
        initial, tfb.Chain([tfb.Scale(scale), tfb.Softplus()]), name=name
    )


def _trainable_tril(initial, scale, name):
    """A lower-triangular factor ``diag(scale) L_u`` with ``L_u`` unconstrained below the
    diagonal and a softplus diagonal: rows scaled by ``scale``."""
    fill = tfb.FillScaleTriL(
        diag_bijector=tfb.Softplus(), diag_shift=tf.constant(1e-6, initial.dtype)
    )
    return tfp.util.TransformedVariable(
        initial, tfb.Chain([tfb.Scale(scale[:, tf.newaxis]), fill]), name=name
    )


# ---------------------------------------------------------------------------------------
# The four families
# ---------------------------------------------------------------------------------------


def _mean_field(dim, loc, scale, dtype, seed, options):
    return tfd.MultivariateNormalDiag(
        _trainable_loc(loc, loc, scale, "loc"), _trainable_diag(scale, scale, "scale_diag")
    )


def _full_rank(dim, loc, scale, dtype, seed, options):
    return tfd.MultivariateNormalTriL(
        _trainable_loc(loc, loc, scale, "loc"),
        _trainable_tril(tf.linalg.diag(scale), scale, "scale_tril"),
    )


def _mixture(dim, loc, scale, dtype, seed, options):
    num_components = options["num_components"]
    if loc.shape.rank == 2:
        means, center = loc, tf.reduce_mean(loc, axis=0)
    else:  # spread the components by one scale around loc, to break their symmetry
        jitter = tf.random.stateless_normal([num_components, dim], seed, dtype=dtype)
        means, center = loc + scale * jitter, loc
    scales = tf.ones([num_components, 1], dtype) * scale
    if options["covariance"] == "diagonal":
        components = tfd.MultivariateNormalDiag(
            _trainable_loc(means, center, scale, "component_loc"),
            _trainable_diag(scales, scale, "component_scale_diag"),
        )
    else:
        components = tfd.MultivariateNormalTriL(
            _trainable_loc(means, center, scale, "component_loc"),
            _trainable_tril(tf.linalg.diag(scales), scale, "component_scale_tril"),
        )
    logits = tf.Variable(tf.zeros([num_components], dtype), name="mixture_logits")
    return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), components)


class _CouplingNetwork(tf.Module):
    """RealNVP's shift and log-scale of the transformed half, given the other half: a
    ``tf_keras`` MLP, as ``tfb.RealNVP(shift_and_log_scale_fn=...)`` calls it."""

    def __init__(self, num_masked, num_out, hidden_units, dtype):
        super().__init__(name="coupling")
        layers = [tf_keras.layers.Dense(h, activation="tanh", dtype=dtype) for h in hidden_units]
        self.network = tf_keras.Sequential(
            [*layers, tf_keras.layers.Dense(2 * num_out, dtype=dtype)]
        )
        self.network.build((None, num_masked))

    def __call__(self, x, output_units):
        shift, log_scale = tf.split(self.network(x), 2, axis=-1)
        return shift, log_scale


def _initialize_dense_stack(variables, seed):
    """Glorot-uniform kernels (stateless, from ``seed``), zero biases, and a zero output
    layer, so that every flow layer starts as the identity. Masked kernels keep their mask
    (MADE's autoregressive structure) through their Keras constraint."""
    pairs = list(zip(variables[::2], variables[1::2], strict=True))
    seeds = tf.random.experimental.stateless_split(seed, len(pairs))
    for i, (kernel, bias) in enumerate(pairs):
        if i == len(pairs) - 1:
            value = tf.zeros_like(kernel)
        else:
            fan_in, fan_out = kernel.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            value = tf.random.stateless_uniform(
                kernel.shape, seeds[i], -limit, limit, dtype=kernel.dtype
            )
        kernel.assign(value)
        if getattr(kernel, "constraint", None) is not None:
            kernel.assign(kernel.constraint(kernel))
        bias.assign(tf.zeros_like(bias))


def _flow_layer(flow, dim, hidden_units, dtype, seed) -> tfb.Bijector:
    if flow == "real_nvp":
        num_masked = dim // 2
        network = _CouplingNetwork(num_masked, dim - num_masked, hidden_units, dtype)
        _initialize_dense_stack(network.trainable_variables, seed)
        return tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=network)
    made = tfb.AutoregressiveNetwork(
        params=2,
        event_shape=[dim],
        hidden_units=list(hidden_units),
        activation="tanh",
        dtype=dtype,
    )
    made(tf.zeros([1, dim], dtype))  # build the masked layers
    _initialize_dense_stack(made.trainable_variables, seed)
    maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
    # MAF: density in one pass, sampling in D; its inverse, the IAF, the other way round.
    return tfb.Invert(maf) if flow == "iaf" else maf


def _flow(dim, loc, scale, dtype, seed, options):
    flow, num_layers = options["flow"], options["num_layers"]
    seeds = tf.random.experimental.stateless_split(seed, num_layers)
    reverse = tfb.Permute(np.arange(dim)[::-1].copy())
    layers = []  # in the order they act on the base sample
    for i in range(num_layers):
        if i > 0 and dim > 1:
            layers.append(reverse)  # let the next layer condition the other way
        layers.append(_flow_layer(flow, dim, options["hidden_units"], dtype, seeds[i]))
    transform = tfb.Chain([_standardized(loc, scale), *reversed(layers)])
    return tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros([dim], dtype)), transform
    )


_BUILDERS = {
    "mean_field": _mean_field,
    "full_rank": _full_rank,
    "flow": _flow,
    "mixture": _mixture,
}


# ---------------------------------------------------------------------------------------
# The public builder
# ---------------------------------------------------------------------------------------


def _check_kind_options(kind, dim, options) -> dict:
    """Defaults filled in and every option of ``kind`` validated."""
    checked = dict(options)
    if kind == "flow":
        checked["flow"] = check_choice(options.get("flow", "iaf"), "flow", FLOWS)
        checked["num_layers"] = check_count(
            options.get("num_layers", 2), "num_layers", maximum=_MAX_LAYERS
        )
        hidden = options.get("hidden_units", (32, 32))
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(
                f"`hidden_units` must be a list of layer widths, e.g. [32, 32], got "
                f"{type(hidden).__name__} {hidden!r}."
            )
        checked["hidden_units"] = tuple(
            check_count(h, "hidden_units", maximum=100_000) for h in hidden
        )
        if checked["flow"] == "real_nvp" and dim < 2:
            raise ValueError(
                "`flow`='real_nvp' needs D >= 2 (it transforms one half of z given the "
                "other); use flow='iaf' for D = 1."
            )
    if kind == "mixture":
        checked["num_components"] = check_count(
            options.get("num_components", 2), "num_components", maximum=10_000
        )
        checked["covariance"] = check_choice(
            options.get("covariance", "full"), "covariance", ("full", "diagonal")
        )
    return checked


def _check_support(bijector, dim, dtype):
    if not isinstance(bijector, tfb.Bijector):
        raise TypeError(
            f"`bijector` must be a tfp.bijectors.Bijector (unconstrained space -> the "
            f"model's support), got {type(bijector).__name__}."
        )
    try:
        bijector.forward(tf.zeros([1, dim], dtype))
        shape = bijector.forward_event_shape([dim])
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as err:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(
            f"`bijector` must map vectors of the event shape [{dim}] in {dtype.name}: {detail}"
        ) from None
    if shape.rank != 1:
        raise ValueError(f"`bijector` must map the event shape [{dim}] to a vector, got {shape}.")


def make_surrogate(
    kind: Literal["mean_field", "full_rank", "flow", "mixture"],
    event_shape,
    *,
    bijector: tfb.Bijector | None = None,
    seed,
    **options,
) -> tfd.Distribution:
    r"""A trainable variational family for :func:`vicourse.fit_vi`.

    With :math:`T(u) = \mathrm{loc} + \mathrm{scale} \odot u` (the ``loc`` and ``scale``
    options) and :math:`B` the support ``bijector``, the families are

    .. math::

        \text{mean\_field:}\quad & q = B_\#\,\mathcal N\big(m, \operatorname{diag}(s)^2\big),
        \\
        \text{full\_rank:}\quad & q = B_\#\,\mathcal N\big(m, LL^\top\big), \\
        \text{flow:}\quad & q = (B \circ T \circ f_J \circ \dots \circ f_1)_\#\,
        \mathcal N(0, I), \\
        \text{mixture:}\quad & q = B_\#\,\textstyle\sum_{k=1}^K w_k\,
        \mathcal N\big(m_k, \Sigma_k\big),

    where :math:`B_\# q` is the distribution of :math:`B(z)` for :math:`z \sim q` (density
    :math:`q(B^{-1}(y))\,|\det \partial B^{-1}/\partial y|`). A flow layer :math:`f_j` is
    an inverse autoregressive flow (IAF, :cite:t:`kingma2016improved`: sampling in one
    network pass, the density of its own samples for free), a masked autoregressive flow
    (MAF, :cite:t:`papamakarios2017masked`: the density of any point in one pass,
    sampling in :math:`D`), or a RealNVP affine coupling (:cite:t:`dinh2017density`: both
    in one pass, half the coordinates per layer), with the coordinates reversed between
    layers. Every layer starts as the identity (zero output weights), so every family
    starts at :math:`\mathcal N(\mathrm{loc}, \operatorname{diag}(\mathrm{scale})^2)`
    (the mixture's components around it, see ``num_components``).

    **Scale.** Every trainable parameter lives in the standardized units
    :math:`u = (z - \mathrm{loc}) / \mathrm{scale}` (a ``TransformedVariable`` holds
    :math:`u`, and the flow acts on :math:`u`). Adam's steps in :func:`vicourse.fit_vi`
    are therefore relative to ``scale``: multiplying the target by :math:`c` and passing
    ``loc * c`` and ``scale * c`` gives the same fit in the new units. Pass the problem's
    scale (a prior sd, a rough posterior sd) rather than the default 1.

    **Compiled once.** The Gaussian and mixture families are composite TFP distributions
    on ``tf.Variable`` s, so :func:`vicourse.fit_vi` reuses its compiled loop for every new
    surrogate of the same structure. A flow holds ``tf_keras`` layers (TFP's
    ``AutoregressiveNetwork``) and is not a composite tensor: ``fit_vi`` compiles once per
    flow object (later calls with the same flow reuse it). The ``tfp.experimental.vi``
    builders return ``DeferredModule`` s, which are not composite either, so the Gaussians
    are built here from TFP distributions directly.

    Parameters
    ----------
    kind : {"mean_field", "full_rank", "flow", "mixture"}
        The family (:data:`KINDS`).
    event_shape : int or sequence of one int
        :math:`[D]`, the number of (unconstrained) latent variables.
    bijector : tfp.bijectors.Bijector, optional
        Maps :math:`\mathbb R^D` to the model's support (for example
        ``tfb.Blockwise([tfb.Identity(), tfb.Exp()], [1, 1])`` for a location and a
        positive scale), applied last; the fit then runs in the unconstrained space.
    seed : int or Tensor of shape [2]
        Stateless seed of the random initial values (flow weights, mixture means).
    **options
        ``loc`` (array of shape [D], default 0; or [K, D], one mean per component, for a
        mixture) and ``scale`` (positive, scalar or [D], default 1): the initial location
        and scale, in unconstrained space, and the standardized units above. ``dtype``
        (default ``tf.float64``). For ``"flow"``: ``flow`` (one of :data:`FLOWS`,
        default ``"iaf"``), ``num_layers`` (default 2) and ``hidden_units`` (widths of the
        hidden layers of each layer's network, default ``(32, 32)``). For ``"mixture"``:
        ``num_components`` :math:`K` (default 2; the means start at ``loc`` plus ``scale``
        times standard normal draws, unless ``loc`` gives all :math:`K`), and
        ``covariance`` (``"full"``, default, or ``"diagonal"``).

    Returns
    -------
    tfp.distributions.Distribution
        ``MultivariateNormalDiag`` (mean field), ``MultivariateNormalTriL`` (full rank),
        ``MixtureSameFamily`` (mixture; fit it with ``estimator="stratified"``) or
        ``TransformedDistribution`` (flow), wrapped in a ``TransformedDistribution`` when
        ``bijector`` is given. Its event shape is ``[D]`` (``bijector``'s image of it), its
        batch shape ``[]``.

    Raises
    ------
    TypeError, ValueError
        For an unknown ``kind`` or ``flow`` (the message lists them), an event shape that
        is not ``[D]``, an option the kind does not have, a ``loc`` or ``scale`` of
        another shape or not finite (or a non-positive scale), a bad count, dtype or seed,
        ``flow="real_nvp"`` with :math:`D = 1`, or a ``bijector`` that does not map
        vectors of length :math:`D`.

    Notes
    -----
    Taught in :doc:`/book/chapters/09_richer_families`. A flow is fitted with the
    reparameterization or path-derivative estimator; a mixture with
    ``estimator="stratified"`` :cite:p:`morningstar2021automatic`.

    Examples
    --------
    A full-rank Gaussian over the 10 latent variables of eight schools, started at the
    prior's scale, and fitted::

        q = vicourse.make_surrogate("full_rank", [10], seed=0, scale=5.0)
        vicourse.fit_vi(log_joint, q, num_steps=2000)
    """
    check_choice(kind, "kind", KINDS, "the variational family")
    dim = check_event_vector(event_shape)
    check_options(options, _OPTIONS[kind], f"kind={kind!r}")
    options = _check_kind_options(kind, dim, options)
    dtype = _check_dtype(options.get("dtype", tf.float64))
    loc = _check_loc(options, dim, dtype, kind, options.get("num_components"))
    scale = _check_scale(options, dim, dtype)
    seed = sanitize_seed(seed)
    if bijector is not None:
        _check_support(bijector, dim, dtype)
    surrogate = _BUILDERS[kind](dim, loc, scale, dtype, seed, options)
    if bijector is not None:
        surrogate = tfd.TransformedDistribution(surrogate, bijector)
    return surrogate

r"""Coordinate ascent variational inference (CAVI).

Chapter 4 (:doc:`/book/chapters/04_cavi`) derives and runs these:

- :func:`fit_gmm`: CAVI for the Bayesian mixture of Gaussians of
  :cite:t:`blei2017variational` (§3), with the ELBO in closed form at every iteration, built
  from :func:`gmm_init`, :func:`gmm_step` and :func:`gmm_elbo`;
- :func:`fit_normal_gamma`: the mean-field :math:`q(\mu)q(\tau)` for a Gaussian with unknown
  mean and precision, with :func:`normal_gamma_posterior` its exact counterpart
  :cite:p:`bishop2006pattern` (§10.1.3);
- :func:`mean_field_gaussian`: the mean-field approximation of a correlated Gaussian
  (Bishop §10.1.2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._optim import run_chunked
from vicourse._seed import sanitize_seed, split_seed
from vicourse._validation import (
    as_float_tensor,
    as_points,
    check_bool,
    check_count,
    check_finite,
    check_positive,
    check_real,
    check_shape,
    common_float_dtype,
    default_tolerance,
)

tfd = tfp.distributions

__all__ = [
    "GMMFit",
    "GMMInfo",
    "GMMState",
    "NormalGammaFit",
    "NormalGammaPrior",
    "fit_gmm",
    "fit_normal_gamma",
    "gmm_elbo",
    "gmm_init",
    "gmm_step",
    "mean_field_gaussian",
    "normal_gamma_posterior",
]

# Iterations per compiled chunk of the CAVI loop: the trace buffer has this fixed length, so
# one compilation serves every num_iters.
_CHUNK_ITERS = 256

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------
# Bayesian mixture of Gaussians
# ---------------------------------------------------------------------------------------


class GMMState(NamedTuple):
    r"""Variational parameters of the mixture: :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`."""

    means_loc: tf.Tensor
    """:math:`m`, shape [K, D]."""
    means_var: tf.Tensor
    """:math:`s^2`, shape [K], positive."""


class GMMInfo(NamedTuple):
    """What one :func:`gmm_step` reports."""

    responsibilities: tf.Tensor
    r""":math:`\varphi`, shape [N, K], the update made in this step."""
    elbo: tf.Tensor
    """The ELBO after the step, in closed form."""


class GMMFit(NamedTuple):
    """Result of :func:`fit_gmm`."""

    means_loc: tf.Tensor
    """Variational means of the cluster means, [K, D]."""
    means_var: tf.Tensor
    """Variational variances of the cluster means (per coordinate), [K]."""
    responsibilities: tf.Tensor
    r""":math:`q(c_i = k) = \varphi_{ik}`, [N, K]."""
    elbo_trace: tf.Tensor
    """The ELBO after each iteration, [iterations run]; never decreasing in float64."""
    converged: tf.Tensor
    """Whether an iteration changed the ELBO by at most ``tol`` nats per data point."""
    num_iters: tf.Tensor
    """Iterations run."""


class _Stats(NamedTuple):
    """Sufficient statistics of q(c) in coordinates centred at a point c (any fixed c)."""

    counts: tf.Tensor  # N_k = sum_i phi_ik, [K]
    weighted_sums: tf.Tensor  # sum_i phi_ik (x_i - c), [K, D]
    weighted_sq: tf.Tensor  # sum_i phi_ik ||x_i - c||^2, [K]
    neg_entropy: tf.Tensor  # sum_ik phi_ik log phi_ik


class _Model(NamedTuple):
    """The data, centred once, and the model's variances, all as tensors of one dtype."""

    centred: tf.Tensor  # x - center, [N, D]
    center: tf.Tensor  # [D]
    sq_norms: tf.Tensor  # ||x_i - center||^2, [N]
    prior_var: tf.Tensor  # tau^2
    noise_var: tf.Tensor  # sigma^2


def _model(x, prior_var, noise_var, center=None) -> _Model:
    # Every formula is invariant to where the coordinates are centred; centring at the data
    # mean keeps x_i^T m_k and ||x_i||^2 from cancelling catastrophically in float32 when the
    # data sit far from the origin relative to their spread. SVI passes a fixed centre, so
    # that every minibatch is expressed in the same coordinates.
    if center is None:
        center = tf.reduce_mean(x, axis=0)
    centred = x - center
    return _Model(centred, center, tf.reduce_sum(tf.square(centred), -1), prior_var, noise_var)


def _responsibilities(model: _Model, state: GMMState):
    """(phi, log phi): log phi_ik = (x_i^T m_k - E||mu_k||^2 / 2) / sigma^2 + const,
    normalized over k."""
    dim = tf.cast(tf.shape(model.centred)[1], model.centred.dtype)
    loc = state.means_loc - model.center
    expected_sq_norm = dim * state.means_var + tf.reduce_sum(tf.square(loc), -1)
    logits = tf.matmul(model.centred, loc, transpose_b=True) - 0.5 * expected_sq_norm
    # phi and log phi from one exp per entry (log_softmax then exp would take two).
    shifted = logits / model.noise_var
    shifted -= tf.reduce_max(shifted, axis=-1, keepdims=True)
    weights = tf.exp(shifted)
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    return weights / total, shifted - tf.math.log(total)


def _stats(model: _Model, phi, log_phi) -> _Stats:
    return _Stats(
        counts=tf.reduce_sum(phi, axis=0),
        weighted_sums=tf.matmul(phi, model.centred, transpose_a=True),
        weighted_sq=tf.linalg.matvec(phi, model.sq_norms, transpose_a=True),
        neg_entropy=tf.reduce_sum(tf.math.multiply_no_nan(log_phi, phi)),
    )


class _Natural(NamedTuple):
    """q(mu_k) = N(m_k, s_k^2 I) in natural parameters, in coordinates centred at a point c
    (chapter 5): eta1 = 1/s_k^2 and eta2 = (m_k - c)/s_k^2. Any fixed c gives the same
    updates (eta2 - c eta1 is the uncentred m_k/s_k^2, an affine change); a c among the data
    keeps eta2 accurate in float32."""

    precision: tf.Tensor  # eta1, [K]
    shift: tf.Tensor  # eta2, [K, D]


def _to_natural(state: GMMState, center) -> _Natural:
    precision = tf.math.reciprocal(state.means_var)
    return _Natural(precision, (state.means_loc - center) * precision[:, tf.newaxis])


def _from_natural(natural: _Natural, center) -> GMMState:
    var = tf.math.reciprocal(natural.precision)
    return GMMState(center + natural.shift * var[:, tf.newaxis], var)


def _natural_means(model: _Model, stats: _Stats, scale=1.0) -> _Natural:
    """The optimal q(mu_k) in natural parameters about the model's centre c, with the data
    terms weighted by ``scale``: eta1 = 1/tau^2 + scale N_k/sigma^2 and
    eta2 = -c/tau^2 + scale sum_i phi_ik (x_i - c)/sigma^2 (the prior's mean 0 is -c in
    these coordinates). CAVI uses scale 1; SVI uses N/B, as if its minibatch were the
    data replicated N/B times."""
    precision = tf.math.reciprocal(model.prior_var) + scale * stats.counts / model.noise_var
    shift = scale * stats.weighted_sums / model.noise_var - model.center / model.prior_var
    return _Natural(precision, shift)


def _optimal_means(model: _Model, stats: _Stats) -> GMMState:
    """q(mu_k): s_k^2 = 1 / (1/tau^2 + N_k/sigma^2), m_k = s_k^2 sum_i phi_ik x_i / sigma^2."""
    return _from_natural(_natural_means(model, stats), model.center)


def _elbo_from_stats(model: _Model, stats: _Stats, state: GMMState, scale=1.0):
    """Closed-form ELBO from the sufficient statistics: O(K D) beyond the update.

    The global terms (prior and entropy of the means) plus ``scale`` times the local terms
    of the points behind ``stats``: scale 1 for all the data, N/B for a minibatch of B.
    """
    return _global_terms(model, state) + scale * _local_terms(model, stats, state)


def _global_terms(model: _Model, state: GMMState):
    """sum_k E[log p(mu_k)] + H[q(mu_k)]."""
    dtype = model.centred.dtype
    dim = tf.cast(tf.shape(model.centred)[1], dtype)
    # E||mu_k||^2 about the origin (the prior's centre).
    expected_sq = dim * state.means_var + tf.reduce_sum(tf.square(state.means_loc), -1)
    log_prior_means = tf.reduce_sum(
        -0.5 * dim * (_LOG_2PI + tf.math.log(model.prior_var))
        - expected_sq / (2.0 * model.prior_var)
    )
    entropy_means = tf.reduce_sum(0.5 * dim * (_LOG_2PI + 1.0 + tf.math.log(state.means_var)))
    return log_prior_means + entropy_means


def _local_terms(model: _Model, stats: _Stats, state: GMMState):
    """sum_i (E[log p(c_i)] + E[log p(x_i | c_i, mu)] + H[q(c_i)]) over the model's points."""
    dtype = model.centred.dtype
    num_points = tf.cast(tf.shape(model.centred)[0], dtype)
    dim = tf.cast(tf.shape(model.centred)[1], dtype)
    num_components = tf.cast(tf.shape(state.means_var)[0], dtype)
    # E||mu_k - c||^2 about the centre c of the data's coordinates.
    loc = state.means_loc - model.center
    expected_sq_centred = dim * state.means_var + tf.reduce_sum(tf.square(loc), -1)
    log_prior_labels = -num_points * tf.math.log(num_components)
    squared_error = (
        tf.reduce_sum(stats.weighted_sq)
        - 2.0 * tf.reduce_sum(loc * stats.weighted_sums)
        + tf.reduce_sum(stats.counts * expected_sq_centred)
    )
    log_likelihood = -0.5 * num_points * dim * (
        _LOG_2PI + tf.math.log(model.noise_var)
    ) - squared_error / (2.0 * model.noise_var)
    return log_prior_labels + log_likelihood - stats.neg_entropy


def _local_step(model: _Model, state: GMMState):
    """The optimal q(c_i) of every point of ``model`` given q(mu), and its statistics."""
    phi, log_phi = _responsibilities(model, state)
    return phi, _stats(model, phi, log_phi)


def _gmm_step(model: _Model, state: GMMState):
    """One sweep: all q(c_i), then all q(mu_k); the closed-form ELBO after it."""
    phi, stats = _local_step(model, state)
    new_state = _optimal_means(model, stats)
    return new_state, phi, _elbo_from_stats(model, stats, new_state)


_NOT_GIVEN = object()


def _gmm_data(x, num_components, prior_scale, noise_scale, name="x"):
    """Validate the mixture's data and hyperparameters (shared by every mixture function).

    ``num_components=_NOT_GIVEN`` skips the count, for functions that read K from a state;
    ``name`` is the data argument's name in the caller's signature.
    """
    x = as_points(x, name)
    if num_components is not _NOT_GIVEN:
        num_components = _check_num_components(num_components, x.shape[0])
    return x, num_components, *_gmm_scales(prior_scale, noise_scale, x.dtype)


def _check_num_components(num_components, num_points) -> int:
    num_components = check_count(num_components, "num_components")
    if num_components > num_points:
        raise ValueError(
            f"`num_components` ({num_components}) exceeds the number of points "
            f"({num_points}); use at most N clusters."
        )
    return num_components


def _gmm_scales(prior_scale, noise_scale, dtype):
    """Validate tau and sigma: positive scalars, returned as tensors of ``dtype``."""
    scales = []
    for value, name in ((prior_scale, "prior_scale"), (noise_scale, "noise_scale")):
        value = as_float_tensor(value, name, dtype)
        check_shape(value, name, [], "a scalar")
        check_positive(value, name)
        scales.append(value)
    return scales[0], scales[1]


def _check_state(state, x) -> GMMState:
    if not isinstance(state, GMMState):
        raise TypeError(
            f"`state` must be a vicourse.GMMState, got {type(state).__name__}; "
            "build it with gmm_init."
        )
    loc = as_float_tensor(state.means_loc, "state.means_loc", x.dtype)
    var = as_float_tensor(state.means_var, "state.means_var", x.dtype)
    if loc.shape.rank != 2 or loc.shape[1] != x.shape[1]:
        raise ValueError(
            f"`state.means_loc` must have shape [K, D] with D = {x.shape[1]} (the data's), "
            f"got {loc.shape.as_list()}."
        )
    check_shape(var, "state.means_var", [loc.shape[0]], "one variance per component")
    check_finite(loc, "state.means_loc")
    check_positive(var, "state.means_var", "it is a variance")
    return GMMState(loc, var)


def _check_init(init, num_components, dim, dtype) -> tf.Tensor:
    loc = as_float_tensor(init, "init", dtype)
    check_shape(loc, "init", [num_components, dim], "[num_components, D]")
    check_finite(loc, "init")
    return loc


def _initial_state(x, num_components, seed, init) -> GMMState:
    if init is not None:
        loc = _check_init(init, num_components, x.shape[1], x.dtype)
    else:
        order = tf.argsort(tf.random.stateless_uniform([tf.shape(x)[0]], seed=seed))
        loc = tf.gather(x, order[:num_components])
    return GMMState(loc, tf.ones([num_components], x.dtype))


def gmm_init(x, num_components: int, seed=None, init=None) -> GMMState:
    r"""Initial state for CAVI on the mixture: :math:`K` distinct data points as the means.

    Parameters
    ----------
    x : array_like, shape [N, D] or [N]
        The data; a 1-D array is :math:`D = 1`.
    num_components : int
        :math:`K`, from 1 to :math:`N`.
    seed : int or Tensor of shape [2], optional
        Picks the :math:`K` distinct points that become the initial :math:`m_k`.
    init : array_like, shape [K, D], optional
        User-given initial means; then ``seed`` is not used.

    Returns
    -------
    GMMState
        ``means_loc`` the chosen points (or ``init``), ``means_var`` all ones.

    Raises
    ------
    TypeError, ValueError
        For bad data, a bad count or seed, or an ``init`` that is not finite or not of
        shape [K, D].

    Notes
    -----
    Initializing the means at data points is a common choice for CAVI on mixtures
    :cite:p:`blei2017variational`; taught in :doc:`/book/chapters/04_cavi`.
    """
    x, num_components, _, _ = _gmm_data(x, num_components, 1.0, 1.0)
    return _initial_state(x, num_components, sanitize_seed(seed), init)


def gmm_step(state: GMMState, x, prior_scale, noise_scale=1.0) -> tuple[GMMState, GMMInfo]:
    r"""One CAVI sweep: update every :math:`q(c_i)`, then every :math:`q(\mu_k)`.

    .. math::

        \varphi_{ik} &\propto \exp\!\Big(\big(x_i^\top m_k - \tfrac12\big(D s_k^2 +
        \lVert m_k \rVert^2\big)\big) / \sigma^2\Big), \\
        s_k^2 &= \frac{1}{1/\tau^2 + \sum_i \varphi_{ik}/\sigma^2}, \qquad
        m_k = \frac{s_k^2}{\sigma^2} \sum_i \varphi_{ik} x_i.

    Each block update maximizes the ELBO exactly in its block, so the ELBO cannot decrease
    :cite:p:`blei2017variational` (§3). Cost :math:`O(NKD)` time and :math:`O(NK)` memory.
    The inner products are computed about the data mean, which changes no formula but
    avoids cancellation when the data sit far from the origin.

    Parameters
    ----------
    state : GMMState
        Current :math:`q(\mu)`: ``means_loc`` [K, D], ``means_var`` [K] positive.
    x : array_like, shape [N, D] or [N]
        The data.
    prior_scale : float
        :math:`\tau > 0`, the prior standard deviation of each cluster mean (a scalar).
    noise_scale : float, default 1.0
        :math:`\sigma > 0`, the likelihood standard deviation (a scalar).

    Returns
    -------
    (GMMState, GMMInfo)
        The new state; the new responsibilities and the closed-form ELBO.

    Raises
    ------
    TypeError, ValueError
        For a ``state`` that is not a :class:`GMMState` or does not match the data, bad
        data, or a scale that is not a positive scalar.

    Notes
    -----
    Derived step by step in :doc:`/book/chapters/04_cavi`.
    """
    x, _, prior_scale, noise_scale = _gmm_data(x, _NOT_GIVEN, prior_scale, noise_scale)
    state = _check_state(state, x)
    model = _model(x, tf.square(prior_scale), tf.square(noise_scale))
    new_state, phi, elbo = _gmm_step(model, state)
    return new_state, GMMInfo(phi, elbo)


def gmm_elbo(x, state: GMMState, responsibilities, prior_scale, noise_scale=1.0) -> tf.Tensor:
    r"""The closed-form ELBO of the mixture for any :math:`q(\mu)` and :math:`q(c)`.

    .. math::

        \mathrm{ELBO} ={}& \sum_k \mathbb E[\log p(\mu_k)] + \sum_i \mathbb E[\log p(c_i)]
        + \sum_{i,k} \varphi_{ik}\, \mathbb E[\log \mathcal N(x_i; \mu_k, \sigma^2 I)] \\
        &+ \sum_i H[q(c_i)] + \sum_k H[q(\mu_k)].

    Parameters
    ----------
    x : array_like, shape [N, D] or [N]
        The data.
    state : GMMState
        :math:`q(\mu)`, with ``means_loc`` [K, D] and ``means_var`` [K].
    responsibilities : array_like, shape [N, K]
        :math:`\varphi`: entries in [0, 1], each row summing to 1.
    prior_scale : float
        :math:`\tau > 0`, the prior standard deviation of each cluster mean.
    noise_scale : float, default 1.0
        :math:`\sigma > 0`, the likelihood standard deviation.

    Returns
    -------
    tf.Tensor, scalar

    Raises
    ------
    TypeError, ValueError
        For bad data or state, responsibilities of the wrong shape or off the simplex, or
        a scale that is not a positive scalar.

    Notes
    -----
    Each expectation is a moment of a normal or categorical factor
    :cite:p:`blei2017variational` (§3); the derivation is in :doc:`/book/chapters/04_cavi`.
    :func:`fit_gmm` computes the same quantity from its update's sufficient statistics.
    """
    x, _, prior_scale, noise_scale = _gmm_data(x, _NOT_GIVEN, prior_scale, noise_scale)
    state = _check_state(state, x)
    phi = as_float_tensor(responsibilities, "responsibilities", x.dtype)
    check_shape(phi, "responsibilities", [x.shape[0], state.means_loc.shape[0]], "[N, K]")
    check_finite(phi, "responsibilities")
    tol = default_tolerance(x.dtype, float64=1e-9, float32=1e-5)
    values = phi.numpy()
    if np.any(values < 0) or np.any(values > 1) or np.any(np.abs(values.sum(1) - 1) > tol):
        raise ValueError(
            "`responsibilities` must be probabilities: entries in [0, 1] and each row "
            f"summing to 1 (within {tol:g}). Normalize each row, e.g. with a softmax."
        )
    log_phi = tf.math.log(tf.maximum(phi, tf.constant(np.finfo(np.float64).tiny, x.dtype)))
    model = _model(x, tf.square(prior_scale), tf.square(noise_scale))
    return _elbo_from_stats(model, _stats(model, phi, log_phi), state)


def _cavi_chunk(model: _Model, tol, state, phi, previous, count):
    """Up to ``count`` sweeps (a tensor), stopping early at convergence, in one while_loop."""
    trace = tf.fill([_CHUNK_ITERS], tf.constant(np.nan, model.centred.dtype))
    num_points = tf.cast(tf.shape(model.centred)[0], model.centred.dtype)

    def cond(i, state, phi, trace, previous, converged):
        return (i < count) & ~converged

    def body(i, state, phi, trace, previous, converged):
        state, phi, elbo = _gmm_step(model, state)
        trace = tf.tensor_scatter_nd_update(trace, [[i]], [elbo])
        # A change in nats per data point: unit-free, unlike a change relative to |ELBO|,
        # which shifts by -N D log(s) when the data are measured in other units.
        converged = (tol > 0) & (tf.abs(elbo - previous) <= tol * num_points)
        return i + 1, state, phi, trace, elbo, converged

    start = (tf.constant(0), state, phi, trace, previous, tf.constant(False))
    ran, state, phi, trace, previous, converged = tf.while_loop(cond, body, start)
    return state, phi, previous, trace, ran, converged


# No AutoGraph: the loop is an explicit tf.while_loop, and converting it costs compile time.
_cavi_chunk_xla = tf.function(_cavi_chunk, jit_compile=True, autograph=False)
_cavi_chunk_graph = tf.function(_cavi_chunk, autograph=False)


def _run_cavi(model, state, tol, num_iters, jit_compile):
    """Run CAVI from ``state`` for at most ``num_iters`` sweeps, chunk by chunk."""
    run = _cavi_chunk_xla if jit_compile else _cavi_chunk_graph
    phi = tf.zeros([tf.shape(model.centred)[0], tf.shape(state.means_var)[0]], model.centred.dtype)
    previous = tf.constant(-np.inf, model.centred.dtype)

    def chunk(carry, start, count):
        state, phi, previous, _ = carry
        state, phi, previous, trace, ran, converged = run(model, tol, state, phi, previous, count)
        return (state, phi, previous, converged), trace, ran, converged

    carry = (state, phi, previous, tf.constant(False))
    (state, phi, _, converged), trace, done = run_chunked(chunk, carry, num_iters, _CHUNK_ITERS)
    return state, phi, trace, done, converged


def fit_gmm(
    x,
    num_components: int,
    prior_scale,
    noise_scale=1.0,
    *,
    num_iters: int = 200,
    tol: float | None = None,
    seed=None,
    init=None,
    num_restarts: int = 1,
    jit_compile: bool = True,
) -> GMMFit:
    r"""CAVI for the Bayesian mixture of Gaussians of :cite:t:`blei2017variational` (§3).

    The model is :math:`\mu_k \sim \mathcal N(0, \tau^2 I)`,
    :math:`c_i \sim \mathrm{Categorical}(1/K)`, :math:`x_i \mid c_i, \mu \sim
    \mathcal N(\mu_{c_i}, \sigma^2 I)`. The mean-field family is :math:`q(\mu_k) =
    \mathcal N(m_k, s_k^2 I)` and :math:`q(c_i) = \mathrm{Categorical}(\varphi_i)`. Each
    iteration is one :func:`gmm_step`; the ELBO is computed in closed form after every
    iteration, and the loop stops when an iteration changes it by at most ``tol`` nats per
    data point.

    The loop runs compiled (XLA when ``jit_compile=True``), in chunks of 256 iterations: the
    data stay on the device (a GPU when present), and the host only joins the chunks. The
    iteration count and ``tol`` are tensors, so a later call with data of the same shape
    and dtype reuses the compiled loop.

    Parameters
    ----------
    x : array_like, shape [N, D] or [N]
        The data; a 1-D array is :math:`D = 1`. Float64 input runs in float64; integers
        are converted to float32.
    num_components : int
        :math:`K \ge 1`, at most :math:`N`.
    prior_scale : float
        :math:`\tau > 0`, the prior standard deviation of each cluster mean (a scalar).
    noise_scale : float, default 1.0
        :math:`\sigma > 0`, the likelihood standard deviation (a scalar). With data in other
        units, scale ``prior_scale`` and ``noise_scale`` with them and the fit is the same.
    num_iters : int, default 200
        The maximum number of iterations.
    tol : float, optional
        Stop when :math:`|\Delta \mathrm{ELBO}| \le \mathrm{tol}\cdot N`, a change of at
        most ``tol`` nats per data point; 0 runs all ``num_iters``. Differences of the ELBO
        do not depend on the units of the data (the ELBO itself shifts by
        :math:`-ND\log s` when the data are multiplied by :math:`s`), so neither does the
        stopping point. The default is ``1e-8`` in float64 and ``1e-5`` in float32, whose
        :math:`10^{-7}` relative precision cannot resolve much smaller changes.
    seed : int or Tensor of shape [2], optional
        Chooses the initial means among the data points (one split per restart).
    init : array_like, shape [K, D], optional
        Initial means; then the first restart starts there.
    num_restarts : int, default 1
        Independent runs from different initial means; the one with the highest final ELBO
        is returned, because CAVI finds local optima.
    jit_compile : bool, default True
        Compile the loop with XLA; ``False`` runs it as a plain ``tf.function`` graph.

    Returns
    -------
    GMMFit
        ``means_loc`` [K, D], ``means_var`` [K], ``responsibilities`` [N, K],
        ``elbo_trace`` [iterations run], ``converged``, ``num_iters``.

    Raises
    ------
    ValueError
        If ``x`` is empty, not finite or of the wrong rank; ``num_components < 1`` or
        :math:`> N`; a scale is not a positive scalar; a count is below 1 or beyond int32;
        ``tol`` is negative or not finite; or ``init`` has the wrong shape.
    TypeError
        If an argument has the wrong type (a float count, a string, a float seed).

    Notes
    -----
    The ELBO never decreases in exact arithmetic. In float64 the largest decrease seen is
    round-off, about :math:`10^{-15}` relative; in float32 it can reach a few
    :math:`10^{-6}` relative, so "never decreasing" is a float64 statement.

    Taught in :doc:`/book/chapters/04_cavi`.
    """
    x, num_components, prior_scale, noise_scale = _gmm_data(
        x, num_components, prior_scale, noise_scale
    )
    num_iters = check_count(num_iters, "num_iters")
    num_restarts = check_count(num_restarts, "num_restarts")
    jit_compile = check_bool(jit_compile, "jit_compile")
    if tol is None:
        tol = default_tolerance(x.dtype, float64=1e-8, float32=1e-5)
    tol = check_real(tol, "tol", low=0.0)
    seeds = split_seed(seed, n=num_restarts)
    if init is not None:
        _initial_state(x, num_components, seeds[0], init)  # validate before any work
    model = _model(x, tf.square(prior_scale), tf.square(noise_scale))
    best = None
    for restart in range(num_restarts):
        state = _initial_state(x, num_components, seeds[restart], init if restart == 0 else None)
        state, phi, trace, num, converged = _run_cavi(
            model, state, tf.constant(tol, x.dtype), num_iters, jit_compile
        )
        fit = GMMFit(state.means_loc, state.means_var, phi, trace, converged, tf.constant(num))
        if best is None or float(fit.elbo_trace[-1]) > float(best.elbo_trace[-1]):
            best = fit
    return best


# ---------------------------------------------------------------------------------------
# Gaussian with unknown mean and precision
# ---------------------------------------------------------------------------------------


class NormalGammaPrior(NamedTuple):
    r"""Prior :math:`\tau \sim \mathrm{Gamma}(a_0, b_0)`,
    :math:`\mu \mid \tau \sim \mathcal N(\mu_0, (\lambda_0 \tau)^{-1})`, each field a scalar.

    Here :math:`\tau` is a precision and :math:`\lambda_0` a prior count, as in
    :cite:t:`bishop2006pattern` (§2.3.6); elsewhere the course writes :math:`\tau` for a
    prior standard deviation and :math:`\lambda` for variational parameters."""

    loc: float = 0.0
    r""":math:`\mu_0`, finite."""
    precision_scale: float = 1.0
    r""":math:`\lambda_0 > 0`."""
    concentration: float = 1.0
    r""":math:`a_0 > 0`."""
    rate: float = 1.0
    r""":math:`b_0 > 0`."""


class NormalGammaFit(NamedTuple):
    r"""Result of :func:`fit_normal_gamma` and :func:`normal_gamma_posterior`."""

    mean: tfd.Distribution
    r"""The (marginal) distribution of :math:`\mu`, a ``tfd.Normal`` for the mean-field fit
    and a ``tfd.StudentT`` for the exact posterior."""
    precision: tfd.Gamma
    r"""The distribution of :math:`\tau`."""
    num_iters: int
    """Iterations run (0 for the exact posterior)."""
    converged: bool
    """Whether the fixed point was reached within ``tol``."""


def _normal_gamma_inputs(x, prior):
    if not isinstance(prior, NormalGammaPrior):
        raise TypeError(
            f"`prior` must be a vicourse.NormalGammaPrior, got {type(prior).__name__}; "
            "e.g. NormalGammaPrior(loc=0.0, precision_scale=1.0, concentration=1.0, rate=1.0)."
        )
    x = as_float_tensor(x, "x", common_float_dtype(x, *prior))
    if x.shape.rank != 1 or x.shape[0] == 0:
        raise ValueError(f"`x` must be a non-empty 1-D array, got shape {x.shape.as_list()}.")
    check_finite(x, "x")
    fields = []
    for name, value in zip(prior._fields, prior, strict=True):
        value = as_float_tensor(value, f"prior.{name}", x.dtype)
        check_shape(value, f"prior.{name}", [], "a scalar")
        (check_finite if name == "loc" else check_positive)(value, f"prior.{name}")
        fields.append(value)
    return x, fields


def _centred_summary(x):
    """N, the mean and the centred sum of squares: stable when |mean| >> sd."""
    mean = tf.reduce_mean(x)
    return tf.cast(tf.shape(x)[0], x.dtype), mean, tf.reduce_sum(tf.square(x - mean))


def normal_gamma_posterior(x, prior: NormalGammaPrior) -> NormalGammaFit:
    r"""Exact posterior of a Gaussian's mean and precision under a Normal-Gamma prior.

    The posterior is Normal-Gamma :cite:p:`bishop2006pattern` (§2.3.6):
    :math:`\lambda_N = \lambda_0 + N`, :math:`\mu_N = (\lambda_0\mu_0 + N\bar x)/\lambda_N`,
    :math:`a_N = a_0 + N/2`, :math:`b_N = b_0 + \tfrac12\sum_i (x_i - \bar x)^2 +
    \frac{\lambda_0 N (\bar x - \mu_0)^2}{2\lambda_N}`. The marginal of :math:`\mu` is a
    Student-t with :math:`2a_N` degrees of freedom, location :math:`\mu_N` and scale
    :math:`\sqrt{b_N / (a_N \lambda_N)}`.

    Parameters
    ----------
    x : array_like, shape [N]
        The observations, finite; integers are converted to float32.
    prior : NormalGammaPrior
        Scalar fields: ``loc`` finite, the others positive.

    Returns
    -------
    NormalGammaFit
        ``mean`` the Student-t marginal of :math:`\mu`, ``precision`` the Gamma marginal.

    Raises
    ------
    TypeError, ValueError
        For empty, non-finite or non-1-D ``x``, a ``prior`` that is not a
        :class:`NormalGammaPrior`, or a prior field that is not a valid scalar.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`, as the reference for :func:`fit_normal_gamma`.
    """
    x, (loc0, lam0, a0, b0) = _normal_gamma_inputs(x, prior)
    n, mean_x, centred_sq = _centred_summary(x)
    lam_n = lam0 + n
    loc_n = (lam0 * loc0 + n * mean_x) / lam_n
    a_n = a0 + n / 2.0
    b_n = b0 + 0.5 * centred_sq + lam0 * n * tf.square(mean_x - loc0) / (2.0 * lam_n)
    mean = tfd.StudentT(df=2.0 * a_n, loc=loc_n, scale=tf.sqrt(b_n / (a_n * lam_n)))
    return NormalGammaFit(mean, tfd.Gamma(a_n, b_n), 0, True)


@tf.function
def _normal_gamma_fixed_point(n, mean_x, centred_sq, prior, num_iters, tol):
    """Iterate E[tau] -> q(mu) -> q(tau) to a fixed point, in one while_loop."""
    loc0, lam0, a0, b0 = prior
    loc_n = (lam0 * loc0 + n * mean_x) / (lam0 + n)
    a_n = a0 + (n + 1.0) / 2.0

    def body(i, expected_tau, rate, converged):
        var_mu = 1.0 / ((lam0 + n) * expected_tau)
        # E_mu[sum_i (x_i - mu)^2] and E_mu[(mu - mu0)^2], from centred statistics.
        data_term = centred_sq + n * (tf.square(mean_x - loc_n) + var_mu)
        prior_term = lam0 * (tf.square(loc_n - loc0) + var_mu)
        rate = b0 + 0.5 * (data_term + prior_term)
        new_tau = a_n / rate
        converged = tf.abs(new_tau - expected_tau) <= tol * tf.abs(new_tau)
        return i + 1, new_tau, rate, converged

    start = (tf.constant(0), a0 / b0, b0, tf.constant(False))
    iters, expected_tau, rate, converged = tf.while_loop(
        lambda i, tau, rate, done: (i < num_iters) & ~done, body, start
    )
    return loc_n, a_n, rate, expected_tau, iters, converged


def fit_normal_gamma(
    x, prior: NormalGammaPrior, num_iters: int = 100, tol: float | None = None
) -> NormalGammaFit:
    r"""Mean-field CAVI :math:`q(\mu)q(\tau)` for a Gaussian with unknown mean and precision.

    With :math:`x_i \sim \mathcal N(\mu, \tau^{-1})` and the prior of
    :class:`NormalGammaPrior`, the optimal factors are :cite:p:`bishop2006pattern`
    (§10.1.3)

    .. math::

        q(\mu) &= \mathcal N\!\Big(\mu_N, \frac{1}{(\lambda_0 + N)\,\mathbb E[\tau]}\Big),
        \quad \mu_N = \frac{\lambda_0\mu_0 + N\bar x}{\lambda_0 + N}, \\
        q(\tau) &= \mathrm{Gamma}\Big(a_0 + \frac{N + 1}{2},\;
        b_0 + \tfrac12\,\mathbb E_\mu\Big[\sum_i (x_i - \mu)^2 + \lambda_0(\mu - \mu_0)^2
        \Big]\Big),

    iterated until :math:`\mathbb E[\tau] = a_N / b_N` stops changing (relative ``tol``).
    The expectation uses centred statistics,
    :math:`\mathbb E_\mu[\sum_i (x_i-\mu)^2] = \sum_i (x_i - \bar x)^2 + N((\bar x - \mu_N)^2 +
    \mathrm{Var}[\mu])`, which stay accurate in float32 when the mean is many standard
    deviations from zero. The loop is one compiled ``tf.while_loop``; ``num_iters`` and
    ``tol`` are tensors, so repeated calls reuse it.

    Parameters
    ----------
    x : array_like, shape [N]
        The observations, finite; integers are converted to float32.
    prior : NormalGammaPrior
        Scalar fields: ``loc`` finite, the others positive.
    num_iters : int, default 100
        The maximum number of fixed-point iterations.
    tol : float, optional
        Relative change in :math:`\mathbb E[\tau]` that counts as converged; the default is
        ``1e-12`` in float64 and ``1e-6`` in float32.

    Returns
    -------
    NormalGammaFit
        ``mean`` is :math:`q(\mu)` (``tfd.Normal``), ``precision`` is :math:`q(\tau)`.

    Raises
    ------
    ValueError, TypeError
        For empty or non-finite ``x``, a prior field that is not a valid scalar, a ``prior``
        that is not a :class:`NormalGammaPrior`, or a bad count or tolerance.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`; compare :func:`normal_gamma_posterior`.
    """
    x, fields = _normal_gamma_inputs(x, prior)
    num_iters = check_count(num_iters, "num_iters")
    if tol is None:
        tol = default_tolerance(x.dtype, float64=1e-12, float32=1e-6)
    tol = check_real(tol, "tol", low=0.0)
    n, mean_x, centred_sq = _centred_summary(x)
    loc_n, a_n, b_n, expected_tau, iters, converged = _normal_gamma_fixed_point(
        n,
        mean_x,
        centred_sq,
        tuple(fields),
        tf.constant(num_iters),
        tf.constant(tol, x.dtype),
    )
    q_mu = tfd.Normal(loc_n, tf.math.rsqrt((fields[1] + n) * expected_tau))
    return NormalGammaFit(q_mu, tfd.Gamma(a_n, b_n), int(iters), bool(converged))


# ---------------------------------------------------------------------------------------
# Correlated Gaussian
# ---------------------------------------------------------------------------------------


def mean_field_gaussian(loc, covariance) -> tfd.MultivariateNormalDiag:
    r"""The mean-field (reverse-KL) approximation of a correlated Gaussian.

    For :math:`p = \mathcal N(\mu, \Sigma)` with precision :math:`\Lambda = \Sigma^{-1}`,
    the factorized :math:`q(z) = \prod_i q_i(z_i)` minimizing :math:`\mathrm{KL}(q\,\|\,p)`
    has :math:`q_i = \mathcal N(\mu_i, 1/\Lambda_{ii})` :cite:p:`bishop2006pattern`
    (§10.1.2). Since :math:`1/\Lambda_{ii} \le \Sigma_{ii}`, it underestimates every
    marginal variance unless the coordinates are uncorrelated.

    Parameters
    ----------
    loc : array_like, shape [D]
        :math:`\mu`, finite.
    covariance : array_like, shape [D, D]
        :math:`\Sigma`: finite, symmetric and positive definite.

    Returns
    -------
    tfp.distributions.MultivariateNormalDiag

    Raises
    ------
    ValueError
        If the shapes disagree, the matrix is not symmetric or not positive definite, or
        an entry is not finite.
    TypeError
        If an input is not numeric.

    Notes
    -----
    The checks use the concrete values, so this runs eagerly (not inside a traced
    ``tf.function``). Taught in :doc:`/book/chapters/04_cavi`.
    """
    dtype = common_float_dtype(loc, covariance)
    loc = as_float_tensor(loc, "loc", dtype)
    cov = as_float_tensor(covariance, "covariance", dtype)
    if loc.shape.rank != 1 or loc.shape[0] == 0:
        raise ValueError(f"`loc` must have shape [D] with D >= 1, got {loc.shape.as_list()}.")
    check_shape(cov, "covariance", [loc.shape[0]] * 2, "[D, D], with D from `loc`")
    check_finite(loc, "loc")
    check_finite(cov, "covariance")
    cov_np = cov.numpy()
    if not np.allclose(cov_np, cov_np.T, rtol=1e-6, atol=1e-12 * np.abs(cov_np).max()):
        raise ValueError("`covariance` must be symmetric; pass (S + S.T) / 2.")
    if np.any(np.linalg.eigvalsh(cov_np) <= 0):
        raise ValueError("`covariance` must be positive definite (all eigenvalues > 0).")
    precision_diag = tf.linalg.diag_part(tf.linalg.inv(cov))
    return tfd.MultivariateNormalDiag(loc, scale_diag=tf.math.rsqrt(precision_diag))

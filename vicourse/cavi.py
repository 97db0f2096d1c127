r"""Coordinate ascent variational inference (CAVI).

Chapter 4 (:doc:`/book/chapters/04_cavi`) derives and runs these:

- :func:`fit_gmm`: CAVI for the Bayesian mixture of Gaussians of
  :cite:t:`blei2017variational` (§3), with the ELBO in closed form at every iteration;
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

from vicourse._seed import sanitize_seed
from vicourse._validation import (
    as_float_tensor,
    as_points,
    check_finite,
    check_positive,
    check_positive_int,
    common_float_dtype,
)

tfd = tfp.distributions

__all__ = [
    "GMMFit",
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


# ---------------------------------------------------------------------------------------
# Bayesian mixture of Gaussians
# ---------------------------------------------------------------------------------------


class GMMState(NamedTuple):
    r"""Variational parameters of the mixture: :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`."""

    means_loc: tf.Tensor
    """:math:`m`, shape [K, D]."""
    means_var: tf.Tensor
    """:math:`s^2`, shape [K]."""


class GMMInfo(NamedTuple):
    """What one :func:`gmm_step` reports."""

    responsibilities: tf.Tensor
    r""":math:`\varphi`, shape [N, K], the update made in this step."""
    elbo: tf.Tensor
    """The ELBO after the step, in closed form."""


class GMMFit(NamedTuple):
    """Result of :func:`fit_gmm`."""

    means_loc: tf.Tensor
    """Posterior means of the cluster means, [K, D]."""
    means_var: tf.Tensor
    """Posterior variances of the cluster means (per coordinate), [K]."""
    responsibilities: tf.Tensor
    r""":math:`q(c_i = k) = \varphi_{ik}`, [N, K]."""
    elbo_trace: tf.Tensor
    """The ELBO after each iteration, [num_iters]; never decreasing."""
    converged: tf.Tensor
    """Whether the relative ELBO change fell below ``tol``."""
    num_iters: tf.Tensor
    """Iterations run."""


def _gmm_data(x, num_components, prior_scale):
    num_components = check_positive_int(num_components, "num_components")
    x = as_points(x, "x")
    prior_scale = as_float_tensor(prior_scale, "prior_scale", x.dtype)
    if prior_scale.shape.rank != 0:
        raise ValueError(f"`prior_scale` must be a scalar, got shape {prior_scale.shape}.")
    check_positive(prior_scale, "prior_scale")
    if num_components > x.shape[0]:
        raise ValueError(
            f"`num_components` ({num_components}) exceeds the number of points "
            f"({x.shape[0]}); use at most N clusters."
        )
    return x, num_components, prior_scale


def gmm_init(x, num_components: int, seed, init=None) -> GMMState:
    r"""Initial state for CAVI on the mixture: random data points as the means.

    Parameters
    ----------
    x : Tensor, shape [N, D]
        The data (already validated by :func:`fit_gmm` when called from there).
    num_components : int
        :math:`K`.
    seed : int or Tensor of shape [2]
        Picks :math:`K` distinct points as the initial :math:`m_k`.
    init : array_like, shape [K, D], optional
        User-given initial means; then ``seed`` is not used.

    Returns
    -------
    GMMState
        ``means_loc`` the chosen points, ``means_var`` all ones.

    Notes
    -----
    Initializing the means at data points is a common choice for CAVI on mixtures
    :cite:p:`blei2017variational`; taught in :doc:`/book/chapters/04_cavi`.
    """
    if init is not None:
        loc = as_float_tensor(init, "init", x.dtype)
        if loc.shape != (num_components, x.shape[1]):
            raise ValueError(
                f"`init` must have shape [num_components, D] = [{num_components}, "
                f"{x.shape[1]}], got {loc.shape.as_list()}."
            )
        check_finite(loc, "init")
    else:
        order = tf.argsort(tf.random.stateless_uniform([tf.shape(x)[0]], seed=seed))
        loc = tf.gather(x, order[:num_components])
    return GMMState(loc, tf.ones([num_components], x.dtype))


class _Stats(NamedTuple):
    counts: tf.Tensor  # N_k = sum_i phi_ik, [K]
    weighted_sums: tf.Tensor  # phi^T x, [K, D]
    weighted_sq: tf.Tensor  # sum_i phi_ik ||x_i||^2, [K]
    neg_entropy: tf.Tensor  # sum_ik phi_ik log phi_ik


def _responsibilities(x, state):
    """The optimal q(c): phi_ik propto exp(x_i^T m_k - E||mu_k||^2 / 2)."""
    dim = tf.cast(tf.shape(x)[1], x.dtype)
    expected_sq_norm = dim * state.means_var + tf.reduce_sum(tf.square(state.means_loc), -1)
    logits = tf.matmul(x, state.means_loc, transpose_b=True) - 0.5 * expected_sq_norm
    return tf.nn.log_softmax(logits, axis=-1)


def _stats(x, sq_norms, log_phi):
    phi = tf.exp(log_phi)
    return _Stats(
        counts=tf.reduce_sum(phi, axis=0),
        weighted_sums=tf.matmul(phi, x, transpose_a=True),
        weighted_sq=tf.linalg.matvec(phi, sq_norms, transpose_a=True),
        neg_entropy=tf.reduce_sum(phi * log_phi),
    )


def _optimal_means(stats, prior_var):
    """The optimal q(mu_k): s_k^2 = 1 / (1/sigma^2 + N_k), m_k = s_k^2 sum_i phi_ik x_i."""
    var = tf.math.reciprocal(tf.math.reciprocal(prior_var) + stats.counts)
    return GMMState(stats.weighted_sums * var[:, tf.newaxis], var)


def _elbo_from_stats(stats, state, prior_var, num_points, dim):
    """Closed-form ELBO from the sufficient statistics: O(K D) beyond the update."""
    log_2pi = math.log(2.0 * math.pi)
    num_components = tf.cast(tf.shape(state.means_var)[0], prior_var.dtype)
    sq_loc = tf.reduce_sum(tf.square(state.means_loc), axis=-1)
    expected_sq = dim * state.means_var + sq_loc
    log_prior_means = tf.reduce_sum(
        -0.5 * dim * (log_2pi + tf.math.log(prior_var)) - expected_sq / (2.0 * prior_var)
    )
    log_prior_labels = -num_points * tf.math.log(num_components)
    cross = tf.reduce_sum(state.means_loc * stats.weighted_sums)
    log_likelihood = (
        -0.5 * num_points * dim * log_2pi
        - 0.5 * tf.reduce_sum(stats.weighted_sq)
        + cross
        - 0.5 * tf.reduce_sum(stats.counts * expected_sq)
    )
    entropy_means = tf.reduce_sum(0.5 * dim * (log_2pi + 1.0 + tf.math.log(state.means_var)))
    return log_prior_means + log_prior_labels + log_likelihood - stats.neg_entropy + entropy_means


def gmm_step(state: GMMState, x, prior_var) -> tuple[GMMState, GMMInfo]:
    r"""One CAVI sweep: update every :math:`q(c_i)`, then every :math:`q(\mu_k)`.

    .. math::

        \varphi_{ik} \propto \exp\!\Big(x_i^\top m_k - \tfrac12\big(D s_k^2 + \lVert m_k
        \rVert^2\big)\Big), \qquad
        s_k^2 = \frac{1}{1/\sigma^2 + \sum_i \varphi_{ik}}, \qquad
        m_k = s_k^2 \sum_i \varphi_{ik} x_i.

    Each block update maximizes the ELBO exactly in its block, so the ELBO cannot decrease
    :cite:p:`blei2017variational` (§3). Cost :math:`O(NKD)` time and :math:`O(NK)` memory.

    Parameters
    ----------
    state : GMMState
        Current :math:`q(\mu)`.
    x : Tensor, shape [N, D]
        The data.
    prior_var : Tensor, scalar
        :math:`\sigma^2`, the prior variance of each cluster mean.

    Returns
    -------
    (GMMState, GMMInfo)
        The new state; the new responsibilities and the closed-form ELBO.

    Notes
    -----
    Derived step by step in :doc:`/book/chapters/04_cavi`.
    """
    num_points = tf.cast(tf.shape(x)[0], x.dtype)
    dim = tf.cast(tf.shape(x)[1], x.dtype)
    log_phi = _responsibilities(x, state)
    stats = _stats(x, tf.reduce_sum(tf.square(x), axis=-1), log_phi)
    new_state = _optimal_means(stats, prior_var)
    elbo = _elbo_from_stats(stats, new_state, prior_var, num_points, dim)
    return new_state, GMMInfo(tf.exp(log_phi), elbo)


def gmm_elbo(x, state: GMMState, responsibilities, prior_scale) -> tf.Tensor:
    r"""The closed-form ELBO of the mixture for any :math:`q(\mu)` and :math:`q(c)`.

    .. math::

        \mathrm{ELBO} = \sum_k \mathbb E[\log p(\mu_k)] + \sum_i \mathbb E[\log p(c_i)]
        + \sum_{i,k} \varphi_{ik}\, \mathbb E[\log \mathcal N(x_i; \mu_k, I)]
        + \sum_i H[q(c_i)] + \sum_k H[q(\mu_k)].

    Parameters
    ----------
    x : array_like, shape [N, D]
    state : GMMState
    responsibilities : array_like, shape [N, K]
        Rows on the simplex.
    prior_scale : float
        :math:`\sigma`.

    Returns
    -------
    tf.Tensor, scalar

    Notes
    -----
    Each expectation is a moment of a normal or categorical factor
    :cite:p:`blei2017variational` (§3); the derivation is in :doc:`/book/chapters/04_cavi`.
    :func:`fit_gmm` computes the same quantity from its update's sufficient statistics.
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 1:
        x = x[:, tf.newaxis]
    phi = tf.convert_to_tensor(responsibilities, x.dtype)
    log_phi = tf.math.log(tf.maximum(phi, tf.constant(np.finfo(np.float64).tiny, x.dtype)))
    stats = _stats(x, tf.reduce_sum(tf.square(x), axis=-1), log_phi)
    stats = stats._replace(neg_entropy=tf.reduce_sum(tf.math.multiply_no_nan(log_phi, phi)))
    prior_var = tf.square(tf.cast(prior_scale, x.dtype))
    return _elbo_from_stats(
        stats, state, prior_var, tf.cast(tf.shape(x)[0], x.dtype), tf.cast(tf.shape(x)[1], x.dtype)
    )


def _run_cavi(x, state, prior_var, tol, max_iters: int):
    """The whole CAVI loop as one tf.while_loop, with no host round-trip per iteration."""
    trace = tf.fill([max_iters], tf.constant(np.nan, x.dtype))
    phi = tf.zeros([tf.shape(x)[0], tf.shape(state.means_var)[0]], x.dtype)

    def cond(i, state, phi, trace, previous, converged):
        return (i < max_iters) & ~converged

    def body(i, state, phi, trace, previous, converged):
        state, info = gmm_step(state, x, prior_var)
        trace = tf.tensor_scatter_nd_update(trace, [[i]], [info.elbo])
        converged = (tol > 0) & (tf.abs(info.elbo - previous) <= tol * tf.abs(info.elbo))
        return i + 1, state, info.responsibilities, trace, info.elbo, converged

    start = (0, state, phi, trace, tf.constant(-np.inf, x.dtype), tf.constant(False))
    num, state, phi, trace, _, converged = tf.while_loop(cond, body, start)
    return state, phi, trace, num, converged


_run_cavi_compiled = tf.function(_run_cavi, jit_compile=True, reduce_retracing=True)
_run_cavi_graph = tf.function(_run_cavi, reduce_retracing=True)


def fit_gmm(
    x,
    num_components: int,
    prior_scale,
    num_iters: int = 200,
    tol: float = 1e-8,
    seed=None,
    init=None,
    num_restarts: int = 1,
    jit_compile: bool = True,
) -> GMMFit:
    r"""CAVI for the Bayesian mixture of Gaussians of :cite:t:`blei2017variational` (§3).

    The model is :math:`\mu_k \sim \mathcal N(0, \sigma^2 I)`,
    :math:`c_i \sim \mathrm{Categorical}(1/K)`, :math:`x_i \mid c_i, \mu \sim
    \mathcal N(\mu_{c_i}, I)`. The mean-field family is :math:`q(\mu_k) = \mathcal N(m_k,
    s_k^2 I)` and :math:`q(c_i) = \mathrm{Categorical}(\varphi_i)`. Each iteration is one
    :func:`gmm_step`; the ELBO is computed in closed form after every iteration, and the
    loop stops when its relative change is at most ``tol``. The loop runs as one compiled
    ``tf.while_loop`` (XLA when ``jit_compile=True``): the data stay on the device (a GPU
    when present) and nothing returns to the host until it ends.

    Parameters
    ----------
    x : array_like, shape [N, D] or [N]
        The data; a 1-D array is :math:`D = 1`. Float64 input runs in float64.
    num_components : int
        :math:`K \ge 1`, at most :math:`N`.
    prior_scale : float
        :math:`\sigma > 0`, the prior standard deviation of each cluster mean.
    num_iters : int, default 200
        The maximum number of iterations.
    tol : float, default 1e-8
        Stop when :math:`|\Delta \mathrm{ELBO}| \le \mathrm{tol}\cdot|\mathrm{ELBO}|`;
        0 runs all ``num_iters``.
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
        ``elbo_trace`` [num_iters run], ``converged``, ``num_iters``.

    Raises
    ------
    ValueError
        If ``x`` is empty, not finite or of the wrong rank; ``num_components < 1`` or
        :math:`> N`; ``prior_scale`` is not positive; ``num_iters``/``num_restarts`` are
        below 1; ``tol`` is negative; or ``init`` has the wrong shape.
    TypeError
        If ``num_components``, ``num_iters`` or ``num_restarts`` is not an int.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`.
    """
    x, num_components, prior_scale = _gmm_data(x, num_components, prior_scale)
    num_iters = check_positive_int(num_iters, "num_iters")
    num_restarts = check_positive_int(num_restarts, "num_restarts")
    if not tol >= 0:
        raise ValueError(f"`tol` must be non-negative, got {tol}.")
    seeds = tfp.random.split_seed(sanitize_seed(seed), n=num_restarts)
    prior_var = tf.square(prior_scale)
    run = _run_cavi_compiled if jit_compile else _run_cavi_graph
    best = None
    for restart in range(num_restarts):
        state = gmm_init(x, num_components, seeds[restart], init if restart == 0 else None)
        state, phi, trace, num, converged = run(
            x, state, prior_var, tf.constant(tol, x.dtype), num_iters
        )
        fit = GMMFit(state.means_loc, state.means_var, phi, trace[:num], converged, num)
        if best is None or float(fit.elbo_trace[-1]) > float(best.elbo_trace[-1]):
            best = fit
    return best


# ---------------------------------------------------------------------------------------
# Gaussian with unknown mean and precision
# ---------------------------------------------------------------------------------------


class NormalGammaPrior(NamedTuple):
    r"""Prior :math:`\tau \sim \mathrm{Gamma}(a_0, b_0)`,
    :math:`\mu \mid \tau \sim \mathcal N(\mu_0, (\lambda_0 \tau)^{-1})`."""

    loc: float = 0.0
    r""":math:`\mu_0`."""
    precision_scale: float = 1.0
    r""":math:`\lambda_0 > 0`."""
    concentration: float = 1.0
    r""":math:`a_0 > 0`."""
    rate: float = 1.0
    r""":math:`b_0 > 0`."""


class NormalGammaFit(NamedTuple):
    r"""Result of :func:`fit_normal_gamma` and :func:`normal_gamma_posterior`."""

    mean: tfd.Distribution
    r"""The (marginal) distribution of :math:`\mu`: ``tfd.Normal`` for the mean-field fit,
    ``tfd.StudentT`` for the exact posterior."""
    precision: tfd.Gamma
    r"""The distribution of :math:`\tau`."""
    num_iters: int
    """Iterations run (0 for the exact posterior)."""
    converged: bool
    """Whether the fixed point was reached within ``tol``."""


def _normal_gamma_inputs(x, prior):
    x = as_float_tensor(x, "x", common_float_dtype(x))
    if x.shape.rank != 1 or x.shape[0] == 0:
        raise ValueError(f"`x` must be a non-empty 1-D array, got shape {x.shape.as_list()}.")
    check_finite(x, "x")
    if not isinstance(prior, NormalGammaPrior):
        raise TypeError(
            f"`prior` must be a vicourse.NormalGammaPrior, got {type(prior).__name__}; "
            "e.g. NormalGammaPrior(loc=0.0, precision_scale=1.0, concentration=1.0, rate=1.0)."
        )
    for name in ("precision_scale", "concentration", "rate"):
        check_positive(as_float_tensor(getattr(prior, name), f"prior.{name}"), f"prior.{name}")
    return x, [tf.cast(v, x.dtype) for v in prior]


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
    prior : NormalGammaPrior

    Returns
    -------
    NormalGammaFit
        ``mean`` the Student-t marginal of :math:`\mu`, ``precision`` the Gamma marginal.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`, as the reference for :func:`fit_normal_gamma`.
    """
    x, (loc0, lam0, a0, b0) = _normal_gamma_inputs(x, prior)
    n = tf.cast(tf.shape(x)[0], x.dtype)
    mean_x = tf.reduce_mean(x)
    lam_n = lam0 + n
    loc_n = (lam0 * loc0 + n * mean_x) / lam_n
    a_n = a0 + n / 2.0
    b_n = (
        b0
        + 0.5 * tf.reduce_sum(tf.square(x - mean_x))
        + lam0 * n * tf.square(mean_x - loc0) / (2.0 * lam_n)
    )
    mean = tfd.StudentT(df=2.0 * a_n, loc=loc_n, scale=tf.sqrt(b_n / (a_n * lam_n)))
    return NormalGammaFit(mean, tfd.Gamma(a_n, b_n), 0, True)


def fit_normal_gamma(
    x, prior: NormalGammaPrior, num_iters: int = 100, tol: float = 1e-12
) -> NormalGammaFit:
    r"""Mean-field CAVI :math:`q(\mu)q(\tau)` for a Gaussian with unknown mean and precision.

    With :math:`x_i \sim \mathcal N(\mu, \tau^{-1})` and the prior of
    :class:`NormalGammaPrior`, the optimal factors are :cite:p:`bishop2006pattern`
    (§10.1.3)

    .. math::

        q(\mu) = \mathcal N\!\Big(\mu_N, \frac{1}{(\lambda_0 + N)\,\mathbb E[\tau]}\Big),
        \quad \mu_N = \frac{\lambda_0\mu_0 + N\bar x}{\lambda_0 + N}, \\
        q(\tau) = \mathrm{Gamma}\Big(a_0 + \frac{N + 1}{2},\;
        b_0 + \tfrac12\,\mathbb E_\mu\Big[\sum_i (x_i - \mu)^2 + \lambda_0(\mu - \mu_0)^2
        \Big]\Big),

    iterated until :math:`\mathbb E[\tau] = a_N / b_N` stops changing (relative ``tol``).

    Parameters
    ----------
    x : array_like, shape [N]
    prior : NormalGammaPrior
    num_iters : int, default 100
    tol : float, default 1e-12

    Returns
    -------
    NormalGammaFit
        ``mean`` is :math:`q(\mu)` (``tfd.Normal``), ``precision`` is :math:`q(\tau)`.

    Raises
    ------
    ValueError, TypeError
        For empty or non-finite ``x``, a non-positive prior parameter, or a ``prior`` that
        is not a :class:`NormalGammaPrior`.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`; compare :func:`normal_gamma_posterior`.
    """
    x, (loc0, lam0, a0, b0) = _normal_gamma_inputs(x, prior)
    num_iters = check_positive_int(num_iters, "num_iters")
    n = tf.cast(tf.shape(x)[0], x.dtype)
    sum_x, sum_sq = tf.reduce_sum(x), tf.reduce_sum(tf.square(x))
    loc_n = (lam0 * loc0 + sum_x) / (lam0 + n)
    a_n = a0 + (n + 1.0) / 2.0
    expected_tau = a0 / b0
    converged, iterations = False, 0
    while not converged and iterations < num_iters:
        iterations += 1
        var_mu = 1.0 / ((lam0 + n) * expected_tau)
        second_moment = tf.square(loc_n) + var_mu
        b_n = b0 + 0.5 * (
            sum_sq
            - 2.0 * loc_n * sum_x
            + n * second_moment
            + lam0 * (second_moment - 2.0 * loc0 * loc_n + tf.square(loc0))
        )
        new_tau = a_n / b_n
        converged = bool(tf.abs(new_tau - expected_tau) <= tol * tf.abs(new_tau))
        expected_tau = new_tau
    q_mu = tfd.Normal(loc_n, tf.math.rsqrt((lam0 + n) * expected_tau))
    return NormalGammaFit(q_mu, tfd.Gamma(a_n, b_n), iterations, converged)


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
    covariance : array_like, shape [D, D]
        Symmetric positive definite.

    Returns
    -------
    tfp.distributions.MultivariateNormalDiag

    Raises
    ------
    ValueError
        If the shapes disagree, the matrix is not symmetric or not positive definite, or
        an entry is not finite.

    Notes
    -----
    Taught in :doc:`/book/chapters/04_cavi`.
    """
    dtype = common_float_dtype(loc, covariance)
    loc = as_float_tensor(loc, "loc", dtype)
    cov = as_float_tensor(covariance, "covariance", dtype)
    if loc.shape.rank != 1 or cov.shape.rank != 2 or cov.shape != (loc.shape[0],) * 2:
        raise ValueError(
            f"`loc` must have shape [D] and `covariance` shape [D, D], got "
            f"{loc.shape.as_list()} and {cov.shape.as_list()}."
        )
    check_finite(loc, "loc")
    check_finite(cov, "covariance")
    cov_np = cov.numpy()
    if not np.allclose(cov_np, cov_np.T, rtol=1e-10, atol=1e-12):
        raise ValueError("`covariance` must be symmetric; pass (S + S.T) / 2.")
    if np.any(np.linalg.eigvalsh(cov_np) <= 0):
        raise ValueError("`covariance` must be positive definite (all eigenvalues > 0).")
    precision_diag = tf.linalg.diag_part(tf.linalg.inv(cov))
    return tfd.MultivariateNormalDiag(loc, scale_diag=tf.math.rsqrt(precision_diag))

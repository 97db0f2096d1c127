r"""Target posteriors with known answers, for testing variational families (chapters 9, 10).

Each function returns a :class:`Target`: an unnormalized log-density
:math:`\log \tilde p(z)` (what :func:`vicourse.fit_vi` calls ``log_joint``), its exact
log-normalizer :math:`\log Z = \log \int \tilde p(z)\,dz`, so that the ELBO's gap
:math:`\log Z - \mathrm{ELBO} = \mathrm{KL}(q \,\|\, p)` can be measured, and the exact
posterior means and standard deviations:

- :func:`correlated_gaussian`: :math:`\mathcal N(0, \Sigma)` with equal correlations;
- :func:`banana`: a twisted Gaussian :cite:p:`haario1999adaptive`;
- :func:`funnel`: Neal's funnel :cite:p:`neal2003slice`;
- :func:`bimodal`: an equal mixture of two Gaussians;
- :func:`eight_schools`: the centered eight-schools model
  :cite:p:`rubin1981estimation,gelman2013bayesian`, whose evidence and moments come from
  a one-dimensional quadrature over :math:`\tau`.

All are in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._validation import check_count, check_real

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "Target",
    "banana",
    "bimodal",
    "correlated_gaussian",
    "eight_schools",
    "funnel",
]

F64 = np.float64


class Target(NamedTuple):
    """A posterior with known answers (the result of the functions of this module)."""

    name: str
    """A short label."""
    log_prob: Callable
    r"""The unnormalized log-density :math:`\log \tilde p(z)` for ``z`` of shape ``[S, D]`` (on
    the support), shape ``[S]``; raises ``ValueError`` for another event shape."""
    event_shape: list
    """``[D]``."""
    log_normalizer: float
    r"""The log-normalizer :math:`\log Z = \log \int \tilde p(z)\,dz` (0 for a normalized
    density)."""
    mean: np.ndarray
    """The exact posterior mean, shape [D]."""
    sd: np.ndarray
    """The exact posterior standard deviations, shape [D]."""
    bijector: tfb.Bijector | None
    r"""Maps :math:`\mathbb R^D` onto the support, or ``None`` when the support is
    :math:`\mathbb R^D`: pass it to :func:`vicourse.make_surrogate`."""
    coordinates: tuple
    """Names of the D coordinates."""
    distribution: tfd.Distribution | None
    """The exact posterior as a TFP distribution, where TFP has it; else ``None``."""


def _checked(log_density, dim, name):
    """``log_density`` with a static check of the event shape ``[D]``."""

    def log_prob(z):
        z = tf.convert_to_tensor(z, F64)
        if z.shape.rank != 2 or z.shape[-1] != dim:
            raise ValueError(
                f"the {name} target has event shape [{dim}]: z must have shape [S, {dim}], "
                f"got {z.shape.as_list()}. Build the surrogate with event_shape=[{dim}]."
            )
        return log_density(z)

    log_prob.__name__ = f"{name.replace(' ', '_')}_log_prob"
    return log_prob


def _names(prefix, dim):
    return tuple(f"{prefix}{i + 1}" for i in range(dim))


def correlated_gaussian(*, dim: int = 2, correlation: float = 0.9, scale: float = 1.0) -> Target:
    r"""The Gaussian :math:`\mathcal N(0, \Sigma)`, :math:`\Sigma = s^2[(1-\rho) I + \rho
    \mathbf 1\mathbf 1^\top]`: every pair of coordinates has correlation :math:`\rho`.

    Mean field finds the variances :math:`1/\Lambda_{ii}` (:math:`\Lambda = \Sigma^{-1}`),
    smaller than :math:`\Sigma_{ii}` (chapter 4); a full-rank Gaussian is exact. Normalized:
    :math:`\log Z = 0`.

    Parameters
    ----------
    dim : int, default 2
        :math:`D`.
    correlation : float, default 0.9
        :math:`\rho`, in :math:`(-1/(D-1), 1)` so that :math:`\Sigma` is positive definite.
    scale : float, default 1.0
        :math:`s`, every coordinate's standard deviation.

    Returns
    -------
    Target
        With ``distribution`` the ``tfd.MultivariateNormalTriL``.

    Raises
    ------
    TypeError, ValueError
        For a bad count, a correlation outside the range, or a non-positive scale.

    Notes
    -----
    Used in :doc:`/book/chapters/09_richer_families`.
    """
    dim = check_count(dim, "dim", minimum=2, maximum=10_000)
    low = -1.0 / (dim - 1)
    rho = check_real(
        correlation, "correlation", low=low, high=1.0, low_inclusive=False, high_inclusive=False
    )
    scale = check_real(scale, "scale", low=0.0, low_inclusive=False)
    cov = scale**2 * ((1 - rho) * np.eye(dim) + rho * np.ones((dim, dim)))
    distribution = tfd.MultivariateNormalTriL(np.zeros(dim), np.linalg.cholesky(cov))
    return Target(
        "correlated Gaussian",
        _checked(distribution.log_prob, dim, "correlated Gaussian"),
        [dim],
        0.0,
        np.zeros(dim),
        np.full(dim, scale),
        None,
        _names("z", dim),
        distribution,
    )


def banana(*, curvature: float = 1.0, scale: float = 1.0) -> Target:
    r"""A twisted Gaussian ("banana") :cite:p:`haario1999adaptive` in two dimensions:

    .. math::

        u_1 \sim \mathcal N(0, 1), \quad u_2 \mid u_1 \sim \mathcal N\big(b\,(u_1^2 - 1),
        1\big), \qquad z = s\,u.

    The twist :math:`u_2 \mapsto u_2 + b(u_1^2-1)` has unit Jacobian, so the density is
    normalized, :math:`\log Z = 0`; the means are 0, the sds :math:`s` and
    :math:`s\sqrt{1 + 2b^2}`. A Gaussian family cannot bend; a flow can.

    Parameters
    ----------
    curvature : float, default 1.0
        :math:`b \ge 0`.
    scale : float, default 1.0
        :math:`s > 0`.

    Returns
    -------
    Target

    Raises
    ------
    TypeError, ValueError
        For a negative curvature or a non-positive scale.

    Notes
    -----
    Used in :doc:`/book/chapters/09_richer_families`.
    """
    b = check_real(curvature, "curvature", low=0.0)
    s = check_real(scale, "scale", low=0.0, low_inclusive=False)
    standard = tfd.Normal(F64(0.0), F64(1.0))

    def log_density(z):
        u1, u2 = z[:, 0] / s, z[:, 1] / s
        return standard.log_prob(u1) + standard.log_prob(u2 - b * (u1**2 - 1.0)) - 2 * np.log(s)

    return Target(
        "banana",
        _checked(log_density, 2, "banana"),
        [2],
        0.0,
        np.zeros(2),
        np.array([s, s * np.sqrt(1 + 2 * b**2)]),
        None,
        ("z1", "z2"),
        None,
    )


def funnel(*, dim: int = 2, scale: float = 3.0) -> Target:
    r"""Neal's funnel :cite:p:`neal2003slice`:

    .. math::

        v \sim \mathcal N(0, \sigma_v^2), \qquad x_i \mid v \sim \mathcal N\big(0, e^{v}\big),
        \quad i = 1, \dots, D - 1,

    with :math:`z = (v, x_1, \dots, x_{D-1})`. The scale of :math:`x` changes by
    :math:`e^{\pm 3}` across :math:`v`'s range: a neck and a mouth that no single Gaussian
    covers. Normalized, :math:`\log Z = 0`; the means are 0, :math:`\mathrm{sd}(v) =
    \sigma_v` and :math:`\mathrm{sd}(x_i) = e^{\sigma_v^2/4}` (since
    :math:`\mathbb E[e^{v}] = e^{\sigma_v^2/2}`).

    Parameters
    ----------
    dim : int, default 2
        :math:`D` (Neal used 10).
    scale : float, default 3.0
        :math:`\sigma_v`.

    Returns
    -------
    Target

    Raises
    ------
    TypeError, ValueError
        For a bad count or a non-positive scale.

    Notes
    -----
    Used in :doc:`/book/chapters/09_richer_families`.
    """
    dim = check_count(dim, "dim", minimum=2, maximum=10_000)
    sigma_v = check_real(scale, "scale", low=0.0, low_inclusive=False)
    prior_v = tfd.Normal(F64(0.0), F64(sigma_v))

    def log_density(z):
        v, x = z[:, 0], z[:, 1:]
        like = tfd.Normal(F64(0.0), tf.exp(v / 2)[:, None]).log_prob(x)
        return prior_v.log_prob(v) + tf.reduce_sum(like, axis=-1)

    sd = np.full(dim, np.exp(sigma_v**2 / 4))
    sd[0] = sigma_v
    return Target(
        "funnel",
        _checked(log_density, dim, "funnel"),
        [dim],
        0.0,
        np.zeros(dim),
        sd,
        None,
        ("v", *_names("x", dim - 1)),
        None,
    )


def bimodal(*, dim: int = 2, distance: float = 2.0, sd: float = 0.6) -> Target:
    r"""An equal mixture of two Gaussians, :math:`\tfrac12 \mathcal N(-a e_1, \sigma^2 I) +
    \tfrac12 \mathcal N(a e_1, \sigma^2 I)`, modes at :math:`\pm a` on the first axis.

    A single Gaussian fitted by reverse KL covers one mode, with ELBO about
    :math:`-\log 2` when the modes are far apart; a two-component mixture can cover both.
    Normalized, :math:`\log Z = 0`; the means are 0, the sds :math:`\sqrt{\sigma^2 + a^2}`
    (first axis) and :math:`\sigma`.

    Parameters
    ----------
    dim : int, default 2
        :math:`D \ge 1`.
    distance : float, default 2.0
        :math:`a > 0`, each mode's distance from the origin.
    sd : float, default 0.6
        :math:`\sigma > 0`.

    Returns
    -------
    Target
        With ``distribution`` the ``tfd.MixtureSameFamily``.

    Raises
    ------
    TypeError, ValueError
        For a bad count, distance or sd.

    Notes
    -----
    Used in :doc:`/book/chapters/09_richer_families`.
    """
    dim = check_count(dim, "dim", maximum=10_000)
    a = check_real(distance, "distance", low=0.0, low_inclusive=False)
    sigma = check_real(sd, "sd", low=0.0, low_inclusive=False)
    means = np.zeros((2, dim))
    means[:, 0] = [-a, a]
    distribution = tfd.MixtureSameFamily(
        tfd.Categorical(probs=np.array([0.5, 0.5])),
        tfd.MultivariateNormalDiag(means, np.full((2, dim), sigma)),
    )
    sds = np.full(dim, sigma)
    sds[0] = np.sqrt(sigma**2 + a**2)
    return Target(
        "bimodal",
        _checked(distribution.log_prob, dim, "bimodal"),
        [dim],
        0.0,
        np.zeros(dim),
        sds,
        None,
        _names("z", dim),
        distribution,
    )


SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
"""Eight schools: estimated coaching effects :cite:p:`rubin1981estimation`."""
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
"""Eight schools: their standard errors."""
_MU_SCALE, _TAU_SCALE = 5.0, 5.0


def _schools_given_tau(tau):
    """For each tau on a grid: log p(y | tau) with mu and theta integrated out, and the
    conditional posterior moments of mu and theta given tau (all Gaussian)."""
    var = SCHOOLS_SIGMA**2 + tau[:, None] ** 2  # [G, 8]: y_j | mu, tau ~ N(mu, var_j)
    precision = 1 / _MU_SCALE**2 + np.sum(1 / var, axis=1)  # of mu | tau, y
    mu_mean = np.sum(SCHOOLS_Y / var, axis=1) / precision
    mu_var = 1 / precision
    # log N(y; 0, diag(var) + s^2 11^T) by the matrix determinant lemma and Woodbury.
    quad = np.sum(SCHOOLS_Y**2 / var, axis=1) - precision * mu_mean**2
    logdet = np.sum(np.log(var), axis=1) + np.log(_MU_SCALE**2 * precision)
    log_like = -0.5 * (quad + logdet + 8 * np.log(2 * np.pi))
    shrink = SCHOOLS_SIGMA**2 / var  # weight of mu in E[theta_j | mu, tau, y]
    theta_mean = (1 - shrink) * SCHOOLS_Y + shrink * mu_mean[:, None]
    theta_var = SCHOOLS_SIGMA**2 * (1 - shrink) + shrink**2 * mu_var[:, None]
    return log_like, mu_mean, mu_var, theta_mean, theta_var


def _schools_exact(num_points=20_001):
    """log p(y), and the posterior means and sds of (mu, tau, theta), by quadrature over
    log tau on [-15, 10] (the integrand is below 1e-6 of its peak at both ends)."""
    log_tau = np.linspace(-15.0, 10.0, num_points)
    tau = np.exp(log_tau)
    log_prior = np.log(2 / (np.pi * _TAU_SCALE)) - np.log1p((tau / _TAU_SCALE) ** 2)
    log_like, mu_mean, mu_var, theta_mean, theta_var = _schools_given_tau(tau)
    log_integrand = log_prior + log_tau + log_like  # d tau = tau d log tau
    peak = log_integrand.max()
    weights = np.exp(log_integrand - peak)
    step = log_tau[1] - log_tau[0]
    log_evidence = peak + np.log(np.sum(weights) * step)
    weights /= weights.sum()
    mean_mu = weights @ mu_mean
    sd_mu = np.sqrt(weights @ (mu_var + mu_mean**2) - mean_mu**2)
    mean_tau = weights @ tau
    sd_tau = np.sqrt(weights @ tau**2 - mean_tau**2)
    mean_theta = weights @ theta_mean
    sd_theta = np.sqrt(weights @ (theta_var + theta_mean**2) - mean_theta**2)
    mean = np.concatenate([[mean_mu, mean_tau], mean_theta])
    sd = np.concatenate([[sd_mu, sd_tau], sd_theta])
    return float(log_evidence), mean, sd


def eight_schools() -> Target:
    r"""The centered eight-schools model :cite:p:`rubin1981estimation,gelman2013bayesian`:

    .. math::

        \mu \sim \mathcal N(0, 5^2), \quad \tau \sim \mathrm{HalfCauchy}(0, 5), \quad
        \theta_j \sim \mathcal N(\mu, \tau^2), \quad y_j \sim \mathcal N(\theta_j,
        \sigma_j^2), \quad j = 1, \dots, 8,

    with ``log_prob`` :math:`\log p(y, z)` over :math:`z = (\mu, \tau, \theta_1, \dots,
    \theta_8)`, and ``bijector`` mapping :math:`(\mu, \log\tau, \theta)` to it. Given
    :math:`\tau`, everything else is Gaussian: :math:`y \mid \tau \sim \mathcal N(0,
    \operatorname{diag}(\sigma^2 + \tau^2) + 5^2 \mathbf 1\mathbf 1^\top)`, and
    :math:`\mu, \theta \mid \tau, y` in closed form. The evidence
    :math:`\log p(y) = \log \int p(\tau)\, p(y \mid \tau)\, d\tau` and the posterior
    moments (by the laws of total expectation and variance) are therefore one-dimensional
    integrals, done here by quadrature on 20,001 points of :math:`\log \tau` (relative
    error far below 1e-6). The centered form couples :math:`\theta` and :math:`\tau` in a
    funnel: mean field fails on it.

    Returns
    -------
    Target
        ``log_normalizer`` is :math:`\log p(y)`.

    Notes
    -----
    Used in :doc:`/book/chapters/09_richer_families` and
    :doc:`/book/chapters/10_checking_vi`.
    """
    mu_prior = tfd.Normal(F64(0.0), F64(_MU_SCALE))
    tau_prior = tfd.HalfCauchy(F64(0.0), F64(_TAU_SCALE))

    def log_density(z):
        mu, tau, theta = z[:, 0], z[:, 1], z[:, 2:]
        prior = mu_prior.log_prob(mu) + tau_prior.log_prob(tau)
        group = tfd.Normal(mu[:, None], tau[:, None]).log_prob(theta)
        like = tfd.Normal(theta, SCHOOLS_SIGMA).log_prob(SCHOOLS_Y)
        return prior + tf.reduce_sum(group + like, axis=-1)

    log_evidence, mean, sd = _schools_exact()
    support = tfb.Blockwise([tfb.Identity(), tfb.Exp(), tfb.Identity()], block_sizes=[1, 1, 8])
    return Target(
        "eight schools",
        _checked(log_density, 10, "eight schools"),
        [10],
        log_evidence,
        mean,
        sd,
        support,
        ("mu", "tau", *_names("theta", 8)),
        None,
    )

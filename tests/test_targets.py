"""Tests for vicourse.targets: normalizing constants and moments against independent
computations (grids, Gaussian conditioning, exact samplers)."""

import numpy as np
import pytest
from scipy import stats

import vicourse
from vicourse import targets


def _grid_moments(target, lo, hi, num=801):
    """Mass, means and sds of exp(log_prob) on a 2-D grid (trapezoid-free Riemann sum)."""
    axes = [np.linspace(lo[i], hi[i], num) for i in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(target.log_prob(grid).numpy())
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    mass = density.sum() * cell
    mean = (density @ grid) * cell / mass
    sd = np.sqrt((density @ (grid - mean) ** 2) * cell / mass)
    return mass, mean, sd


@pytest.mark.parametrize(
    "target, lo, hi",
    [
        (targets.correlated_gaussian(correlation=0.9, scale=2.0), [-12, -12], [12, 12]),
        (targets.banana(curvature=1.0), [-8, -6], [8, 40]),
        (targets.bimodal(), [-6, -4], [6, 4]),
    ],
)
def test_normalized_targets_integrate_to_one_with_the_stated_moments(target, lo, hi):
    """801 x 801 grids wide enough that the mass outside is below 1e-6: mass, means and
    sds agree with the closed forms to 1e-3."""
    mass, mean, sd = _grid_moments(target, lo, hi)
    assert target.log_normalizer == 0.0
    assert mass == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(mean, target.mean, atol=1e-3)
    np.testing.assert_allclose(sd, target.sd, rtol=1e-3)


def test_funnel_density_and_moments():
    funnel = targets.funnel(dim=3, scale=3.0)
    z = np.array([[0.5, -1.0, 2.0], [-2.0, 0.1, 0.0]])
    want = stats.norm(0, 3).logpdf(z[:, 0]) + stats.norm(0, np.exp(z[:, :1] / 2)).logpdf(
        z[:, 1:]
    ).sum(1)
    np.testing.assert_allclose(funnel.log_prob(z).numpy(), want)
    np.testing.assert_allclose(funnel.sd, [3.0, np.exp(2.25), np.exp(2.25)])


def test_eight_schools_quadrature_matches_gaussian_conditioning():
    """Given tau, (mu, theta, y) is jointly Gaussian: the closed forms used by the
    quadrature must equal the generic Gaussian marginal and conditional."""
    tau = np.array([0.3, 4.0, 25.0])
    log_like, mu_mean, mu_var, theta_mean, theta_var = targets._schools_given_tau(tau)
    sigma, y = targets.SCHOOLS_SIGMA, targets.SCHOOLS_Y
    for i, t in enumerate(tau):
        a = np.zeros((17, 17))  # (mu, theta, y) = a @ standard normals
        a[:9, 0] = 5.0
        a[9:, 0] = 5.0
        a[1:9, 1:9] = a[9:, 1:9] = t * np.eye(8)
        a[9:, 9:] = np.diag(sigma)
        cov = a @ a.T
        cross, cov_y = cov[:9, 9:], cov[9:, 9:]
        mean = cross @ np.linalg.solve(cov_y, y)
        var = np.diag(cov[:9, :9] - cross @ np.linalg.solve(cov_y, cross.T))
        want = stats.multivariate_normal(np.zeros(8), cov_y).logpdf(y)
        assert log_like[i] == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose([mu_mean[i], *theta_mean[i]], mean, rtol=1e-10)
        np.testing.assert_allclose([mu_var[i], *theta_var[i]], var, rtol=1e-10)


def test_eight_schools_evidence_matches_importance_sampling():
    """An independent check of log p(y): importance sampling with a wide Student-t proposal
    in (mu, log tau, theta) (200,000 draws, seed 0) agrees within 4 standard errors."""
    schools = targets.eight_schools()
    assert schools.log_normalizer == pytest.approx(-31.3113, abs=1e-3)
    rng = np.random.default_rng(0)
    num = 200_000
    loc = np.concatenate([[4.4, 1.0], schools.mean[2:]])
    scale = np.concatenate([[4.0, 1.2], np.full(8, 6.0)])
    u = loc + scale * rng.standard_t(5, size=(num, 10))
    log_proposal = stats.t(5, loc, scale).logpdf(u).sum(1)
    z = u.copy()
    z[:, 1] = np.exp(u[:, 1])
    log_w = schools.log_prob(z).numpy() + u[:, 1] - log_proposal
    estimate = np.log(np.mean(np.exp(log_w - log_w.max()))) + log_w.max()
    w = np.exp(log_w - log_w.max())
    stderr = w.std() / w.mean() / np.sqrt(num)
    assert abs(estimate - schools.log_normalizer) < 4 * stderr + 1e-3, (estimate, stderr)


def test_eight_schools_has_the_known_posterior_means():
    schools = targets.eight_schools()
    assert schools.mean[0] == pytest.approx(4.40, abs=0.01)  # mu
    assert schools.mean[1] == pytest.approx(3.60, abs=0.01)  # tau
    assert schools.coordinates[:3] == ("mu", "tau", "theta1")


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (targets.correlated_gaussian, dict(correlation=1.0), r"`correlation` must be > -1"),
        (targets.funnel, dict(dim=1), r"`dim` must be at least 2"),
        (targets.bimodal, dict(sd=0.0), r"`sd` must be > 0"),
        (targets.banana, dict(curvature=-1.0), r"`curvature` must be >= 0"),
    ],
)
def test_bad_parameters_are_pinned(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_log_prob_checks_the_event_shape():
    with pytest.raises(ValueError, match=r"the banana target has event shape \[2\]"):
        vicourse.targets.banana().log_prob(np.zeros((4, 3)))

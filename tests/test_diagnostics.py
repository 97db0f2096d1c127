"""Tests for vicourse.diagnostics: the NUTS reference against an exact posterior, PSIS
k-hat on pairs with known tails, PSIS-corrected moments, and the comparison table."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vicourse
from vicourse import diagnostics

tfd = tfp.distributions

X = np.random.default_rng(3).normal(1.5, 1.0, size=12)


def _model(n=12):
    return tfd.JointDistributionNamed(
        dict(
            z=tfd.Normal(np.float64(0.0), np.float64(2.0)),
            x=lambda z: tfd.Independent(tfd.Normal(z[..., None] * np.ones(n), 1.0), 1),
        )
    )


def test_reference_posterior_matches_the_conjugate_posterior():
    """Chapter 1's normal-normal model. The Monte Carlo error of the mean is sd/sqrt(ESS);
    seed 0 is fixed and a 4-SE miss has probability ~6e-5. The sd of the draws has relative
    error about 1/sqrt(2 ESS) (~2% at ESS ~1000): 10% is over 4 of those."""
    exact = vicourse.normal_normal_posterior(X, 0.0, 2.0, 1.0)
    ref = vicourse.reference_posterior(_model(), {"x": X}, num_draws=500, seed=0)
    assert ref.draws["z"].shape == (500, 4)
    assert float(ref.rhat["z"]) < 1.02 and float(ref.ess["z"]) > 500
    se = float(exact.stddev()) / np.sqrt(float(ref.ess["z"]))
    assert abs(float(ref.mean["z"]) - float(exact.mean())) < 4 * se
    assert abs(float(ref.sd["z"]) / float(exact.stddev()) - 1) < 0.1


def test_same_seed_same_draws_and_no_retrace():
    model = _model()
    a = vicourse.reference_posterior(model, {"x": X}, num_draws=20, seed=1, jit_compile=False)
    before = diagnostics._nuts_graph.experimental_get_tracing_count()
    b = vicourse.reference_posterior(model, {"x": X}, num_draws=20, seed=1, jit_compile=False)
    c = vicourse.reference_posterior(model, {"x": X + 1.0}, num_draws=20, seed=2, jit_compile=False)
    assert diagnostics._nuts_graph.experimental_get_tracing_count() == before
    np.testing.assert_array_equal(a.draws["z"], b.draws["z"])
    assert float(c.mean["z"]) > float(a.mean["z"])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(model=tfd.Normal(0.0, 1.0)), TypeError, r"`model` must be a tfp.distributions.J"),
        (dict(observed={"y": X}), ValueError, r"`observed` does not match the model"),
        (dict(observed={"x": X, "z": 1.0}), ValueError, r"`observed` pins every variable"),
        (dict(num_chains=1), ValueError, r"`num_chains` must be at least 2"),
    ],
)
def test_reference_posterior_bad_inputs(kwargs, error, message):
    args = dict(model=_model(), observed={"x": X}, num_draws=10, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.reference_posterior(**args)


# ---------------------------------------------------------------------------------------
# PSIS k-hat and corrected moments
# ---------------------------------------------------------------------------------------

F64 = np.float64
STANDARD = tfd.Normal(F64(0.0), F64(1.0))


def test_khat_is_high_for_a_normal_proposal_and_a_student_t_target():
    """N(0, 1) for a t(3) target: the weights grow like exp(z^2/2) and their tail has
    k = 1. Measured k-hat over seeds 0-11 was 0.57-0.91 at S = 1,000 and 0.60-0.91 at
    S = 2,000; seed 0 is fixed, and the test needs > 0.5."""
    target = tfd.StudentT(F64(3.0), F64(0.0), F64(1.0))
    result = vicourse.psis_khat(target.log_prob, STANDARD, num_samples=2000, seed=0)
    assert result.khat > 0.5, result.khat
    assert result.khat_threshold == pytest.approx(min(1 - 1 / np.log10(2000), 0.7))


def test_khat_is_low_for_a_wider_proposal():
    """N(0, 2^2) for N(0, 1): the weights are bounded (by 2 e^0 = 2), k <= 0: measured
    -1.3 to -2.0 over 12 seeds."""
    wide = tfd.Normal(F64(0.0), F64(2.0))
    result = vicourse.psis_khat(STANDARD.log_prob, wide, num_samples=2000, seed=0)
    assert result.khat < 0.5
    assert result.ess > 0.3 * 2000  # the weights' variance is finite: ESS is a fraction of S


def test_khat_is_low_for_the_exact_posterior_and_psis_gives_the_evidence():
    """Chapter 1's conjugate model with the exact posterior as proposal: every log-weight
    is log p(x), so the tail is empty (k-hat = -inf), the ESS is S and the evidence exact."""
    x = np.random.default_rng(0).normal(1.0, 1.0, 20)
    posterior = vicourse.normal_normal_posterior(x, 0.0, 2.0, 1.0)

    def log_joint(z):
        like = tfd.Normal(z[:, None], F64(1.0)).log_prob(x)
        return tfd.Normal(F64(0.0), F64(2.0)).log_prob(z) + tf.reduce_sum(like, -1)

    result = vicourse.psis_khat(log_joint, posterior, num_samples=4000, seed=2)
    exact = float(vicourse.normal_normal_log_evidence(x, 0.0, 2.0, 1.0))
    assert result.khat < 0.5
    assert result.log_evidence == pytest.approx(exact, abs=1e-9)
    assert result.ess == pytest.approx(4000)


def test_khat_is_low_for_a_near_exact_posterior_through_psis():
    """The exact posterior widened by 10%: the log-weights are not constant, so the tail
    fit runs through ArviZ's PSIS (the test above stops before it). The weights are bounded
    (q is wider than p), so k <= 0: measured -1.6 to -2.0 over seeds 0-5. The evidence
    estimate is within 0.004 nats of the exact one over those seeds (tolerance 0.02: five
    times that), and the ESS is above 98% of S (asserted: 90%)."""
    x = np.random.default_rng(0).normal(1.0, 1.0, 20)
    posterior = vicourse.normal_normal_posterior(x, 0.0, 2.0, 1.0)

    def log_joint(z):
        like = tfd.Normal(z[:, None], F64(1.0)).log_prob(x)
        return tfd.Normal(F64(0.0), F64(2.0)).log_prob(z) + tf.reduce_sum(like, -1)

    near = tfd.Normal(posterior.mean(), 1.1 * posterior.stddev())
    result = vicourse.psis_khat(log_joint, near, num_samples=4000, seed=0)
    exact = float(vicourse.normal_normal_log_evidence(x, 0.0, 2.0, 1.0))
    assert np.isfinite(result.khat) and result.khat < 0.5
    assert result.log_evidence == pytest.approx(exact, abs=0.02)
    assert result.ess > 0.9 * 4000


def test_psis_corrected_means_beat_the_mean_field_means():
    """Mean field on the banana (b = 1) puts its mean near the mode, biased in z2. With
    S = 20,000 PSIS draws (seed 0) the corrected mean is closer to the exact one (0, 0)
    than the VI mean, in units of the exact sd: measured 0.35 -> 0.20 sd in z2 (the
    weights' tail is heavy here, so the correction is partial; 0.75 leaves a margin for
    the PSIS draws' own noise)."""
    banana = vicourse.targets.banana()
    q = vicourse.make_surrogate("mean_field", [2], seed=0)
    vicourse.fit_vi(banana.log_prob, q, num_steps=1000, num_samples=8, seed=0, jit_compile=False)
    result = vicourse.psis_khat(banana.log_prob, q, num_samples=20_000, seed=0)
    vi_error = np.abs(q.mean().numpy() - banana.mean) / banana.sd
    psis_error = np.abs(result.mean - banana.mean) / banana.sd
    assert vi_error.max() > 0.2  # mean field is biased here
    assert psis_error.max() < 0.75 * vi_error.max(), (vi_error, psis_error)
    np.testing.assert_allclose(np.exp(result.log_weights).sum(), 1.0)


def test_compare_posteriors_errors_in_reference_sds():
    reference = (np.array([1.0, -2.0]), np.array([0.5, 2.0]))
    comparison = vicourse.compare_posteriors(
        reference,
        {"a": (np.array([1.5, -2.0]), np.array([0.25, 2.0])), "b": vicourse.targets.banana()},
        coordinates=["first", "second"],
    )
    np.testing.assert_allclose(comparison.mean_error["a"], [1.0, 0.0])
    np.testing.assert_allclose(comparison.sd_ratio["a"], [0.5, 1.0])
    np.testing.assert_allclose(comparison.mean_error["b"], [-2.0, 1.0])
    assert "first" in comparison.table and comparison.table.splitlines()[-1].startswith(
        "     worst"
    )


def test_compare_posteriors_takes_distributions_and_references():
    """A flow's moments come from draws (TFP has no formula); a ReferencePosterior's dicts
    are flattened in order."""
    flow = vicourse.make_surrogate("flow", [2], seed=0, loc=[1.0, 2.0], scale=0.5)
    gaussian = tfd.MultivariateNormalDiag(np.array([1.0, 2.0]), np.array([0.5, 0.5]))
    comparison = vicourse.compare_posteriors(gaussian, {"flow": flow}, seed=0)
    # The flow starts as N(loc, scale^2): 10,000 draws, errors within 4 SE = 0.04 sd.
    assert np.all(np.abs(comparison.mean_error["flow"]) < 0.04)
    reference = vicourse.ReferencePosterior(
        {},
        {"mu": np.array(1.0), "theta": np.array([2.0, 3.0])},
        {"mu": np.array(1.0), "theta": np.array([1.0, 1.0])},
        {},
        {},
    )
    comparison = vicourse.compare_posteriors(reference, {"same": reference})
    assert comparison.reference_mean.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_samples=50), ValueError, r"`num_samples` must be at least 100 \(k-hat is"),
        (
            dict(surrogate=tfd.MultivariateNormalDiag(np.zeros(2))),
            ValueError,
            r"`log_joint` must return one value per sample, shape \[100\]",
        ),
        (
            dict(surrogate=tfd.Normal(0.0, 1.0)),
            TypeError,
            r"`log_joint` failed when called on z of shape \[100\] and dtype float32",
        ),
    ],
)
def test_psis_khat_bad_inputs(kwargs, error, message):
    args = dict(log_joint=STANDARD.log_prob, surrogate=STANDARD, num_samples=100, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.psis_khat(**args)


def test_compare_posteriors_bad_inputs():
    reference = (np.zeros(2), np.ones(2))
    with pytest.raises(
        ValueError, match=r"`approximations`\['q'\] has 3 coordinates and `reference` 2"
    ):
        vicourse.compare_posteriors(reference, {"q": (np.zeros(3), np.ones(3))})
    with pytest.raises(ValueError, match=r"`reference` must be strictly positive"):
        vicourse.compare_posteriors((np.zeros(2), np.zeros(2)), {"q": reference})
    with pytest.raises(ValueError, match=r"`coordinates` must name the 2 coordinates"):
        vicourse.compare_posteriors(reference, {"q": reference}, coordinates=["a"])

"""Tests for vicourse.families and the stratified estimator: each family against a target
with a known answer (vicourse.targets), the stratified ELBO's gradient against quadrature,
scale equivariance, trace counts and bad input."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vicourse
from vicourse import gradients, targets

tfd = tfp.distributions
tfb = tfp.bijectors
F64 = np.float64


def _elbo(target, q, num=20_000, seed=(5, 5)):
    """Monte Carlo ELBO from fresh draws (the density recomputed, not cached) and its SE."""
    z = q.sample(num, seed=seed)
    values = target.log_prob(z) - q.log_prob(tf.constant(z.numpy()))
    return float(tf.reduce_mean(values)), float(tf.math.reduce_std(values)) / np.sqrt(num)


GAUSSIAN = targets.correlated_gaussian(correlation=0.9)


def test_full_rank_recovers_the_exact_covariance():
    """The path derivative has zero variance once q = p, so the iterates land exactly:
    after 3,000 steps the measured error is ~1e-16 (after 1,000 it is still ~5e-5 in graph
    mode, the approach not yet finished). 1e-6 leaves room for round-off only."""
    q = vicourse.make_surrogate("full_rank", [2], seed=0)
    vicourse.fit_vi(
        GAUSSIAN.log_prob,
        q,
        num_steps=3000,
        estimator="path_derivative",
        seed=0,
        jit_compile=False,
    )
    exact = GAUSSIAN.distribution.covariance().numpy()
    np.testing.assert_allclose(q.covariance().numpy(), exact, atol=1e-6)
    np.testing.assert_allclose(q.mean().numpy(), 0.0, atol=1e-6)


def test_mean_field_recovers_the_variances_one_over_lambda_ii():
    """Chapter 4: the mean-field optimum is N(mu_i, 1/Lambda_ii). Seed 0, S = 16, 2000
    steps with the cosine decay: measured sd error 0.5%, mean error 0.02 sd; 5% and 0.1 sd
    leave a wide margin for the gradient noise at the end of the decay."""
    q = vicourse.make_surrogate("mean_field", [2], seed=0)
    vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=2000, num_samples=16, seed=0)
    chapter4 = vicourse.mean_field_gaussian(np.zeros(2), GAUSSIAN.distribution.covariance())
    sd = chapter4.stddev().numpy()
    np.testing.assert_allclose(q.stddev().numpy(), sd, rtol=0.05)
    assert np.all(np.abs(q.mean().numpy()) < 0.1 * sd)
    assert np.all(sd < GAUSSIAN.sd)  # narrower than the marginals: 1/Lambda_ii < Sigma_ii


def test_flow_on_the_banana_reaches_the_log_normalizer():
    """An IAF (3 layers of [16, 16]) on the banana, log Z = 0. Seed 0: measured gap 0.06
    nats (full rank: 0.32, its best). The gap must be below 0.12, with 20,000 draws
    (SE 0.005) for the ELBO."""
    banana = targets.banana()
    q = vicourse.make_surrogate("flow", [2], seed=0, num_layers=3, hidden_units=[16, 16])
    vicourse.fit_vi(banana.log_prob, q, num_steps=2000, num_samples=8, learning_rate=0.01, seed=0)
    elbo, stderr = _elbo(banana, q)
    assert banana.log_normalizer - elbo < 0.12 and stderr < 0.01, (elbo, stderr)


def test_mixture_covers_both_modes_and_a_single_gaussian_cannot():
    """Bimodal target, modes at (+-2, 0): the stratified fit of K = 2 components started
    at the problem's scale puts weight 1/2 on each mode (measured 0.502/0.498, ELBO
    -0.003). One Gaussian has ELBO at most about -log 2 = -0.69 (one mode) and here -1.15."""
    bimodal = targets.bimodal()
    mixture = vicourse.make_surrogate("mixture", [2], seed=0, scale=2.0)
    vicourse.fit_vi(
        bimodal.log_prob, mixture, num_steps=1500, num_samples=4, estimator="stratified", seed=0
    )
    weights = mixture.mixture_distribution.probs_parameter().numpy()
    means = mixture.components_distribution.mean().numpy()
    assert np.all(np.abs(weights - 0.5) < 0.05), weights
    np.testing.assert_allclose(np.sort(means[:, 0]), [-2.0, 2.0], atol=0.15)
    assert _elbo(bimodal, mixture)[0] > -0.05
    single = vicourse.make_surrogate("full_rank", [2], seed=0, scale=2.0)
    vicourse.fit_vi(
        bimodal.log_prob, single, num_steps=1000, num_samples=4, seed=0, jit_compile=False
    )
    assert _elbo(bimodal, single)[0] < -0.6


# ---------------------------------------------------------------------------------------
# The stratified estimator against an exact gradient (quadrature)
# ---------------------------------------------------------------------------------------


def _mixture_q():
    """A 1-D two-component mixture, weights 0.3/0.7, on plain variables."""
    logits = tf.Variable(np.log([0.3, 0.7]))
    loc = tf.Variable(np.array([-1.0, 1.5]))
    scale = tf.Variable(np.array([0.8, 0.5]))
    components = tfd.Independent(tfd.Normal(loc[:, None], scale[:, None]), 1)
    return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), components)


TARGET_1D = tfd.Normal(F64(0.3), F64(1.2))


def _log_target(z):
    return TARGET_1D.log_prob(z[:, 0])


def test_stratified_gradient_matches_quadrature():
    """ELBO(lambda) = int q log p - q log q on a grid of 40,001 points over [-12, 12] (the
    trapezoid error is ~1e-12), differentiated by autodiff: the exact gradient, weights
    included. The stratified estimate (S = 20,000, seed 0) must be within 4 SE of it in
    every element (a 4-SE miss has probability ~6e-5)."""
    q = _mixture_q()
    grid = np.linspace(-12.0, 12.0, 40_001)[:, None]
    with tf.GradientTape() as tape:
        log_q = q.log_prob(grid)
        integrand = tf.exp(log_q) * (_log_target(grid) - log_q)
        exact = tf.reduce_sum(integrand) * (grid[1, 0] - grid[0, 0])
    want = tape.gradient(exact, q.trainable_variables)
    num = 20_000
    result = vicourse.elbo_gradient(_log_target, q, estimator="stratified", num_samples=num, seed=0)
    for got, var, w in zip(result.gradients, result.variances, want, strict=True):
        stderr = np.sqrt(var.numpy() / num)
        assert np.all(np.abs(got.numpy() - w.numpy()) < 4 * stderr + 1e-12), (got, w, stderr)
    where = [v is q.mixture_distribution.logits for v in q.trainable_variables].index(True)
    assert np.all(np.abs(want[where].numpy()) > 0.05)  # the weights' gradient is tested
    # The ELBO value too: its per-sample sd is below 1 here, so 4 SE < 4 / sqrt(20,000) = 0.03.
    assert abs(float(result.elbo) - float(exact)) < 0.03


def test_stratified_needs_a_mixture():
    q = vicourse.make_surrogate("full_rank", [2], seed=0)
    with pytest.raises(ValueError, match=r"estimator='stratified' needs a mixture `surrogate`"):
        vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=5, estimator="stratified", seed=0)


def test_mixture_without_stratification_needs_the_score_function():
    q = vicourse.make_surrogate("mixture", [2], seed=0)
    with pytest.raises(ValueError, match=r"needs a reparameterized `surrogate`"):
        vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=5, seed=0)


# ---------------------------------------------------------------------------------------
# Scale, support, flows, seeds and compilation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mean_field", "full_rank", "mixture"])
def test_fits_are_scale_equivariant(kind):
    """The target times 10^4, with loc and scale times 10^4: the same fit in new units (the
    parameters live in standardized units, so Adam takes the same steps)."""
    estimator = "stratified" if kind == "mixture" else "reparameterization"
    fits = []
    for c in (1.0, 1e4):
        target = targets.correlated_gaussian(correlation=0.9, scale=c)
        q = vicourse.make_surrogate(kind, [2], seed=3, loc=[0.5 * c, 0.0], scale=c)
        vicourse.fit_vi(
            target.log_prob, q, num_steps=300, estimator=estimator, seed=1, jit_compile=False
        )
        fits.append((q.mean().numpy() / c, q.stddev().numpy() / c))
    np.testing.assert_allclose(fits[0][0], fits[1][0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fits[0][1], fits[1][1], rtol=1e-5)


def test_support_bijector_keeps_draws_on_the_support():
    schools = targets.eight_schools()
    q = vicourse.make_surrogate("mean_field", [10], bijector=schools.bijector, seed=0)
    z = q.sample(500, seed=(1, 2)).numpy()
    assert np.all(z[:, 1] > 0)  # tau
    assert np.all(np.isfinite(schools.log_prob(z).numpy() - q.log_prob(z).numpy()))


@pytest.mark.parametrize("flow", vicourse.families.FLOWS)
def test_flows_stay_invertible_while_training(flow):
    """fit_vi keeps the MADE masks (Keras constraints): after training, the density of a
    draw recomputed from scratch equals the one cached from sampling (round-off only)."""
    q = vicourse.make_surrogate("flow", [3], seed=0, flow=flow, hidden_units=[8])
    target = targets.correlated_gaussian(dim=3, correlation=0.5)
    vicourse.fit_vi(
        target.log_prob, q, num_steps=200, learning_rate=0.05, seed=0, jit_compile=False
    )
    z = q.sample(64, seed=(3, 4))
    np.testing.assert_allclose(
        q.log_prob(z).numpy(), q.log_prob(tf.constant(z.numpy())).numpy(), atol=1e-8
    )


def test_every_family_starts_at_loc_and_scale():
    loc, scale = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    for kind in ("mean_field", "full_rank", "flow"):
        q = vicourse.make_surrogate(kind, [2], seed=0, loc=loc, scale=scale)
        z = q.sample(20_000, seed=(0, 1)).numpy()
        # 20,000 draws: the sample mean is within 4 SE = 4 scale / sqrt(20,000) = 0.03 scale.
        np.testing.assert_allclose(z.mean(0), loc, atol=0.03 * scale.max())
        np.testing.assert_allclose(z.std(0), scale, rtol=0.03)


def test_same_seed_same_surrogate():
    a = vicourse.make_surrogate("flow", [2], seed=4, flow="real_nvp")
    b = vicourse.make_surrogate("flow", [2], seed=4, flow="real_nvp")
    for u, v in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    c = vicourse.make_surrogate("mixture", [2], seed=5)
    d = vicourse.make_surrogate("mixture", [2], seed=6)
    assert not np.allclose(c.components_distribution.mean(), d.components_distribution.mean())


@pytest.mark.parametrize("kind", ["mean_field", "full_rank", "mixture"])
def test_composite_families_compile_once(kind):
    """New surrogates of the same kind and shape reuse fit_vi's compiled loop."""
    estimator = "stratified" if kind == "mixture" else "reparameterization"
    compiled = gradients._vi_chunk_xla
    vicourse.fit_vi(
        GAUSSIAN.log_prob,
        vicourse.make_surrogate(kind, [2], seed=0),
        num_steps=5,
        estimator=estimator,
        seed=0,
    )
    before = compiled.experimental_get_tracing_count()
    for k in range(1, 3):
        q = vicourse.make_surrogate(kind, [2], seed=k, loc=[k, 0.0], scale=k)
        vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=20 * k, estimator=estimator, seed=k)
    assert compiled.experimental_get_tracing_count() == before


def test_a_flow_compiles_once_per_object():
    """A flow holds Keras layers (not a composite tensor): its first fit traces, and more
    fits of the same flow do not."""
    q = vicourse.make_surrogate("flow", [2], seed=0, hidden_units=[8])
    compiled = gradients._vi_chunk_graph
    vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=5, seed=0, jit_compile=False)
    before = compiled.experimental_get_tracing_count()
    for k in range(1, 3):
        vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=10 * k, seed=k, jit_compile=False)
    assert compiled.experimental_get_tracing_count() == before


# ---------------------------------------------------------------------------------------
# Bad input: pinned messages
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (("gaussian", [2]), {}, ValueError, r"`kind` must be one of \('mean_field', 'full_"),
        (("flow", [2]), dict(flow="nice"), ValueError, r"`flow` must be one of \('iaf', 'maf'"),
        (("mean_field", [2, 2]), {}, ValueError, r"`event_shape` must be \[D\], one axis"),
        (("mean_field", [2]), dict(num_layers=2), TypeError, r"`num_layers` is not an option"),
        (("mean_field", [2]), dict(loc=[0.0, 1.0, 2.0]), ValueError, r"`loc` must have shape"),
        (("full_rank", [2]), dict(scale=-1.0), ValueError, r"`scale` must be strictly positive"),
        (("flow", [1]), dict(flow="real_nvp"), ValueError, r"`flow`='real_nvp' needs D >= 2"),
        (("mean_field", [2]), dict(dtype=tf.int32), TypeError, r"`dtype` must be tf.float32"),
        (("mixture", [2]), dict(loc=np.zeros((3, 2))), ValueError, r"`loc` must have shape"),
    ],
)
def test_make_surrogate_bad_inputs(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        vicourse.make_surrogate(*args, seed=0, **kwargs)


def test_an_event_shape_that_does_not_match_the_target_is_pinned():
    q = vicourse.make_surrogate("full_rank", [3], seed=0)
    with pytest.raises(TypeError, match=r"the correlated Gaussian target has event shape \[2\]"):
        vicourse.fit_vi(GAUSSIAN.log_prob, q, num_steps=5, seed=0)


def test_a_support_bijector_of_another_size_is_refused():
    with pytest.raises(ValueError, match=r"`bijector` must map vectors of the event shape \[2\]"):
        vicourse.make_surrogate("mean_field", [2], seed=0, bijector=tfb.Reshape([3]))

"""Tests for chapter 7: control variates, Rao-Blackwellization and the mixed estimator (options
of elbo_gradient and fit_vi), mean_field_factors and fit_pinned.

Known answers: chapter 6's Gaussian problem has an exact ELBO gradient; with the mixture's
means fixed the posterior responsibilities are exact; CAVI's optimum bounds the mixed
estimator's fit; a normal-normal model has an exact Gaussian posterior.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vicourse
from vicourse import _score, gradients

tfd = tfp.distributions
tfb = tfp.bijectors
F64 = np.float64

# ---------------------------------------------------------------------------------------
# Chapter 6's Gaussian problem: target N(mu, diag sigma^2), q = prod_d N(m_d, s_d^2), so
# dELBO/dm = -(m - mu)/sigma^2 and dELBO/ds = 1/s - s/sigma^2. Mean-field in d, so factor
# d's Markov blanket is the single term log N(z_d; mu_d, sigma_d^2).
# ---------------------------------------------------------------------------------------

MU = np.linspace(-1.0, 1.0, 5)
SIGMA = np.linspace(0.5, 2.0, 5)
M0 = np.array([0.5, -0.3, 1.2, 0.0, -2.0])
S0 = np.array([0.7, 1.5, 0.4, 1.0, 2.5])
TARGET = tfd.Normal(MU, SIGMA)
EXACT = np.concatenate([-(M0 - MU) / SIGMA**2, 1.0 / S0 - S0 / SIGMA**2])


def gaussian_log_joint(z):
    return tf.reduce_sum(TARGET.log_prob(z), -1)


def gaussian_blanket(z):
    return TARGET.log_prob(z)  # [S, 5]: column d holds the only term involving z_d


def gaussian_q():
    """Plain variables, so the gradient is in (m, s) directly; 5 factors."""
    return tfd.Independent(tfd.Normal(tf.Variable(M0), tf.Variable(S0)), 1)


OPTIONS = {
    "plain": {},
    "control variate": dict(control_variate=True),
    "Rao-Blackwellized": dict(blanket_log_prob=gaussian_blanket),
    "both": dict(control_variate=True, blanket_log_prob=gaussian_blanket),
}
NUM = 20_000


@pytest.fixture(scope="module")
def gaussian_estimates():
    return {
        name: vicourse.elbo_gradient(
            gaussian_log_joint, gaussian_q(), estimator="score_function", num_samples=NUM,
            seed=0, **options,
        )
        for name, options in OPTIONS.items()
    }


def _flat(tensors):
    return np.concatenate([np.ravel(t.numpy()) for t in tensors])


@pytest.mark.parametrize("name", list(OPTIONS))
def test_estimators_are_unbiased_within_four_standard_errors(gaussian_estimates, name):
    """Seed 0, S = 20,000: each of the 10 elements within 4 SE of the exact gradient (a
    4-SE miss has probability ~6e-5 per element; with the leave-one-out coefficients the
    per-sample terms are dependent only through a*, whose error is O(1/sqrt(S)))."""
    result = gaussian_estimates[name]
    stderr = np.sqrt(_flat(result.variances) / NUM)
    error = np.abs(_flat(result.gradients) - EXACT)
    assert np.all(error < 4 * stderr), (name, error / stderr)


def test_variance_reductions_are_the_measured_factors(gaussian_estimates):
    """Mean single-sample variance over the 10 parameters (seed 0, S = 20,000): plain
    279, control variate 115 (2.4x), Rao-Blackwellized 82 (3.4x), both 53 (5.2x). Each
    variance has relative error ~sqrt(2/S) < 1% from sampling, so the bounds below (about
    20% under the measured factors) cannot fail by chance."""
    mean_variance = {k: _flat(r.variances).mean() for k, r in gaussian_estimates.items()}
    ratio = {k: mean_variance["plain"] / v for k, v in mean_variance.items()}
    assert 2.0 < ratio["control variate"] < 3.0, ratio
    assert 2.8 < ratio["Rao-Blackwellized"] < 4.2, ratio
    assert 4.2 < ratio["both"] < 6.5, ratio
    assert ratio["both"] > max(ratio["control variate"], ratio["Rao-Blackwellized"])


def test_leave_one_out_control_variate_is_unbiased_at_small_sample_sizes():
    """The coefficient of sample s comes from the other S - 1 samples, so the estimate is
    unbiased at any S. 100 independent estimates with S = 10 (seeds 0-99): their mean is
    within 4 SE (over the 100) of the exact gradient in every element. (A coefficient
    estimated from all S samples, sample s included, is biased by about -0.6 in this
    problem's dELBO/dm at S = 10, chapter 7's simulation: several SE here.)"""
    q = gaussian_q()
    estimates = np.stack([
        _flat(vicourse.elbo_gradient(
            gaussian_log_joint, q, estimator="score_function", num_samples=10, seed=k,
            control_variate=True,
        ).gradients)
        for k in range(100)
    ])
    stderr = estimates.std(0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(0) - EXACT) < 4 * stderr)


def test_leave_one_out_closed_form_matches_the_definition():
    """f_s - a_{-s} h_s with a_{-s} = Cov/Var over the other samples, by brute force."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(7, 3))
    f = 2.0 * h + rng.normal(size=(7, 3)) + 5.0
    got = _score.leave_one_out_control(tf.constant(f), tf.constant(h)).numpy()
    for s in range(7):
        rest = np.delete(np.arange(7), s)
        for j in range(3):
            a = np.cov(f[rest, j], h[rest, j])[0, 1] / np.var(h[rest, j], ddof=1)
            np.testing.assert_allclose(got[s, j], f[s, j] - a * h[s, j], rtol=1e-10)


def test_compiled_paths_agree_with_the_exact_gradient():
    """XLA (jit_compile=True) with both options: within 4 SE of the exact gradient."""
    result = vicourse.elbo_gradient(
        gaussian_log_joint, gaussian_q(), estimator="score_function", num_samples=NUM,
        seed=1, jit_compile=True, **OPTIONS["both"],
    )
    stderr = np.sqrt(_flat(result.variances) / NUM)
    assert np.all(np.abs(_flat(result.gradients) - EXACT) < 4 * stderr)


def test_factor_log_probs_add_up_to_the_surrogate():
    q = tfd.JointDistributionNamed(dict(
        mu=tfd.Independent(tfd.Normal(np.zeros((3, 2)), np.ones((3, 1))), 2),
        c=tfd.Independent(tfd.Categorical(logits=np.zeros((4, 3))), 1),
    ))
    z = q.sample(5, seed=(1, 2))
    parts = _score.score_log_probs(q, z, "score_function", rao_blackwell=True)
    assert parts.shape == (5, 4 + 6)
    np.testing.assert_allclose(tf.reduce_sum(parts, -1), q.log_prob(z), rtol=1e-12)
    labels = vicourse.mean_field_factors(q)
    assert labels[:5] == ("c[0]", "c[1]", "c[2]", "c[3]", "mu[0, 0]") and len(labels) == 10
    assert vicourse.mean_field_factors(q, "mixed") == ("c[0]", "c[1]", "c[2]", "c[3]")


# ---------------------------------------------------------------------------------------
# The mixture of chapter 4: mu_k ~ N(0, tau^2 I), c_i ~ Cat(1/K), x_i ~ N(mu_{c_i}, sigma^2 I)
# ---------------------------------------------------------------------------------------

K, DIM, N = 3, 2, 60
TRUE_MEANS = np.array([[-3.0, -1.0], [3.0, -1.5], [0.0, 3.5]])
_rng = np.random.default_rng(0)
X = TRUE_MEANS[_rng.integers(0, K, N)] + _rng.normal(size=(N, DIM))
TAU, SIGMA_X = 10.0, 1.0
MEAN_PRIOR = tfd.Normal(np.float64(0.0), np.float64(TAU))


def component_log_likelihood(mu):
    """log N(x_i; mu_k, sigma^2 I) for every i, k: [S, N, K] from mu of shape [S, K, D]."""
    return tf.reduce_sum(tfd.Normal(mu[:, None], SIGMA_X).log_prob(X[None, :, None]), -1)


def label_terms(c, mu):
    """log p(c_i) + log p(x_i | c_i, mu), [S, N]: the Markov blanket of each c_i."""
    chosen = tf.gather(component_log_likelihood(mu), c[..., None], batch_dims=2)[..., 0]
    return chosen - np.log(K)


def fixed_means_log_joint(c):
    return tf.reduce_sum(fixed_means_blanket(c), -1)


def fixed_means_blanket(c):
    mu = tf.broadcast_to(tf.constant(TRUE_MEANS), [tf.shape(c)[0], K, DIM])
    return label_terms(c, mu)


def mixture_blanket(z):
    return label_terms(z["c"], z["mu"])


def mixture_log_joint(z):
    return tf.reduce_sum(MEAN_PRIOR.log_prob(z["mu"]), [-2, -1]) + tf.reduce_sum(
        mixture_blanket(z), -1
    )


def labels_q():
    return tfd.Independent(tfd.Categorical(logits=tf.Variable(np.zeros((N, K)))), 1)


def test_rao_blackwellized_bbvi_reaches_the_exact_responsibilities():
    """Means fixed at the true values: p(c | x) factorizes, p(c_i = k | x_i) is a softmax
    of log N(x_i; mu_k, I), and the mean-field optimum is exact. Same budget for both
    (1,000 steps, S = 8, learning rate 0.1, seed 0): Rao-Blackwellized within 0.03 of
    every exact responsibility (measured max error 0.014); plain score function off by
    more than 0.3 somewhere (measured 0.99: its gradient, a sum over 60 labels times one
    score, is too noisy to resolve the ambiguous points)."""
    exact = tf.nn.softmax(component_log_likelihood(tf.constant(TRUE_MEANS[None]))[0]).numpy()
    errors = {}
    for name, options in (("plain", {}), ("rb", dict(blanket_log_prob=fixed_means_blanket))):
        q = labels_q()
        vicourse.fit_vi(
            fixed_means_log_joint, q, num_steps=1000, estimator="score_function",
            num_samples=8, seed=0, learning_rate=0.1, jit_compile=False, **options,
        )
        errors[name] = np.abs(tf.nn.softmax(q.distribution.logits).numpy() - exact).max()
    assert errors["rb"] < 0.03 < 0.3 < errors["plain"], errors


def mixture_q(init_loc):
    return tfd.JointDistributionNamed(dict(
        c=tfd.Independent(tfd.Categorical(logits=tf.Variable(np.zeros((N, K)))), 1),
        mu=tfd.Independent(
            tfd.Normal(
                tf.Variable(init_loc),
                tfp.util.TransformedVariable(np.ones((K, 1)), tfb.Softplus()),
            ),
            2,
        ),
    ))


def closed_form_elbo(q):
    normal = q.model["mu"].distribution
    state = vicourse.GMMState(normal.loc.numpy(), normal.scale.numpy()[:, 0] ** 2)
    phi = tf.nn.softmax(q.model["c"].distribution.logits).numpy()
    return float(vicourse.gmm_elbo(X, state, phi, TAU, SIGMA_X))


def test_mixed_estimator_reaches_the_cavi_optimum():
    """q(mu_k) = N(m_k, s_k^2 I) reparameterized, q(c_i) categorical by the Rao-Blackwellized
    score function with a control variate: CAVI's family. From CAVI's initialization (means
    at three data points), 1,200 steps, S = 8, seed 0: the closed-form ELBO of the BBVI
    fit is within 1 nat of CAVI's optimum (measured 0.28: the logits of confident labels
    stop short of CAVI's near-0/1 responsibilities) and never above it by more than
    round-off (the same optimum)."""
    init = vicourse.gmm_init(X, K, seed=0).means_loc.numpy()
    cavi = vicourse.fit_gmm(X, K, prior_scale=TAU, noise_scale=SIGMA_X, init=init, tol=0.0,
                            num_iters=200, jit_compile=False)
    optimum = float(cavi.elbo_trace[-1])
    q = mixture_q(init)
    fit = vicourse.fit_vi(
        mixture_log_joint, q, num_steps=1200, estimator="mixed", num_samples=8, seed=0,
        learning_rate=0.1, control_variate=True, blanket_log_prob=mixture_blanket,
        jit_compile=False,
    )
    gap = optimum - closed_form_elbo(q)
    assert -1e-6 < gap < 1.0, gap
    assert np.isfinite(fit.elbo_trace.numpy()).all()


X_NN = np.random.default_rng(2).normal(1.0, 1.0, size=40)
NN_PRIOR = tfd.Normal(F64(0.0), F64(2.0))


def normal_batch_log_joint(z, batch):
    return NN_PRIOR.log_prob(z) + tf.reduce_sum(tfd.Normal(z[:, None], F64(1.0)).log_prob(
        batch), -1)


def test_control_variate_with_minibatches_reaches_the_posterior():
    """Doubly stochastic BBVI: score function + control variate, B = 10 of N = 40 (the
    likelihood scaled by 4), S = 8, 2,000 steps, seed 0: the normal-normal posterior within
    0.2 sd in the mean and 15% in the sd (measured 0.04 and 4%; seeds 0-2 at most 0.14
    and 4%)."""
    posterior = vicourse.normal_normal_posterior(X_NN, 0.0, 2.0, 1.0)
    q = tfd.Normal(tf.Variable(F64(0.0)),
                   tfp.util.TransformedVariable(F64(1.0), tfb.Softplus()))
    vicourse.fit_vi(normal_batch_log_joint, q, num_steps=2000, estimator="score_function",
                    num_samples=8, control_variate=True, data=X_NN, batch_size=10, seed=0,
                    jit_compile=False)
    sd = float(posterior.stddev())
    assert abs(float(q.mean()) - float(posterior.mean())) / sd < 0.2
    assert abs(float(q.stddev()) / sd - 1) < 0.15


# ---------------------------------------------------------------------------------------
# Compiled once
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_vi_with_options_does_not_retrace(jit_compile):
    compiled = gradients._vi_chunk_xla if jit_compile else gradients._vi_chunk_graph
    options = dict(estimator="score_function", num_samples=4, **OPTIONS["both"])
    vicourse.fit_vi(gaussian_log_joint, gaussian_q(), num_steps=5, seed=0,
                    jit_compile=jit_compile, **options)
    before = compiled.experimental_get_tracing_count()
    for k in range(1, 3):  # new surrogates, seeds, step counts and rates
        vicourse.fit_vi(gaussian_log_joint, gaussian_q(), num_steps=5 + 300 * k, seed=k,
                        learning_rate=0.01 * k, jit_compile=jit_compile, **options)
    assert compiled.experimental_get_tracing_count() == before


def test_elbo_gradient_with_options_does_not_retrace():
    options = dict(estimator="score_function", num_samples=16, **OPTIONS["both"])
    vicourse.elbo_gradient(gaussian_log_joint, gaussian_q(), seed=0, **options)
    before = gradients._per_sample_score_graph.experimental_get_tracing_count()
    for k in range(1, 3):
        vicourse.elbo_gradient(gaussian_log_joint, gaussian_q(), seed=k, **options)
    assert gradients._per_sample_score_graph.experimental_get_tracing_count() == before


# ---------------------------------------------------------------------------------------
# fit_pinned: eight schools and a conjugate model
# ---------------------------------------------------------------------------------------

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
EIGHT_SCHOOLS = tfd.JointDistributionNamed(dict(
    mu=tfd.Normal(F64(0.0), F64(5.0)),
    tau=tfd.HalfCauchy(F64(0.0), F64(5.0)),
    theta_tilde=tfd.Sample(tfd.Normal(F64(0.0), F64(1.0)), 8),
    y=lambda mu, tau, theta_tilde: tfd.Independent(
        tfd.Normal(mu[..., None] + tau[..., None] * theta_tilde, SCHOOLS_SIGMA), 1
    ),
))


def test_fit_pinned_runs_on_eight_schools():
    """The posterior of mu is about 4.4 +- 3.3 (NUTS, chapter 7); a mean-field fit gets the
    mean within 1 (measured 4.6) and a positive, finite tau. 1,000 steps, S = 4, seed 0."""
    fit = vicourse.fit_pinned(EIGHT_SCHOOLS.experimental_pin(y=SCHOOLS_Y), num_steps=1000,
                              num_samples=4, seed=0)
    draws = fit.surrogate.sample(4000, seed=(1, 2))
    assert set(draws) == {"mu", "tau", "theta_tilde"}
    assert abs(float(np.mean(draws["mu"])) - 4.4) < 1.0
    assert np.all(draws["tau"].numpy() > 0) and np.isfinite(draws["tau"].numpy()).all()
    assert np.isfinite(fit.elbo_trace.numpy()).all()


def _normal_model(scale):
    return tfd.JointDistributionNamed(dict(
        mu=tfd.Normal(F64(0.0), F64(2.0 * scale)),
        x=lambda mu: tfd.Independent(tfd.Normal(mu[..., None] * np.ones(40), F64(scale)), 1),
    ))


X_NORMAL = np.random.default_rng(1).normal(1.0, 1.0, size=40)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_fit_pinned_matches_the_conjugate_posterior_at_any_scale(scale):
    """Normal-normal (chapter 1): the posterior is Gaussian, so the path derivative lands on
    it exactly (errors below 1e-3 posterior sd and 0.1% in the sd; measured ~1e-5). The
    data, prior and noise scales times 1e4 give the same answer in units: the surrogate is
    standardized by the prior's spread."""
    posterior = vicourse.normal_normal_posterior(X_NORMAL * scale, 0.0, 2.0 * scale, scale)
    pinned = _normal_model(scale).experimental_pin(x=X_NORMAL * scale)
    fit = vicourse.fit_pinned(pinned, num_steps=2000, estimator="path_derivative", seed=0,
                              learning_rate=0.1)
    mean, sd = _unconstrained_moments(fit.surrogate, "mu")  # mu's bijector is the identity
    want_mean, want_sd = float(posterior.mean()), float(posterior.stddev())
    assert abs(mean - want_mean) / want_sd < 1e-3
    assert abs(sd / want_sd - 1) < 1e-3


def _unconstrained_moments(surrogate, name):
    """Mean and sd of one unconstrained coordinate: the normal q(v) pushed through the
    affine standardization u = c + r v (fit_pinned's surrogate, before the model's T)."""
    standardized = surrogate.distribution  # TransformedDistribution(q(v), JointMap)
    normal = standardized.distribution.model[name].distribution
    affine = standardized.bijector.bijectors[name]
    loc, scale = normal.loc, normal.scale
    mean = affine.forward(loc)
    return float(mean), float(affine.forward(loc + scale) - mean)


def test_fit_pinned_reuses_its_compiled_loop():
    pinned = _normal_model(1.0).experimental_pin(x=X_NORMAL)
    vicourse.fit_pinned(pinned, num_steps=5, seed=0)
    before = gradients._vi_chunk_graph.experimental_get_tracing_count()
    vicourse.fit_pinned(pinned, num_steps=50, seed=1)
    assert gradients._vi_chunk_graph.experimental_get_tracing_count() == before


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_blanket_of_the_wrong_shape_names_the_factors():
    with pytest.raises(ValueError, match=r"`blanket_log_prob` must return one column per "
                       r"score-function factor of `surrogate` \(q: 5 factors \(Normal, shape "
                       r"\[5\]\)\), shape \[4, 5\] \(\[S, J\]\), got shape \[4\]"):
        vicourse.elbo_gradient(gaussian_log_joint, gaussian_q(), estimator="score_function",
                               num_samples=4, seed=0, blanket_log_prob=gaussian_log_joint)
    with pytest.raises(ValueError, match=r"shape \[4, 60\] \(\[S, J\]\), got shape \[4, 62\]"):
        vicourse.elbo_gradient(
            mixture_log_joint, mixture_q(TRUE_MEANS), estimator="mixed", num_samples=4, seed=0,
            blanket_log_prob=lambda z: tf.concat([mixture_blanket(z), tf.zeros([4, 2],
                                                                                 tf.float64)], -1),
        )


@pytest.mark.parametrize("estimator", ["reparameterization", "path_derivative"])
def test_control_variate_with_a_reparameterization_estimator_raises(estimator):
    """An error, not a warning: the option would silently do nothing (there is no score
    term to control), and path_derivative already is the coefficient-1 control variate."""
    with pytest.raises(ValueError, match=r"`control_variate` reduces the variance of the "
                       r"score-function estimator, but `estimator` is .* which has no "
                       r"score-function term.*'path_derivative' already removes the score"):
        vicourse.fit_vi(gaussian_log_joint, gaussian_q(), num_steps=5, estimator=estimator,
                        num_samples=4, control_variate=True)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_samples=2, control_variate=True), ValueError,
         r"`num_samples` must be at least 3 with control_variate=True"),
        (dict(blanket_log_prob=gaussian_blanket, estimator="reparameterization"), ValueError,
         r"`blanket_log_prob` reduces the variance of the score-function estimator"),
        (dict(blanket_log_prob=3.0), TypeError, r"`blanket_log_prob` must be callable"),
        (dict(control_variate="yes"), TypeError, r"`control_variate` must be True or False"),
        (dict(blanket_log_prob=gaussian_blanket, data=np.zeros(10), batch_size=5),
         ValueError, r"`blanket_log_prob` needs the full data at every step"),
        (dict(estimator="mixed", control_variate=True), ValueError,
         r"`control_variate` has nothing to act on: every part of `surrogate` is "
         r"reparameterized"),
    ],
)
def test_fit_vi_bad_options(kwargs, error, message):
    args = dict(log_joint=gaussian_log_joint, surrogate=gaussian_q(), num_steps=5,
                estimator="score_function", num_samples=4, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.fit_vi(**args)


def test_mixed_and_rao_blackwell_need_a_mean_field_surrogate():
    dependent = tfd.JointDistributionNamed(dict(
        a=tfd.Normal(tf.Variable(F64(0.0)), F64(1.0)),
        b=lambda a: tfd.Bernoulli(logits=a),
    ))
    with pytest.raises(ValueError, match=r"`surrogate` must be mean-field.*\['b'\] depend"):
        vicourse.elbo_gradient(lambda z: tf.zeros(4, tf.float64), dependent,
                               estimator="mixed", num_samples=4, seed=0)


def test_fit_pinned_bad_model():
    with pytest.raises(TypeError, match=r"`pinned` must be a TFP joint distribution with its "
                       r"observed values pinned, e\.g\. model\.experimental_pin"):
        vicourse.fit_pinned(EIGHT_SCHOOLS, num_steps=5)
    discrete = tfd.JointDistributionNamed(dict(
        c=tfd.Bernoulli(probs=F64(0.5)),
        x=lambda c: tfd.Normal(tf.cast(c, tf.float64), F64(1.0)),
    ))
    with pytest.raises(ValueError, match=r"`pinned` has discrete latent variables.*"
                       r"estimator='mixed'"):
        vicourse.fit_pinned(discrete.experimental_pin(x=F64(0.3)), num_steps=5)

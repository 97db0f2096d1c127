"""Tests for vicourse.gradients: the three ELBO-gradient estimators against exact gradients,
their variances, implicit reparameterization, and fit_vi against the conjugate posterior."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import vicourse
from vicourse import gradients

tfd = tfp.distributions
tfb = tfp.bijectors
# "stratified" needs a mixture q; its unbiasedness is tested in tests/test_families.py.
ESTIMATORS = [e for e in vicourse.gradients.ESTIMATORS if e != "stratified"]


# ---------------------------------------------------------------------------------------
# Estimators against the exact gradient: target N(mu, diag sigma^2), q = N(m, diag s^2)
# ELBO = E_q[log p] + H[q], so dELBO/dm = -(m - mu)/sigma^2 and dELBO/ds = 1/s - s/sigma^2.
# ---------------------------------------------------------------------------------------

D = 5
MU = np.linspace(-1.0, 1.0, D)
SIGMA = np.linspace(0.5, 2.0, D)
M0 = np.array([0.5, -0.3, 1.2, 0.0, -2.0])
S0 = np.array([0.7, 1.5, 0.4, 1.0, 2.5])


def _target(dim=D):
    return tfd.MultivariateNormalDiag(MU[:dim], SIGMA[:dim])


def _q(m=M0, s=S0):
    """Plain variables for loc and scale, so the gradient is in (m, s) directly."""
    return tfd.MultivariateNormalDiag(tf.Variable(m), tf.Variable(s))


def _exact_gradient(m=M0, s=S0, mu=MU, sigma=SIGMA):
    return -(m - mu) / sigma**2, 1.0 / s - s / sigma**2


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_are_unbiased_within_four_standard_errors(estimator):
    """Seed 0, S = 20,000: each of the 10 elements within 4 SE, SE = sqrt(var / S) from the
    same per-sample gradients. A 4-SE miss has probability ~6e-5 per element."""
    num = 20_000
    result = vicourse.elbo_gradient(
        _target().log_prob, _q(), estimator=estimator, num_samples=num, seed=0
    )
    for got, var, want in zip(result.gradients, result.variances, _exact_gradient(), strict=True):
        stderr = np.sqrt(var.numpy() / num)
        assert np.all(stderr > 0)
        assert np.all(np.abs(got.numpy() - want) < 4 * stderr), (estimator, got, want, stderr)
    assert result.per_sample[0].shape == (num, D)


def test_elbo_value_is_the_closed_form_within_four_standard_errors():
    num = 20_000
    result = vicourse.elbo_gradient(_target().log_prob, _q(), num_samples=num, seed=1)
    exact = -float(vicourse.kl_divergence(_q(), _target()).value)  # ELBO = -KL for normalized p
    assert abs(float(result.elbo) - exact) < 0.1  # sd of log p - log q here is ~3: 4 SE ~ 0.09


def _total_variance(dim, estimator, num=4000, seed=2):
    target = _target(dim)
    q = _q(M0[:dim] if dim <= D else np.zeros(dim), S0[:dim] if dim <= D else np.ones(dim))
    result = vicourse.elbo_gradient(
        target.log_prob, q, estimator=estimator, num_samples=num, seed=seed
    )
    return sum(float(tf.reduce_sum(v)) for v in result.variances)


def test_score_function_variance_exceeds_reparameterization_and_grows_with_dimension():
    """Measured (seed 2, S = 4000, normalized target): the ratio of summed single-sample
    variances score/reparameterization is 9.8 at D = 1, 24.5 at D = 3 and 34.7 at D = 5.
    The test needs > 3 and increasing; each variance has relative error ~sqrt(2/4000)."""
    ratios = [
        _total_variance(dim, "score_function") / _total_variance(dim, "reparameterization")
        for dim in (1, 3, 5)
    ]
    assert ratios[0] > 3 and ratios[0] < ratios[1] < ratios[2], ratios


def test_path_derivative_has_zero_variance_at_the_optimum():
    """q = p exactly: log p(z) - log q(z) is constant in z, so every per-sample path
    derivative is 0 (round-off only). The reparameterization estimator is not."""
    q = _q(MU.copy(), SIGMA.copy())
    path = vicourse.elbo_gradient(
        _target().log_prob, q, estimator="path_derivative", num_samples=500, seed=3
    )
    full = vicourse.elbo_gradient(
        _target().log_prob, q, estimator="reparameterization", num_samples=500, seed=3
    )
    assert max(float(tf.reduce_max(v)) for v in path.variances) < 1e-24
    assert min(float(tf.reduce_max(v)) for v in full.variances) > 0.1


@pytest.mark.parametrize("estimator", ["reparameterization", "path_derivative"])
def test_gamma_is_reparameterized_implicitly(estimator):
    """Gamma(a, b) samples are differentiated implicitly (Figurnov et al. 2018). With
    log_joint(z) = z + log q_fixed(z), q_fixed a constant copy of q, the ELBO gradient at
    q = q_fixed is grad E_q[z] = (1/b, -a/b^2), since grad KL(q || q_fixed) = 0 there.
    Seed 4, S = 20,000: within 4 SE."""
    a, b, num = 3.0, 2.0, 20_000
    q = tfd.Gamma(tf.Variable(np.float64(a)), tf.Variable(np.float64(b)))
    q_fixed = tfd.Gamma(np.float64(a), np.float64(b))
    result = vicourse.elbo_gradient(
        lambda z: z + q_fixed.log_prob(z), q, estimator=estimator, num_samples=num, seed=4
    )
    want = [1.0 / b, -a / b**2]
    for got, var, w in zip(result.gradients, result.variances, want, strict=True):
        assert abs(float(got) - w) < 4 * np.sqrt(float(var) / num) + 1e-9


def test_score_function_works_for_a_discrete_q():
    """q = Categorical(softmax(l)), log p(z) = log pi_z for a fixed pi: the ELBO is
    -KL(q || pi), with gradient dELBO/dl_k = q_k [(log pi_k - log q_k) - ELBO]... checked
    against automatic differentiation of the closed form."""
    pi = np.array([0.2, 0.5, 0.3])
    logits = tf.Variable(np.array([0.3, -0.2, 0.1]))
    q = tfd.Categorical(logits=logits)
    num = 50_000
    result = vicourse.elbo_gradient(
        lambda z: tf.gather(np.log(pi), z),
        q,
        estimator="score_function",
        num_samples=num,
        seed=5,
    )
    with tf.GradientTape() as tape:
        probs = tf.nn.softmax(logits)
        exact = tf.reduce_sum(probs * (np.log(pi) - tf.math.log(probs)))
    want = tape.gradient(exact, logits).numpy()
    stderr = np.sqrt(result.variances[0].numpy() / num)
    assert np.all(np.abs(result.gradients[0].numpy() - want) < 4 * stderr)
    with pytest.raises(ValueError, match=r"estimator='reparameterization' needs a reparam"):
        vicourse.elbo_gradient(lambda z: tf.gather(np.log(pi), z), q, num_samples=2, seed=0)


def test_same_seed_same_gradient_and_compiled_paths_agree():
    a = vicourse.elbo_gradient(_target().log_prob, _q(), num_samples=64, seed=6)
    b = vicourse.elbo_gradient(_target().log_prob, _q(), num_samples=64, seed=6)
    np.testing.assert_array_equal(a.gradients[0], b.gradients[0])
    xla = vicourse.elbo_gradient(
        _target().log_prob, _q(), num_samples=20_000, seed=6, jit_compile=True
    )
    # XLA may pick another stateless RNG algorithm: compare with the exact gradient (4 SE).
    stderr = np.sqrt(xla.variances[0].numpy() / 20_000)
    assert np.all(np.abs(xla.gradients[0].numpy() - _exact_gradient()[0]) < 4 * stderr)


def test_one_sample_has_no_variance():
    result = vicourse.elbo_gradient(_target().log_prob, _q(), seed=0)
    assert result.variances is None and result.per_sample[0].shape == (1, D)


# ---------------------------------------------------------------------------------------
# fit_vi on chapter 1's conjugate normal-normal model
# ---------------------------------------------------------------------------------------

X = np.random.default_rng(0).normal(1.0, 1.0, size=40)
POSTERIOR = vicourse.normal_normal_posterior(X, 0.0, 2.0, 1.0)
PRIOR = tfd.Normal(np.float64(0.0), np.float64(2.0))


def log_joint(z):
    return PRIOR.log_prob(z) + tf.reduce_sum(
        tfd.Normal(z[:, None], np.float64(1.0)).log_prob(X), -1
    )


def log_joint_batch(z, batch):
    like = tfd.Normal(z[:, None], np.float64(1.0)).log_prob(batch)
    return PRIOR.log_prob(z) + tf.reduce_sum(like, -1)


def _fresh_q():
    return tfd.Normal(
        tf.Variable(np.float64(0.0)), tfp.util.TransformedVariable(np.float64(1.0), tfb.Softplus())
    )


def _errors(q):
    mean, sd = float(POSTERIOR.mean()), float(POSTERIOR.stddev())
    return abs(float(q.mean()) - mean) / sd, abs(float(q.stddev()) / sd - 1)


def test_fit_vi_with_defaults_reaches_the_exact_posterior():
    """Defaults (reparameterization, S = 1, Adam 0.05 with cosine decay), 2000 steps, seeds
    0-2: measured max errors 0.04 posterior sd in the mean and 3.4% in the sd."""
    for seed in range(3):
        q = _fresh_q()
        fit = vicourse.fit_vi(log_joint, q, num_steps=2000, seed=seed)
        mean_error, sd_error = _errors(q)
        assert mean_error < 0.1 and sd_error < 0.06, (seed, mean_error, sd_error)
        assert fit.elbo_trace.shape == (2000,) and fit.surrogate is q


def test_fit_vi_path_derivative_lands_exactly():
    """The posterior is Gaussian, so at q = posterior the path derivative is exactly 0 and
    the iterates settle on it: errors below 1e-3 (measured ~1e-5)."""
    q = _fresh_q()
    vicourse.fit_vi(
        log_joint, q, num_steps=2000, estimator="path_derivative", seed=0, learning_rate=0.1
    )
    mean_error, sd_error = _errors(q)
    assert mean_error < 1e-3 and sd_error < 1e-3


def test_fit_vi_agrees_with_tfp_fit_surrogate_posterior():
    """Same problem, same Adam with the same cosine schedule, 2000 steps: the two agree
    within 0.1 posterior sd (mean) and 10% (sd)."""
    ours = _fresh_q()
    vicourse.fit_vi(log_joint, ours, num_steps=2000, seed=1)
    theirs = _fresh_q()
    schedule = tf_keras.optimizers.schedules.CosineDecay(0.05, 2000, alpha=0.01)
    tfp.vi.fit_surrogate_posterior(
        log_joint,
        theirs,
        optimizer=tf_keras.optimizers.Adam(schedule),
        num_steps=2000,
        seed=tf.constant([1, 2]),
    )
    sd = float(POSTERIOR.stddev())
    assert abs(float(ours.mean()) - float(theirs.mean())) < 0.1 * sd
    assert abs(float(ours.stddev()) / float(theirs.stddev()) - 1) < 0.1


def test_doubly_stochastic_agrees_with_full_data():
    """B = 10 of N = 40, likelihood scaled by N/B = 4: unbiased, so the fit lands on the
    same posterior (within 0.15 sd in the mean and 10% in the sd, seeds 0-1)."""
    for seed in range(2):
        q = _fresh_q()
        vicourse.fit_vi(log_joint_batch, q, num_steps=3000, seed=seed, data=X, batch_size=10)
        mean_error, sd_error = _errors(q)
        assert mean_error < 0.15 and sd_error < 0.1, (seed, mean_error, sd_error)


def test_minibatch_log_joint_estimate_is_unbiased():
    """Average the scaled estimate log p(z) + (N/B) sum_b log p(x_b|z) over 500 minibatch
    draws at a fixed z: it matches the full log joint within 4 SE (seed fixed)."""
    z = tf.constant([0.7, 1.3], tf.float64)
    data = tf.constant(X)
    estimates = []
    for k in range(500):
        batch = gradients._minibatch(data, 5, tf.constant([k, 7]))
        estimates.append(gradients._scaled_log_joint(log_joint_batch, None, z, data, batch, 8.0))
    estimates = tf.stack(estimates).numpy()
    stderr = estimates.std(0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(0) - log_joint(z).numpy()) < 4 * stderr)


def test_dataset_of_full_batches_equals_the_full_data_fit():
    """A tf.data.Dataset that yields all of X every step gives scale N/N = 1 and the same
    per-step seeds, so the streaming path reproduces the in-memory full-data fit."""
    q_array = _fresh_q()
    array_fit = vicourse.fit_vi(
        log_joint_batch, q_array, num_steps=300, seed=3, data=X, jit_compile=False
    )
    q_stream = _fresh_q()
    dataset = tf.data.Dataset.from_tensors(X)
    stream_fit = vicourse.fit_vi(
        log_joint_batch,
        q_stream,
        num_steps=300,
        seed=3,
        data=dataset,
        num_data=len(X),
        jit_compile=False,
    )
    np.testing.assert_allclose(stream_fit.elbo_trace, array_fit.elbo_trace, rtol=1e-10)
    np.testing.assert_allclose(float(q_stream.mean()), float(q_array.mean()), rtol=1e-10)


def test_streaming_minibatches_reach_the_posterior():
    dataset = tf.data.Dataset.from_tensor_slices(X).shuffle(40, seed=0).batch(20)
    q = _fresh_q()
    vicourse.fit_vi(log_joint_batch, q, num_steps=1500, seed=0, data=dataset, num_data=40)
    mean_error, sd_error = _errors(q)
    assert mean_error < 0.15 and sd_error < 0.1


def test_user_optimizer_is_used():
    q = _fresh_q()
    optimizer = tf_keras.optimizers.Adam(tf_keras.optimizers.schedules.CosineDecay(0.05, 2000))
    vicourse.fit_vi(log_joint, q, num_steps=2000, seed=0, optimizer=optimizer)
    assert int(optimizer.iterations) == 2000
    mean_error, sd_error = _errors(q)
    assert mean_error < 0.1 and sd_error < 0.06
    # Continuing with the same optimizer and surrogate reuses the compiled loop.
    (loop,) = gradients._KERAS_LOOPS[optimizer].values()
    before = loop.experimental_get_tracing_count()
    vicourse.fit_vi(log_joint, q, num_steps=100, seed=1, optimizer=optimizer)
    assert loop.experimental_get_tracing_count() == before


# ---------------------------------------------------------------------------------------
# Compilation and bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_vi_does_not_retrace(jit_compile):
    compiled = gradients._vi_chunk_xla if jit_compile else gradients._vi_chunk_graph
    target = tfd.Normal(np.float64(1.0), np.float64(2.0))
    vicourse.fit_vi(target.log_prob, _fresh_q(), num_steps=10, seed=0, jit_compile=jit_compile)
    before = compiled.experimental_get_tracing_count()
    for k in range(1, 4):  # new surrogates, a new bound method, step counts crossing chunks
        vicourse.fit_vi(
            target.log_prob,
            _fresh_q(),
            num_steps=10 + 200 * k,
            seed=k,
            learning_rate=0.01 * k,
            jit_compile=jit_compile,
        )
    assert compiled.experimental_get_tracing_count() == before


def test_minibatched_fit_vi_does_not_retrace():
    vicourse.fit_vi(log_joint_batch, _fresh_q(), num_steps=5, seed=0, data=X, batch_size=8)
    before = gradients._vi_chunk_xla.experimental_get_tracing_count()
    for k in range(1, 3):
        vicourse.fit_vi(
            log_joint_batch, _fresh_q(), num_steps=300, seed=k, data=X + k, batch_size=8
        )
    assert gradients._vi_chunk_xla.experimental_get_tracing_count() == before


def test_elbo_gradient_does_not_retrace():
    target = _target()
    vicourse.elbo_gradient(target.log_prob, _q(), num_samples=16, seed=0)
    before = gradients._per_sample_gradients_graph.experimental_get_tracing_count()
    for k in range(1, 3):
        vicourse.elbo_gradient(target.log_prob, _q(M0 + k, S0 * k), num_samples=16, seed=k)
    assert gradients._per_sample_gradients_graph.experimental_get_tracing_count() == before


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(estimator="reinforce"),
            ValueError,
            r"`estimator` must be one of \('reparameterization', 'path_derivative', 'score_",
        ),
        (dict(num_samples=0), ValueError, r"`num_samples` must be at least 1"),
        (
            dict(log_joint=lambda z: log_joint(z)[:, None]),
            ValueError,
            r"`log_joint` must return one value per sample, shape \[2\]",
        ),
    ],
)
def test_elbo_gradient_bad_inputs(kwargs, error, message):
    args = dict(log_joint=log_joint, surrogate=_fresh_q(), num_samples=2, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.elbo_gradient(**args)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(batch_size=5), ValueError, r"`batch_size` and `num_data` need `data`"),
        (dict(data=X, batch_size=41), ValueError, r"`batch_size` must be at most 40"),
        (
            dict(data=tf.data.Dataset.from_tensors(X)),
            ValueError,
            r"`num_data` is required with a tf.data.Dataset",
        ),
        (
            dict(learning_rate=0.1, optimizer=tf_keras.optimizers.Adam()),
            ValueError,
            r"Pass `learning_rate` or `optimizer`, not both",
        ),
        (
            dict(surrogate=tfd.Categorical(logits=tf.Variable([0.0, 1.0]))),
            ValueError,
            r"needs a reparameterized `surrogate`.*Use estimator='score_function'",
        ),
        (
            dict(data=X, log_joint=log_joint),
            TypeError,
            r"`log_joint` failed .* takes 1 positional argument .*called as log_joint\(z, batch\)",
        ),
    ],
)
def test_fit_vi_bad_inputs(kwargs, error, message):
    args = dict(log_joint=log_joint_batch, surrogate=_fresh_q(), num_steps=5, seed=0)
    if "data" not in kwargs and "batch_size" not in kwargs:
        args["log_joint"] = log_joint
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.fit_vi(**args)


def test_tfp_builder_surrogates_work():
    """tfp.experimental.vi builders return a DeferredModule, not a distribution: it is
    accepted, fitted in place, and reaches the posterior with the path derivative."""
    q = tfp.experimental.vi.build_factored_surrogate_posterior(
        event_shape=[], dtype=tf.float64, seed=(1, 2)
    )
    vicourse.fit_vi(
        log_joint, q, num_steps=2000, estimator="path_derivative", seed=0, learning_rate=0.1
    )
    mean_error, sd_error = _errors(q)
    assert mean_error < 1e-3 and sd_error < 1e-3


def test_remembered_shape_check_still_catches_a_different_function():
    vicourse.fit_vi(log_joint, _fresh_q(), num_steps=2, seed=0)  # passes and is remembered
    with pytest.raises(ValueError, match=r"`log_joint` must return one value per sample"):
        vicourse.fit_vi(lambda z: log_joint(z)[:, None], _fresh_q(), num_steps=2, seed=0)

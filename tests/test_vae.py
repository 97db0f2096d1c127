"""Tests for vicourse.vae: the bounds against the linear-Gaussian (probabilistic PCA) closed
forms, training to the pPCA optimum, the data loaders, the mirrored strategy, compilation,
the diagnostics, and pinned errors for bad input."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vicourse
from vicourse import _vae_engine, vae

tfd = tfp.distributions
F64 = np.float64

# ---------------------------------------------------------------------------------------
# Probabilistic PCA: p(z) = N(0, I_L), p(x | z) = N(W z + b, sigma^2 I_D)
#   log p(x) = log N(x; b, W W^T + sigma^2 I),
#   p(z | x) = N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W + sigma^2 I.
# ---------------------------------------------------------------------------------------

D, L, SIGMA = 5, 2, 0.5
RNG = np.random.default_rng(0)
W = RNG.normal(size=(D, L))
B_SHIFT = RNG.normal(size=D)
X = RNG.normal(size=(4, D)) * 2.0 + B_SHIFT
PRIOR = tfd.MultivariateNormalDiag(np.zeros(L))
M = W.T @ W + SIGMA**2 * np.eye(L)
POSTERIOR_COV = SIGMA**2 * np.linalg.inv(M)


def log_evidence(x, w=W, b=B_SHIFT, sigma=SIGMA):
    covariance = w @ w.T + sigma**2 * np.eye(len(b))
    return tfd.MultivariateNormalTriL(b, np.linalg.cholesky(covariance)).log_prob(x).numpy()


def decoder(z):
    return tfd.Independent(tfd.Normal(tf.einsum("...l,dl->...d", z, W) + B_SHIFT, SIGMA), 1)


def exact_encoder(x):
    loc = (x - B_SHIFT) @ W @ np.linalg.inv(M).T
    return tfd.MultivariateNormalTriL(loc, np.linalg.cholesky(POSTERIOR_COV))


A_OTHER = RNG.normal(size=(D, L)) * 0.3
S_OTHER = np.array([0.7, 1.3])


def other_encoder(x):
    """A Gaussian encoder that is not the posterior: q(z | x) = N((x - b) A, diag s^2)."""
    loc = (x - B_SHIFT) @ A_OTHER
    return tfd.MultivariateNormalDiag(loc, tf.broadcast_to(S_OTHER, loc.shape))


def closed_form_elbo(x, loc, scale):
    """E_q[log p(x | z)] - KL(q || p) for q = N(loc, diag scale^2)."""
    residual = x - B_SHIFT - loc @ W.T
    trace = np.sum(W**2 @ scale**2)
    fit = -0.5 * D * np.log(2 * np.pi * SIGMA**2) - (np.sum(residual**2, -1) + trace) / (
        2 * SIGMA**2
    )
    kl = 0.5 * (np.sum(scale**2) + np.sum(loc**2, -1) - L - np.sum(np.log(scale**2)))
    return fit - kl


def replicated(fn, x, copies, **kwargs):
    """``copies`` independent estimates per row of x, from one call on x stacked."""
    values = fn(np.tile(x, (copies, 1)), **kwargs).numpy().reshape(copies, len(x))
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(copies)


def test_exact_posterior_gives_log_evidence_with_zero_variance():
    """At q = p(z | x), log p(x | z) + log p(z) - log q(z | x) = log p(x) for every z, so
    the Monte Carlo ELBO and every IWAE bound equal log p(x) exactly, for any seed (float64
    rounding only: 1e-9)."""
    exact = log_evidence(X)
    for seed in range(3):
        elbo = vicourse.vae_elbo(
            X, exact_encoder, decoder, PRIOR, num_samples=7, seed=seed, analytic_kl=False
        )
        np.testing.assert_allclose(elbo, exact, rtol=0, atol=1e-9)
        for k in (1, 10, 500):
            iwae = vicourse.iwae_bound(X, exact_encoder, decoder, PRIOR, num_samples=k, seed=seed)
            np.testing.assert_allclose(iwae, exact, rtol=0, atol=1e-9)


def test_analytic_kl_at_the_exact_posterior_keeps_monte_carlo_noise():
    """With the closed-form KL only E_q[log p(x | z)] is sampled: its terms vary with z, so
    the estimate is unbiased for log p(x) (within 4 SE, seed 0, 4,000 copies per row) but
    not exact. The cancellation that gives zero variance happens only when log p(z) and
    log q(z | x) are evaluated at the same sample as log p(x | z) (chapter 6's path
    derivative argument)."""
    mean, stderr = replicated(
        lambda x: vicourse.vae_elbo(x, exact_encoder, decoder, PRIOR, seed=0), X, 4000
    )
    exact = log_evidence(X)
    assert np.all(stderr > 1e-3)  # genuinely noisy
    assert np.all(np.abs(mean - exact) < 4 * stderr), (mean, exact, stderr)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_of_another_encoder_matches_the_closed_form(analytic_kl):
    """Seed 1, 4,000 independent one-sample estimates per row: each of the 4 rows within 4
    standard errors of the closed-form ELBO (a 4-SE miss has probability 6e-5 per row)."""
    mean, stderr = replicated(
        lambda x: vicourse.vae_elbo(
            x, other_encoder, decoder, PRIOR, seed=1, analytic_kl=analytic_kl
        ),
        X,
        4000,
    )
    loc = (X - B_SHIFT) @ A_OTHER
    exact = closed_form_elbo(X, loc, S_OTHER)
    assert np.all(np.abs(mean - exact) < 4 * stderr), (mean, exact, stderr)
    assert np.all(exact < log_evidence(X))


def test_iwae_is_monotone_in_k_and_below_log_evidence():
    """Burda et al. (2016): E[L_k] is non-decreasing in k and at most log p(x). Seed 2, 400
    independent estimates of the bound averaged over the 4 rows, per k. Measured: the
    increments from k = 1, 4, 16, 64 to 256 are 17, 5.0, 1.6 and 0.79 nats and the gap
    below log p(x) at k = 256 is 0.85 nats, each more than 10 standard errors (at most
    0.7, 0.2, 0.08, 0.05, 0.03): the test needs 4."""
    exact = np.mean(log_evidence(X))
    means, stderrs = [], []
    for k in (1, 4, 16, 64, 256):
        bound = vicourse.iwae_bound(
            np.tile(X, (400, 1)), other_encoder, decoder, PRIOR, num_samples=k, seed=2
        )
        per_copy = bound.numpy().reshape(400, len(X)).mean(axis=1)
        means.append(per_copy.mean())
        stderrs.append(per_copy.std(ddof=1) / np.sqrt(400))
        assert means[-1] < exact - 4 * stderrs[-1], (k, means[-1], exact)
    for j in range(4):
        assert means[j + 1] - means[j] > 4 * np.hypot(stderrs[j], stderrs[j + 1]), (j, means)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
    iwae = vicourse.iwae_bound(X, other_encoder, decoder, PRIOR, num_samples=1, seed=5)
    elbo = vicourse.vae_elbo(X, other_encoder, decoder, PRIOR, seed=5, analytic_kl=False)
    np.testing.assert_allclose(iwae, elbo, rtol=1e-12)


def test_many_importance_samples_are_decoded_in_chunks():
    """k = 40,000 samples of 4 rows exceed one decoder chunk (2^16 rows): the chunked
    evaluation must equal the log-mean-exp of all weights (here, all equal to log p(x))."""
    iwae = vicourse.iwae_bound(X, exact_encoder, decoder, PRIOR, num_samples=40_000, seed=0)
    np.testing.assert_allclose(iwae, log_evidence(X), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Training: the linear VAE reaches the pPCA maximum likelihood (Tipping & Bishop 1999)
# ---------------------------------------------------------------------------------------


def ppca_data(num=2000, seed=0):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(D, L)), rng.normal(size=D)
    z = rng.normal(size=(num, L))
    return (z @ w.T + b + SIGMA * rng.normal(size=(num, D))).astype(np.float32)


def ppca_max_log_likelihood(x, latent_dim):
    """Tipping & Bishop (1999): with sample covariance eigenvalues l_1 >= ... >= l_D,
    sigma^2_ML = mean of the D - L smallest, and the maximum average log-likelihood is
    -1/2 [D log 2 pi + sum_{i <= L} log l_i + (D - L) log sigma^2_ML + D]."""
    dim = x.shape[1]
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x.T.astype(F64), bias=True)))[::-1]
    noise = eigenvalues[latent_dim:].mean()
    return -0.5 * (
        dim * np.log(2 * np.pi)
        + np.log(eigenvalues[:latent_dim]).sum()
        + (dim - latent_dim) * np.log(noise)
        + dim
    )


def linear_decoder_parameters(decoder_):
    """(W, b, sigma) of a trained linear-Gaussian decoder, read off its means."""
    b = decoder_(tf.zeros([1, L])).mean().numpy()[0]
    w = np.stack([decoder_(tf.one_hot([j], L)).mean().numpy()[0] - b for j in range(L)], 1)
    return w.astype(F64), b.astype(F64), float(decoder_.noise_scale)


def test_linear_vae_reaches_the_ppca_optimum_and_its_elbo_is_tight():
    """Linear encoder (diagonal Gaussian q), linear decoder, learned sigma: 100 epochs of
    B = 100 (2,000 Adam steps, rate 0.02 decayed along a cosine), seed 0. Measured (XLA
    and graph alike): the ELBO
    per example ends 0.0016 nats below the pPCA maximum log-likelihood, and 0.0015 below
    log p_theta(x) of the learned decoder (Lucas et al. 2019: at the optimum the decoder's
    columns are orthogonal, the posterior is diagonal, and the ELBO is tight). Tolerance
    0.02 nats for both: ten times the measured gaps, far below the 0.25 nats left after
    600 steps."""
    x = ppca_data()
    encoder = vicourse.make_encoder(D, L, hidden_units=(), data=x, seed=0)
    decoder_ = vicourse.make_decoder(L, D, likelihood="normal", hidden_units=(), data=x, seed=1)
    prior = tfd.MultivariateNormalDiag(tf.zeros(L))
    fit = vicourse.fit_vae(
        x,
        encoder,
        decoder_,
        prior,
        epochs=100,
        batch_size=100,
        learning_rate=0.02,
        decay=True,
        seed=0,
        progress=False,
        jit_compile=False,  # a graph: XLA gains nothing on a linear model
    )
    elbo = float(
        tf.reduce_mean(vicourse.vae_elbo(x, encoder, decoder_, prior, num_samples=100, seed=1))
    )
    optimum = ppca_max_log_likelihood(x, L)
    w, b, sigma = linear_decoder_parameters(decoder_)
    learned = float(np.mean(log_evidence(x.astype(F64), w, b, sigma)))
    assert learned <= optimum + 1e-4  # the ML solution is the maximum
    assert optimum - elbo < 0.02, (optimum, elbo)
    assert learned - elbo < 0.02, (learned, elbo)
    assert fit.train_elbo.shape == (100,) and fit.loss_trace.shape == (2000,)
    assert fit.train_elbo[-1] > fit.train_elbo[0]


def test_a_gaussian_vae_is_scale_equivariant():
    """Networks built with ``data`` standardize their input and scale their output by the
    data's own statistics, so multiplying the data by 10^4 leaves the fit unchanged up to
    units: every ELBO drops by exactly D log 10^4 (the change-of-variables Jacobian).
    Float32 rounding of the rescaled data is the only difference: a relative 1e-4 (of
    about 50 nats) is far above it and far below the 46 nats of the shift."""
    x = ppca_data(500)
    prior = tfd.MultivariateNormalDiag(tf.zeros(L))
    traces = []
    for factor in (1.0, 1e4):
        data = x * np.float32(factor)
        encoder = vicourse.make_encoder(D, L, hidden_units=(8,), data=data, seed=0)
        decoder_ = vicourse.make_decoder(
            L, D, likelihood="normal", hidden_units=(8,), data=data, seed=1
        )
        fit = vicourse.fit_vae(
            data,
            encoder,
            decoder_,
            prior,
            epochs=3,
            batch_size=50,
            learning_rate=0.01,
            seed=0,
            progress=False,
            jit_compile=False,
        )
        traces.append(fit.train_elbo.numpy())
    np.testing.assert_allclose(traces[1], traces[0] - D * np.log(1e4), rtol=1e-4)


# ---------------------------------------------------------------------------------------
# Training on the digits: history, seeds, KL weight, compiled once
# ---------------------------------------------------------------------------------------

DIGITS = vicourse.load_digits_images()


def small_vae(seed=0, latent=2):
    x = DIGITS.x_train
    encoder = vicourse.make_encoder(64, latent, hidden_units=(32,), data=x, seed=seed)
    decoder_ = vicourse.make_decoder(latent, 64, hidden_units=(32,), data=x, seed=seed + 1)
    return encoder, decoder_, tfd.MultivariateNormalDiag(tf.zeros(latent))


def test_training_on_the_digits_improves_the_held_out_elbo():
    encoder, decoder_, prior = small_vae()
    fit = vicourse.fit_vae(
        DIGITS.x_train,
        encoder,
        decoder_,
        prior,
        epochs=8,
        batch_size=64,
        learning_rate=3e-3,
        seed=0,
        validation=DIGITS.x_validation,
        progress=False,
        jit_compile=False,  # the graph path; the XLA path is tested below and with pPCA
    )
    assert fit.validation_elbo.shape == (8,) and fit.train_kl.shape == (8,)
    assert fit.loss_trace.shape == (8 * (1437 // 64),)
    # From about -250 nats per image at the start to about -190 (measured -186).
    assert float(fit.validation_elbo[-1]) > float(fit.validation_elbo[0]) + 30
    held_out = vicourse.vae_elbo(
        DIGITS.x_validation, encoder, decoder_, prior, num_samples=50, seed=3
    )
    # fit_vae's validation ELBO (1 sample, other noise) agrees with vae_elbo (50 samples)
    # within 1 nat of about 190 (measured 0.2).
    assert abs(float(tf.reduce_mean(held_out)) - float(fit.validation_elbo[-1])) < 1.0


def test_same_seed_same_fit():
    results = []
    for _ in range(2):
        encoder, decoder_, prior = small_vae(seed=4)
        results.append(
            vicourse.fit_vae(
                DIGITS.x_train,
                encoder,
                decoder_,
                prior,
                epochs=2,
                batch_size=128,
                seed=9,
                progress=False,
                jit_compile=False,
            )
        )
    np.testing.assert_array_equal(results[0].loss_trace, results[1].loss_trace)
    np.testing.assert_array_equal(results[0].train_elbo, results[1].train_elbo)


def test_no_retrace_across_epochs_and_calls():
    """The XLA program of a block of steps is traced once for the first epoch, and reused by
    later epochs and by a second call with the same networks (other seed, rate, epochs)."""
    encoder, decoder_, prior = small_vae(seed=4)
    vicourse.fit_vae(
        DIGITS.x_train,
        encoder,
        decoder_,
        prior,
        epochs=2,
        batch_size=128,
        seed=9,
        progress=False,
    )
    trainer = _vae_engine.trainer_for(encoder, decoder_, None, 1)
    functions = (trainer.block, trainer.block_from_iterator)
    assert [f.experimental_get_tracing_count() for f in functions] == [1, 1]
    again = vicourse.fit_vae(
        DIGITS.x_train,
        encoder,
        decoder_,
        prior,
        epochs=3,
        batch_size=128,
        seed=10,
        learning_rate=5e-4,
        decay=True,
        validation=DIGITS.x_validation[:100],
        progress=False,
    )
    assert [f.experimental_get_tracing_count() for f in functions] == [1, 1]
    assert trainer.evaluate.experimental_get_tracing_count() == 1  # three epochs
    # The second call continued training: the optimizer counted every step of both.
    assert int(trainer.optimizer.iterations) == (2 + 3) * (1437 // 128)
    assert again.loss_trace.shape == (3 * (1437 // 128),)


def test_kl_weight_and_warmup_enter_the_objective_as_documented():
    """Per step, loss = -(reconstruction - beta_t KL) = -(ELBO + (1 - beta_t) KL), so the
    epoch means obey mean(loss) = -train_elbo - (1 - beta) train_kl for a constant beta."""
    encoder, decoder_, prior = small_vae(seed=6)
    fit = vicourse.fit_vae(
        DIGITS.x_train,
        encoder,
        decoder_,
        prior,
        epochs=2,
        batch_size=128,
        seed=1,
        kl_weight=0.25,
        progress=False,
        jit_compile=False,
    )
    steps = 1437 // 128
    for epoch in range(2):
        loss = float(tf.reduce_mean(fit.loss_trace[epoch * steps : (epoch + 1) * steps]))
        want = -float(fit.train_elbo[epoch]) - 0.75 * float(fit.train_kl[epoch])
        assert loss == pytest.approx(want, rel=1e-5)
    # A warm-up over both epochs: the KL weight rises from 1/22 to 1, so early losses
    # weigh the KL little: the first step's loss is below -ELBO.
    encoder, decoder_, prior = small_vae(seed=6)
    warm = vicourse.fit_vae(
        DIGITS.x_train,
        encoder,
        decoder_,
        prior,
        epochs=2,
        batch_size=128,
        seed=1,
        kl_warmup_epochs=2,
        progress=False,
        jit_compile=False,
    )
    assert float(tf.reduce_mean(warm.loss_trace)) < -float(tf.reduce_mean(warm.train_elbo))


def test_a_dataset_of_rows_trains_one_step_per_batch():
    encoder, decoder_, prior = small_vae(seed=7)
    rows = tf.data.Dataset.from_tensor_slices(DIGITS.x_train[:640])
    fit = vicourse.fit_vae(
        rows,
        encoder,
        decoder_,
        prior,
        epochs=2,
        batch_size=64,
        seed=0,
        progress=False,
        jit_compile=False,
    )
    assert fit.loss_trace.shape == (20,) and np.all(np.isfinite(fit.loss_trace))


def test_progress_bar_shows_each_epoch(capsys):
    encoder, decoder_, prior = small_vae(seed=8)
    vicourse.fit_vae(
        DIGITS.x_train[:256],
        encoder,
        decoder_,
        prior,
        epochs=2,
        batch_size=64,
        seed=0,
        jit_compile=False,
    )
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "elbo=" in err


# ---------------------------------------------------------------------------------------
# Several devices: MirroredStrategy over two logical CPUs, in a subprocess
# ---------------------------------------------------------------------------------------


def test_mirrored_strategy_matches_one_device():
    """Logical devices must be configured before TensorFlow initializes its devices, which
    this process did when it imported vicourse. A conftest fixture could configure them at
    start-up, but then every test would run with two devices; a subprocess keeps the
    change to this test (and mirrors how a user configures devices at program start).

    With a point-mass encoder the fit has no Monte Carlo noise, so the only differences are
    the order of floating-point sums (two half-batch gradients summed by the all-reduce) and
    XLA's against the graph's rounding (the replicas run XLA, the one-device run a graph):
    the loss traces agree to a relative 1e-5 (measured 2e-7 over 12 steps). With a Gaussian
    encoder each replica draws its own noise (the seed folded with the replica's index), so
    the runs agree in distribution only: per-epoch ELBOs within 6%, because one-device runs
    with seeds 5, 6 and 7 differ by up to 5.2% after the first epoch and 0.4% after the
    second (the mirrored run: 1.4% and 0.5%). The tolerance catches what matters here, a
    wrong scale (the all-reduce sums: a loss not divided by the global batch would be off
    by 100%) or replicas that do not learn."""
    worker = Path(__file__).with_name("mirrored_worker.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, str(worker), "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    point = result["point"]
    single, mirrored = (np.array(point[k]["loss"]) for k in ("single", "mirrored"))
    assert single.shape == mirrored.shape == (12,)
    np.testing.assert_allclose(mirrored, single, rtol=1e-5)
    gaussian = result["gaussian"]
    single, mirrored = (np.array(gaussian[k]["elbo"]) for k in ("single", "mirrored"))
    np.testing.assert_allclose(mirrored, single, rtol=0.06)


# ---------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------

# With orthonormal-column directions the pPCA posterior covariance sigma^2 M^-1 is
# diagonal, so the exact posterior is in the diagonal-Gaussian family.
W_ORTHO = np.linalg.qr(RNG.normal(size=(D, L)))[0] * np.array([2.0, 1.2])
M_ORTHO = W_ORTHO.T @ W_ORTHO + SIGMA**2 * np.eye(L)


def ortho_decoder(z):
    return tfd.Independent(tfd.Normal(tf.einsum("...l,dl->...d", z, W_ORTHO) + B_SHIFT, SIGMA), 1)


def ortho_posterior(x):
    loc = (x - B_SHIFT) @ W_ORTHO @ np.linalg.inv(M_ORTHO).T
    return loc, np.sqrt(np.diag(SIGMA**2 * np.linalg.inv(M_ORTHO)))


def shifted_encoder(x):
    """A diagonal-Gaussian encoder that misses the posterior: mean shifted, sd doubled."""
    loc, scale = ortho_posterior(x)
    return tfd.MultivariateNormalDiag(loc + 0.5, tf.broadcast_to(2 * scale, loc.shape))


def test_amortization_gap_is_the_kl_to_the_posterior_when_the_family_is_exact():
    """The per-example optimum q* is the posterior itself (it is diagonal here), so its ELBO
    is log p(x) and the gap of the shifted encoder is KL(q || p(z | x)), in closed form.
    2,000 fit_vi steps and 100,000 evaluation samples (seed 0): the optimized ELBO within
    0.05 nats of log p(x), and the gap within 0.07 nats of the KL (about 4.6 nats). The
    amortized ELBO's Monte Carlo standard error is about 0.014 here (0.07 with 4,000
    samples, where it missed by 0.15): 0.07 is 5 of them."""
    gap = vicourse.amortization_gap(
        X, shifted_encoder, ortho_decoder, PRIOR, num_samples=100_000, seed=0
    )
    exact = log_evidence(X, W_ORTHO)
    np.testing.assert_allclose(gap.optimized_elbo, exact, atol=0.05)
    loc, scale = ortho_posterior(X)
    kl = tfd.kl_divergence(
        shifted_encoder(X), tfd.MultivariateNormalDiag(loc, tf.broadcast_to(scale, loc.shape))
    ).numpy()
    np.testing.assert_allclose(gap.gap, kl, atol=0.07)
    np.testing.assert_allclose(gap.amortized_elbo, exact - kl, atol=0.07)
    assert gap.elbo_trace.shape == (2000,)


def test_amortization_gap_does_not_retrace_for_new_data_of_the_same_shape():
    vicourse.amortization_gap(X, shifted_encoder, ortho_decoder, PRIOR, num_steps=50, seed=0)
    before = vicourse.gradients._vi_chunk_xla.experimental_get_tracing_count()
    vicourse.amortization_gap(X + 1.0, shifted_encoder, ortho_decoder, PRIOR, num_steps=60, seed=1)
    assert vicourse.gradients._vi_chunk_xla.experimental_get_tracing_count() == before


def test_active_units_and_kl_per_dimension():
    """Unit 0's mean follows x (variance 4 over a grid), unit 1's is constant at 0 with sd
    1: it is inactive and its KL to N(0, 1) is exactly 0."""
    x = np.linspace(-2, 2, 101)[:, None] * np.ones((1, 3))

    def encoder(x):
        loc = tf.stack([x[:, 0] * np.sqrt(3), tf.zeros_like(x[:, 0])], axis=1)
        return tfd.MultivariateNormalDiag(loc, tf.ones_like(loc) * [0.5, 1.0])

    units = vicourse.active_units(x, encoder, PRIOR)
    grid = np.linspace(-2, 2, 101) * np.sqrt(3)
    np.testing.assert_allclose(units.activity, [grid.var(), 0.0], atol=1e-12)
    assert int(units.num_active) == 1
    kl0 = np.mean(0.5 * (0.25 + grid**2 - 1 - np.log(0.25)))
    np.testing.assert_allclose(units.kl_per_dimension, [kl0, 0.0], atol=1e-10)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def test_digits_loader_is_offline_and_deterministic():
    first, second = vicourse.load_digits_images(), vicourse.load_digits_images()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.x_train.shape == (1437, 64) and first.x_validation.shape == (360, 64)
    assert first.x_train.dtype == np.float32 and first.max_value == 16
    assert set(np.unique(first.x_train)) <= set(range(17))
    assert np.all(np.bincount(first.y_validation) >= 35)  # stratified: every digit held out
    binary = vicourse.load_digits_images(binarize=True)
    assert set(np.unique(binary.x_train)) == {0.0, 1.0} and binary.max_value == 1


def test_mnist_falls_back_to_the_digits_when_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy
    monkeypatch.setenv("VICOURSE_OFFLINE", "1")
    with pytest.warns(UserWarning, match=r"MNIST is not available \(VICOURSE_OFFLINE is set\)"):
        data = vicourse.load_mnist()
    assert data.source == "digits" and data.max_value == 1  # binarized digits


def test_mnist_gives_up_on_an_unreachable_host_without_hanging(monkeypatch, tmp_path):
    """192.0.2.1 (TEST-NET-1) is never routed: the probe must give up after its timeout.
    (The bound on the time is the point: 0.5 s allowed, 10 s asserted as "did not hang".)"""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("VICOURSE_OFFLINE", raising=False)
    monkeypatch.setattr(vae, "_MNIST_HOST", ("192.0.2.1", 443))
    start = time.monotonic()
    with pytest.warns(UserWarning, match=r"192\.0\.2\.1 is not reachable within 0\.5 s"):
        data = vicourse.load_mnist(binarize=False, timeout=0.5)
    assert time.monotonic() - start < 10
    assert data.source == "digits" and data.max_value == 16


def test_mnist_falls_back_when_the_download_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("VICOURSE_OFFLINE", raising=False)
    monkeypatch.setattr(vae, "_reachable", lambda address, timeout: True)

    def broken():
        raise OSError("connection reset")

    monkeypatch.setattr(vae.tf_keras.datasets.mnist, "load_data", broken)
    with pytest.warns(UserWarning, match=r"download failed \(OSError: connection reset\)"):
        data = vicourse.load_mnist()
    assert data.source == "digits"


# ---------------------------------------------------------------------------------------
# Bad input: pinned messages
# ---------------------------------------------------------------------------------------

F32_PRIOR = tfd.MultivariateNormalDiag(tf.zeros(2))
DIGITS_X = DIGITS.x_validation[:8]


def digits_encoder(x):
    return tfd.MultivariateNormalDiag(x[:, :2] * 0.01, tf.ones([x.shape[0], 2]))


def bernoulli_decoder(z):
    logits = tf.einsum("...l,ld->...d", z, tf.ones([2, 64]))
    return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 1)


def binomial_decoder(z):
    logits = tf.einsum("...l,ld->...d", z, tf.ones([2, 64]))
    return tfd.Independent(tfd.Binomial(16.0, logits=logits), 1)


def float64_decoder(z):
    logits = tf.cast(tf.einsum("...l,ld->...d", z, tf.ones([2, 64])), tf.float64)
    return tfd.Independent(tfd.Binomial(F64(16.0), logits=logits), 1)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            dict(encoder=lambda x: digits_encoder(x[:1])),
            ValueError,
            r"`encoder` must return q\(z \| x\) .* with batch shape \[8\] and event shape \[2\], "
            r"got batch shape \(1,\)",
        ),
        (
            dict(encoder=lambda x: tfd.MultivariateNormalDiag(tf.zeros([x.shape[0], 3]))),
            ValueError,
            r"`encoder` must return .* event shape \[2\], got batch shape \(8,\) and event "
            r"shape \(3,\)",
        ),
        (
            dict(decoder=lambda z: tfd.Binomial(16.0, logits=tf.zeros([*z.shape[:-1], 64]))),
            ValueError,
            r"`decoder` must return p\(x \| z\) .* batch shape \[1, 8\] and event shape \[64\].*"
            r"tfd.Independent",
        ),
        (dict(x=DIGITS_X[None]), ValueError, r"`x` must have shape \[N, D\]"),
        (dict(x=DIGITS_X.ravel()), ValueError, r"`x` must have shape \[N, D\]"),
        (
            dict(x=np.where(np.arange(64) == 3, np.nan, DIGITS_X)),
            ValueError,
            r"`x` contains 8 NaN or infinite value\(s\)",
        ),
        (dict(num_samples=0), ValueError, r"`num_samples` must be at least 1, got 0"),
        (
            dict(decoder=bernoulli_decoder),
            ValueError,
            r"`decoder` returns a Bernoulli likelihood, whose support is \{0, 1\}, but `x` "
            r"holds other values \(e.g. (\d+)\.0\)\. Binarize",
        ),
        (
            dict(decoder=float64_decoder),
            TypeError,
            r"`decoder` returned a distribution of dtype float64, but `x` is float32",
        ),
    ],
)
@pytest.mark.parametrize("fn", [vicourse.vae_elbo, vicourse.iwae_bound])
def test_bounds_bad_inputs(fn, change, error, message):
    args = dict(x=DIGITS_X, encoder=digits_encoder, decoder=binomial_decoder, prior=F32_PRIOR)
    args.update(num_samples=1, seed=0)
    args.update(change)
    with pytest.raises(error, match=message):
        fn(**args)


def test_fit_vae_bad_inputs():
    encoder, decoder_, prior = small_vae(seed=11)
    bernoulli = vicourse.make_decoder(2, 64, likelihood="bernoulli", hidden_units=(4,), seed=0)
    with pytest.raises(ValueError, match=r"`decoder` returns a Bernoulli likelihood"):
        vicourse.fit_vae(DIGITS.x_train, encoder, bernoulli, prior, epochs=1, batch_size=64, seed=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be at most 1,437"):
        vicourse.fit_vae(
            DIGITS.x_train, encoder, decoder_, prior, epochs=1, batch_size=2000, seed=0
        )
    with pytest.raises(ValueError, match=r"`validation` must have the 64 columns of `train`"):
        vicourse.fit_vae(
            DIGITS.x_train,
            encoder,
            decoder_,
            prior,
            epochs=1,
            batch_size=64,
            seed=0,
            validation=DIGITS.x_validation[:, :10],
        )

    def point_encoder(x):
        return tfd.MultivariateNormalDiag(tf.zeros([x.shape[0], 2]))

    def categorical_encoder(x):
        return tfd.OneHotCategorical(logits=tf.zeros([x.shape[0], 2]), dtype=tf.float32)

    with pytest.raises(ValueError, match=r"`encoder` returns a OneHotCategorical, which is no"):
        vicourse.fit_vae(
            DIGITS.x_train, categorical_encoder, decoder_, prior, epochs=1, batch_size=64, seed=0
        )
    with pytest.raises(ValueError, match=r"`encoder` and `decoder` have no trainable vari"):
        vicourse.fit_vae(
            DIGITS.x_train, point_encoder, binomial_decoder, prior, epochs=1, batch_size=64, seed=0
        )
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(ValueError, match=r"must be created under `strategy`.scope\(\)"):
        vicourse.fit_vae(
            DIGITS.x_train,
            encoder,
            decoder_,
            prior,
            epochs=1,
            batch_size=64,
            seed=0,
            strategy=strategy,
        )
    with pytest.raises(TypeError, match=r"`strategy` must be a tf.distribute.Strategy"):
        vicourse.fit_vae(
            DIGITS.x_train,
            encoder,
            decoder_,
            prior,
            epochs=1,
            batch_size=64,
            seed=0,
            strategy="mirrored",
        )


def test_make_decoder_bad_inputs():
    with pytest.raises(ValueError, match=r"`likelihood` must be one of \('binomial', 'bern"):
        vicourse.make_decoder(2, 64, likelihood="gaussian")
    with pytest.raises(ValueError, match=r"`decoder` returns a Bernoulli likelihood"):
        vicourse.make_decoder(2, 64, likelihood="bernoulli", data=DIGITS.x_train)
    with pytest.raises(ValueError, match=r"`total_count` \(8\) is below the largest value of"):
        vicourse.make_decoder(2, 64, total_count=8, data=DIGITS.x_train)
    with pytest.raises(ValueError, match=r"`data` must have 64 columns"):
        vicourse.make_encoder(64, 2, data=DIGITS.x_train[:, :8])

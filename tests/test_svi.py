"""Tests for vicourse.svi: SVI is CAVI at full batch, follows the natural-parameter
recursion, estimates the ELBO without bias, and converges to CAVI's optimum."""

import itertools
import math
import warnings
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

import vicourse
from vicourse import cavi, svi
from vicourse._seed import split_seed

CENTRES = np.array([[-8.0, 0.0], [8.0, 0.0], [0.0, 8.0], [0.0, -8.0]])
# Most tests share one shape (N, K, B, D) = (400, 4, 40, 2), so that the compiled loop is
# built once for them: each new shape costs a few seconds of XLA compilation.
N_SMALL, B_SMALL = 400, 40


def _clusters(n, seed, centres=CENTRES):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + rng.normal(size=(n, centres.shape[1])), labels


def _numpy_local_step(x, loc, var, noise_var):
    """phi_ik proportional to exp((x_i^T m_k - (D s_k^2 + ||m_k||^2) / 2) / sigma^2)."""
    logits = (x @ loc.T - 0.5 * (x.shape[1] * var + np.sum(loc**2, 1))) / noise_var
    return np.exp(logits - special.logsumexp(logits, axis=1, keepdims=True))


def _state(loc, var):
    return cavi.GMMState(tf.constant(loc), tf.constant(var))


# ---------------------------------------------------------------------------------------
# Exact identities (float64)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_scale", [1.0, 0.5])
def test_full_batch_step_with_zero_delay_is_one_cavi_sweep(noise_scale):
    x, _ = _clusters(40, seed=0)
    x = x * noise_scale
    init = x[[0, 1, 2]]
    fit = vicourse.fit_gmm_svi(
        x, 3, 20.0, noise_scale, batch_size=40, num_steps=1, tau=0.0, init=init, seed=0
    )
    start = _state(init, np.full(3, noise_scale**2))  # SVI starts q(mu_k) at sigma^2
    swept, info = cavi.gmm_step(start, x, 20.0, noise_scale)
    np.testing.assert_allclose(fit.step_sizes, [1.0], rtol=0, atol=0)
    np.testing.assert_allclose(fit.means_loc, swept.means_loc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fit.means_var, swept.means_var, rtol=1e-12)
    # With B = N the "estimate" is exact: the ELBO at the starting point, phi optimal.
    at_start = cavi.gmm_elbo(x, start, info.responsibilities, 20.0, noise_scale)
    np.testing.assert_allclose(fit.elbo_trace, [at_start], rtol=1e-12)
    # The final local step is CAVI's next assignment update.
    _, next_info = cavi.gmm_step(swept, x, 20.0, noise_scale)
    np.testing.assert_allclose(fit.responsibilities, next_info.responsibilities, atol=1e-12)
    closed = cavi.gmm_elbo(x, swept, next_info.responsibilities, 20.0, noise_scale)
    np.testing.assert_allclose(fit.elbo, closed, rtol=1e-12)


def test_full_batch_steps_follow_the_natural_parameter_recursion():
    """Five steps with tau_0 = 2, kappa = 0.6, computed independently in NumPy."""
    x, _ = _clusters(40, seed=1)
    prior_var, noise_var, delay, kappa = 5.0**2, 1.5**2, 2.0, 0.6
    init = x[[0, 5, 9]] + 0.3
    fit = vicourse.fit_gmm_svi(
        x, 3, 5.0, 1.5, batch_size=40, num_steps=5, tau=delay, kappa=kappa, init=init, seed=4
    )
    precision = np.full(3, 1.0 / noise_var)  # eta1 = 1 / s^2, starting at 1 / sigma^2
    shift = init * precision[:, None]  # eta2 = m / s^2
    rhos, elbos = [], []
    for t in range(1, 6):
        loc, var = shift / precision[:, None], 1.0 / precision
        phi = _numpy_local_step(x, loc, var, noise_var)
        elbos.append(float(cavi.gmm_elbo(x, _state(loc, var), phi, 5.0, 1.5)))
        target_precision = 1.0 / prior_var + phi.sum(0) / noise_var
        target_shift = phi.T @ x / noise_var
        rho = (t + delay) ** -kappa
        precision = (1 - rho) * precision + rho * target_precision
        shift = (1 - rho) * shift + rho * target_shift
        rhos.append(rho)
    np.testing.assert_allclose(fit.step_sizes, rhos, rtol=1e-14)
    np.testing.assert_allclose(fit.means_var, 1.0 / precision, rtol=1e-12)
    np.testing.assert_allclose(fit.means_loc, shift / precision[:, None], rtol=1e-12)
    np.testing.assert_allclose(fit.elbo_trace, elbos, rtol=1e-12)


def _constants(prior_scale, noise_scale, num_points, batch_size, center):
    return svi._constants(
        tf.constant(center),
        tf.constant(prior_scale, tf.float64),
        tf.constant(noise_scale, tf.float64),
        num_points,
        batch_size,
        0.0,  # tau_0 = 0 and t = 1 give rho_1 = 1: the new parameters are lambda-hat
        0.7,
    )


def test_minibatch_elbo_and_natural_gradient_are_unbiased_by_enumeration():
    """N = 8, B = 3: the average over all C(8, 3) = 56 minibatches of the scaled estimates
    equals the full-data ELBO and the full-data lambda-hat, at a state with unequal
    variances. Exact up to float64 round-off: no sampling."""
    x, _ = _clusters(8, seed=2)
    loc = np.array([[-7.0, 0.5], [7.5, 1.0]])
    var = np.array([0.3, 2.0])
    center = x.mean(0) + 1.0  # any fixed centre; the parameters are stored about it
    start = cavi._to_natural(_state(loc, var), center)
    constants = _constants(10.0, 1.0, 8, 3, center)
    estimates, precisions, shifts = [], [], []
    for subset in itertools.combinations(range(8), 3):
        new, elbo, rho = svi._svi_step(constants, start, tf.constant(x[list(subset)]), 1)
        assert float(rho) == 1.0
        estimates.append(float(elbo))
        precisions.append(new.precision.numpy())
        shifts.append(new.shift.numpy())
    assert len(estimates) == math.comb(8, 3)
    phi = _numpy_local_step(x, loc, var, 1.0)
    exact = float(cavi.gmm_elbo(x, _state(loc, var), phi, 10.0, 1.0))
    np.testing.assert_allclose(np.mean(estimates), exact, rtol=1e-12)
    assert np.std(estimates) > 1.0  # the estimates do vary: the check is not vacuous
    np.testing.assert_allclose(np.mean(precisions, 0), 0.01 + phi.sum(0), rtol=1e-12)
    # eta2 about c is m / s^2 - c / s^2: add c eta1 back to compare with sum_i phi_ik x_i.
    uncentred = np.mean(shifts, 0) + np.mean(precisions, 0)[:, None] * center
    np.testing.assert_allclose(uncentred, phi.T @ x, rtol=1e-12, atol=1e-12)


def test_public_trace_is_the_minibatch_estimate():
    """Through the public API: a dataset that yields one chosen minibatch gives, as its
    first trace entry, the estimate computed by hand from the CAVI pieces."""
    x, _ = _clusters(8, seed=3)
    init = x[[0, 1]]
    subset = [1, 4, 6]
    data = tf.data.Dataset.from_tensors(x[subset])
    fit = vicourse.fit_gmm_svi(
        data, 2, 10.0, batch_size=3, num_steps=1, num_data=8, init=init, seed=0
    )
    phi = _numpy_local_step(x[subset], init, np.ones(2), 1.0)
    start = _state(init, np.ones(2))
    batch_elbo = float(cavi.gmm_elbo(x[subset], start, phi, 10.0))
    # ELBO of the minibatch alone = global terms + local terms of 3 points; the estimate
    # keeps the global terms once and counts the local terms 8/3 times.
    model = cavi._model(x, tf.constant(100.0, tf.float64), tf.constant(1.0, tf.float64))
    global_terms = float(cavi._global_terms(model, start))
    expected = global_terms + 8 / 3 * (batch_elbo - global_terms)
    np.testing.assert_allclose(fit.elbo_trace, [expected], rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Convergence to CAVI's optimum
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_to_the_cavi_optimum_on_separated_clusters(seed):
    """N = 1e5, four clusters 16 noise sd apart, both started from one point per cluster.

    SVI with B = 1000 and 1000 steps ends at rho ~ 0.008; each minibatch estimates a mean
    from ~250 points (sd 0.063), so the last iterate's mean has sd about
    sqrt(rho / 2) * 0.063 ~ 0.004: a tolerance of 0.03 is over 7 sd. The ELBO gap seen
    over these seeds is below 1e-5 relative; the required 1e-3 has a wide margin.
    """
    x, labels = _clusters(10**5, seed=seed)
    init = x[[int(np.argmax(labels == k)) for k in range(4)]]
    reference = vicourse.fit_gmm(x, 4, 20.0, init=init, num_iters=500)
    assert bool(reference.converged)
    fit = vicourse.fit_gmm_svi(x, 4, 20.0, init=init, batch_size=1000, num_steps=1000, seed=seed)
    optimum = float(reference.elbo_trace[-1])
    gap = (optimum - float(fit.elbo)) / abs(optimum)
    assert abs(gap) < 1e-3
    np.testing.assert_allclose(fit.means_loc, reference.means_loc, atol=0.03)
    np.testing.assert_allclose(fit.means_var, reference.means_var, rtol=0.05)
    np.testing.assert_allclose(fit.means_loc, CENTRES, atol=0.03)


# ---------------------------------------------------------------------------------------
# The minibatch sampler
# ---------------------------------------------------------------------------------------


@tf.function(jit_compile=True)
def _draws(seed, num_draws, population, batch_size):
    def draw(t):
        return svi._minibatch_indices(seed, t, batch_size, population)

    return tf.map_fn(draw, tf.range(num_draws), fn_output_signature=tf.int32)


@pytest.mark.parametrize("population, batch_size", [(8, 3), (6, 2), (10, 4)])
def test_minibatches_are_distinct_and_uniform_subsets(population, batch_size):
    """Every subset of size B is equally likely: a chi-square test over all C(N, B)
    subsets, 200 draws per subset on average, with fixed seeds. The sampler is a keyed
    permutation, so "uniform" is pseudo-random: p > 1e-3 is a sanity bound (with fewer
    cipher rounds, (8, 3) failed it with p ~ 1e-15)."""
    subsets = math.comb(population, batch_size)
    draws = _draws(tf.constant([5, 6]), 200 * subsets, population, batch_size).numpy()
    assert all(len(set(row)) == batch_size for row in draws)
    assert draws.min() >= 0 and draws.max() < population
    counts = Counter(tuple(sorted(row)) for row in draws)
    assert len(counts) == subsets
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


def test_minibatch_indices_in_a_large_population():
    """B = 1000 of N = 1e7 - 1 (no square domain): distinct, in range, spread out. Run
    eagerly; the dataset-versus-array test shows that XLA draws the same indices."""
    seed = tf.constant([1, 2])
    draws = np.stack(
        [svi._minibatch_indices(seed, t, 1000, 10**7 - 1).numpy() for t in range(1, 4)]
    )
    for row in draws:
        assert len(set(row)) == 1000 and row.min() >= 0 and row.max() < 10**7 - 1
    # The mean of 1000 uniform indices has sd N / sqrt(12 * 1000) ~ 0.009 N.
    assert np.all(np.abs(draws.mean(1) / 10**7 - 0.5) < 0.05)
    full = svi._minibatch_indices(seed, 1, 1000, 1000).numpy()
    assert np.array_equal(np.sort(full), np.arange(1000))


# ---------------------------------------------------------------------------------------
# Paths, seeds, compilation
# ---------------------------------------------------------------------------------------


def _same_minibatches(x, seed, batch_size, num_steps):
    """The minibatches fit_gmm_svi draws from ``x`` with ``seed``, as a dataset."""
    _, sample_seed = (svi._nonnegative(part) for part in split_seed(seed, n=2))

    def minibatch(t):
        step = tf.cast(t, tf.int32)
        return tf.gather(x, svi._minibatch_indices(sample_seed, step, batch_size, len(x)))

    return tf.data.Dataset.range(1, num_steps + 1).map(minibatch)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_dataset_and_array_paths_agree_on_the_same_minibatches(jit_compile):
    x, _ = _clusters(N_SMALL, seed=4)
    init = x[:4]
    kwargs = dict(init=init, batch_size=B_SMALL, num_steps=40, seed=11, jit_compile=jit_compile)
    from_array = vicourse.fit_gmm_svi(x, 4, 20.0, **kwargs)
    data = _same_minibatches(x, 11, B_SMALL, 40)
    from_data = vicourse.fit_gmm_svi(data, 4, 20.0, num_data=N_SMALL, **kwargs)
    np.testing.assert_array_equal(from_data.means_loc, from_array.means_loc)
    np.testing.assert_array_equal(from_data.means_var, from_array.means_var)
    np.testing.assert_array_equal(from_data.elbo_trace, from_array.elbo_trace)
    np.testing.assert_array_equal(from_data.step_sizes, from_array.step_sizes)
    assert from_data.responsibilities is None and from_data.elbo is None


def test_same_seed_same_fit_and_runs_are_prefixes():
    x, _ = _clusters(N_SMALL, seed=5)
    a = vicourse.fit_gmm_svi(x, 4, 20.0, batch_size=B_SMALL, num_steps=50, seed=3)
    b = vicourse.fit_gmm_svi(x, 4, 20.0, batch_size=B_SMALL, num_steps=50, seed=3)
    c = vicourse.fit_gmm_svi(x, 4, 20.0, batch_size=B_SMALL, num_steps=50, seed=4)
    np.testing.assert_array_equal(a.means_loc, b.means_loc)
    np.testing.assert_array_equal(a.elbo_trace, b.elbo_trace)
    assert not np.array_equal(a.elbo_trace, c.elbo_trace)
    # Step t's minibatch depends only on the seed and t: a shorter run is a prefix.
    short = vicourse.fit_gmm_svi(x, 4, 20.0, batch_size=B_SMALL, num_steps=30, seed=3)
    np.testing.assert_array_equal(short.elbo_trace, a.elbo_trace[:30])


def test_compiled_and_graph_paths_agree_across_chunks():
    x, _ = _clusters(N_SMALL, seed=6)
    kwargs = dict(batch_size=B_SMALL, num_steps=svi._CHUNK_STEPS + 30, seed=2)
    xla = vicourse.fit_gmm_svi(x, 4, 20.0, **kwargs)
    graph = vicourse.fit_gmm_svi(x, 4, 20.0, jit_compile=False, **kwargs)
    assert xla.elbo_trace.shape == (svi._CHUNK_STEPS + 30,)
    np.testing.assert_allclose(xla.elbo_trace, graph.elbo_trace, rtol=1e-10)
    np.testing.assert_allclose(xla.means_loc, graph.means_loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xla.elbo, graph.elbo, rtol=1e-12)


def test_step_sizes_are_robbins_monro():
    x, _ = _clusters(N_SMALL, seed=0)
    fit = vicourse.fit_gmm_svi(
        x, 4, 5.0, batch_size=B_SMALL, num_steps=7, tau=3.0, kappa=0.9, seed=0
    )
    np.testing.assert_allclose(fit.step_sizes, (np.arange(1, 8) + 3.0) ** -0.9, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_fit_gmm_svi_is_scale_equivariant(dtype, scale):
    """Data, prior sd and noise sd times s: the means times s, the same responsibilities,
    the ELBO shifted by -N D log s, step for step."""
    x, _ = _clusters(N_SMALL, seed=7)
    kwargs = dict(batch_size=B_SMALL, num_steps=60, seed=1)
    reference = vicourse.fit_gmm_svi(x, 4, 20.0, 1.0, **kwargs)
    fit = vicourse.fit_gmm_svi((x * scale).astype(dtype), 4, 20.0 * scale, scale, **kwargs)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(fit.means_loc / scale, reference.means_loc, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fit.responsibilities, reference.responsibilities, atol=rtol)
    shift = -x.size * np.log(scale)
    np.testing.assert_allclose(float(fit.elbo) - shift, float(reference.elbo), rtol=rtol)


def test_float32_far_from_origin_matches_float64():
    """Clusters at 1e4 with unit spread: minibatches and natural parameters are centred at
    a fixed point among the data, so float32 does not cancel catastrophically (raw
    ||x_i||^2 ~ 2e8 has a float32 spacing of 16). What remains is float32's resolution at
    1e4, a spacing of ~1e-3: the means agree to that, and the responsibilities of points
    between two clusters (logits times |x_i - m_k| ~ 8) to a few 1e-3."""
    x, _ = _clusters(N_SMALL, seed=8)
    x = x + 1e4
    kwargs = dict(batch_size=B_SMALL, num_steps=100, seed=0)
    f64 = vicourse.fit_gmm_svi(x, 4, 2e4, **kwargs)
    f32 = vicourse.fit_gmm_svi(x.astype(np.float32), 4, 2e4, **kwargs)
    assert f32.means_loc.dtype == tf.float32
    np.testing.assert_allclose(f32.means_loc, f64.means_loc, rtol=0, atol=2e-3)
    np.testing.assert_allclose(f32.responsibilities, f64.responsibilities, atol=5e-3)


def test_progress_bar_reports_every_step(capsys):
    x, _ = _clusters(N_SMALL, seed=9)
    kwargs = dict(batch_size=B_SMALL, num_steps=1100, seed=0)
    quiet = vicourse.fit_gmm_svi(x, 4, 5.0, **kwargs)
    shown = vicourse.fit_gmm_svi(x, 4, 5.0, progress=True, **kwargs)
    err = capsys.readouterr().err
    assert "SVI" in err and "1100/1100" in err
    np.testing.assert_array_equal(quiet.elbo_trace, shown.elbo_trace)


def test_dataset_that_ends_early_warns_and_stops():
    x, _ = _clusters(100, seed=10)
    data = tf.data.Dataset.from_tensor_slices(x).batch(10, drop_remainder=True)
    with pytest.warns(UserWarning, match=r"`data` ended after 10 of num_steps=25"):
        fit = vicourse.fit_gmm_svi(data, 2, 5.0, batch_size=10, num_steps=25, num_data=100)
    assert fit.elbo_trace.shape == (10,) and fit.step_sizes.shape == (10,)


def test_dataset_exactly_as_long_as_num_steps_does_not_warn():
    x, _ = _clusters(100, seed=10)
    data = tf.data.Dataset.from_tensor_slices(x).batch(10, drop_remainder=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = vicourse.fit_gmm_svi(data, 2, 5.0, batch_size=10, num_steps=10, num_data=100)
    assert fit.elbo_trace.shape == (10,)


def _chunks(fn):
    return fn.experimental_get_tracing_count()


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_gmm_svi_does_not_retrace(jit_compile):
    chunk = svi._array_chunk_xla if jit_compile else svi._array_chunk_graph
    final = svi._final_pass_xla if jit_compile else svi._final_pass_graph
    streamed = svi._dataset_chunk_xla if jit_compile else svi._dataset_chunk_graph
    x, _ = _clusters(N_SMALL, seed=3)

    def dataset(k):
        shuffled = tf.data.Dataset.from_tensor_slices(x + k).shuffle(N_SMALL, seed=k)
        return shuffled.repeat().batch(B_SMALL, drop_remainder=True)

    common = dict(batch_size=B_SMALL, num_steps=5, jit_compile=jit_compile)
    vicourse.fit_gmm_svi(x, 4, 5.0, seed=0, **common)
    vicourse.fit_gmm_svi(dataset(0), 4, 5.0, num_data=N_SMALL, **common)
    before = [_chunks(fn) for fn in (chunk, final, streamed, svi._svi_step_xla)]
    # New step counts (crossing a chunk), step-size constants, scales, seeds and data.
    for k, num_steps in enumerate((7, svi._CHUNK_STEPS + 3, 1)):
        common = dict(
            batch_size=B_SMALL,
            num_steps=num_steps,
            tau=float(k),
            kappa=0.6 + 0.1 * k,
            seed=k,
            jit_compile=jit_compile,
        )
        vicourse.fit_gmm_svi(x + k, 4, 5.0 + k, 1.0 + k, **common)
        vicourse.fit_gmm_svi(dataset(k), 4, 5.0 + k, 1.0 + k, num_data=N_SMALL + k, **common)
    after = [_chunks(fn) for fn in (chunk, final, streamed, svi._svi_step_xla)]
    assert after == before


# ---------------------------------------------------------------------------------------
# Bad inputs: pinned messages
# ---------------------------------------------------------------------------------------

X_BAD = np.random.default_rng(0).normal(size=(10, 2))


def _pair(x):
    return x, x


def _batches(x, batch_size=5, drop_remainder=True):
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size, drop_remainder=drop_remainder)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(kappa=0.5), ValueError, r"`kappa` must be > 0.5 and <= 1.0 \(the Robbins–Monro"),
        (dict(kappa=1.2), ValueError, r"`kappa` must be > 0.5 and <= 1.0 \(the Robbins–Monro"),
        (dict(kappa=np.nan), ValueError, r"`kappa` must be a finite number"),
        (dict(tau=-1.0), ValueError, r"`tau` must be >= 0.0 \(the Robbins–Monro step sizes"),
        (dict(batch_size=0), ValueError, r"`batch_size` must be at least 1, got 0"),
        (
            dict(batch_size=11),
            ValueError,
            r"`batch_size` must be at most 10 \(the number of data points: a minibatch holds",
        ),
        (dict(batch_size=2.0), TypeError, r"`batch_size` must be an int"),
        (dict(data=np.array([[1.0, np.nan]] * 10)), ValueError, r"`data` contains 10 NaN"),
        (dict(data=np.zeros((0, 2))), ValueError, r"`data` is empty"),
        (dict(num_steps=0), ValueError, r"`num_steps` must be at least 1"),
        (dict(num_components=11), ValueError, r"`num_components` \(11\) exceeds the number"),
        (dict(num_data=12), ValueError, r"`num_data` is for a tf.data.Dataset; with an array"),
        (dict(init=np.zeros((2, 2))), ValueError, r"`init` must have shape \[3, 2\]"),
        (dict(prior_scale=-1.0), ValueError, r"`prior_scale` must be strictly positive"),
        (dict(progress=1), TypeError, r"`progress` must be True or False"),
        (
            dict(data=_batches(X_BAD)),
            ValueError,
            r"`num_data` is required when `data` is a tf.data.Dataset",
        ),
        (
            dict(data=_batches(X_BAD, drop_remainder=False), num_data=10),
            ValueError,
            r"`data` must yield minibatches of the static shape \[batch_size, D\] = \[5, D\]",
        ),
        (
            dict(data=_batches(X_BAD, batch_size=2), num_data=10),
            ValueError,
            r"`data` must yield minibatches of the static shape",
        ),
        (
            dict(data=_batches(X_BAD.astype(np.int32)), num_data=10),
            TypeError,
            r"`data` must yield float32 or float64 minibatches, got int32",
        ),
        (
            dict(data=_batches(X_BAD).map(_pair), num_data=10),
            TypeError,
            r"`data` must yield single tensors",
        ),
        (
            dict(data=_batches(X_BAD), num_data=4),
            ValueError,
            r"`batch_size` must be at most 4 \(`num_data`, the number of points",
        ),
        (
            dict(data=_batches(X_BAD), num_data=10, num_components=6),
            ValueError,
            r"`init` is needed when `num_components` \(6\) exceeds `batch_size` \(5\)",
        ),
        (
            dict(data=_batches(np.where(np.arange(10)[:, None] == 7, np.inf, X_BAD)), num_data=10),
            ValueError,
            r"`data` yielded NaN or infinite values: the fit became non-finite in steps 1 to 2",
        ),
        (dict(data=[[1.0, 2.0]] * 10, tau="1"), TypeError, r"`tau` must be a real number"),
    ],
)
def test_fit_gmm_svi_bad_inputs(kwargs, error, message):
    args = dict(data=X_BAD, num_components=3, prior_scale=1.0, batch_size=5, num_steps=2)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        vicourse.fit_gmm_svi(**args)

"""Benchmark: time per CAVI iteration for the Bayesian mixture, K = 8, D = 2.

Compares, in one process and on the same data (float64):
  1. vicourse.fit_gmm (one XLA-compiled tf.while_loop, closed-form ELBO every iteration);
  2. a plain NumPy implementation of the same updates and ELBO, written here as reference;
  3. scikit-learn's BayesianGaussianMixture(covariance_type="spherical"), whose variational
     EM also learns weights and variances, timed per iteration of a fixed-length run.

Each timing is the median over repeats of (wall time of a fixed-length run) / iterations,
after a warm-up run that compiles. vicourse and NumPy start from the same means and must end
on the same ELBO. Run: `make bench` or `.venv/bin/python benchmarks/bench_cavi.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import BayesianGaussianMixture  # noqa: E402

import vicourse  # noqa: E402

K, D, PRIOR_SCALE = 8, 2, 10.0


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-12, 12, size=(K, D))
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D)), centres


def numpy_cavi(x, init, prior_var, iters):
    """The same CAVI updates as vicourse.cavi.gmm_step, in NumPy; returns the ELBO trace."""
    n, dim = x.shape
    loc, var = init.copy(), np.ones(len(init))
    sq_norms = np.einsum("nd,nd->n", x, x)
    trace = np.empty(iters)
    log_2pi = np.log(2 * np.pi)
    for t in range(iters):
        logits = x @ loc.T - 0.5 * (dim * var + np.einsum("kd,kd->k", loc, loc))
        logits -= logits.max(axis=1, keepdims=True)
        log_phi = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        phi = np.exp(log_phi)
        counts, sums, wsq = phi.sum(0), phi.T @ x, phi.T @ sq_norms
        neg_entropy = np.sum(phi * log_phi)
        var = 1.0 / (1.0 / prior_var + counts)
        loc = sums * var[:, None]
        expected_sq = dim * var + np.einsum("kd,kd->k", loc, loc)
        trace[t] = (
            np.sum(-0.5 * dim * (log_2pi + np.log(prior_var)) - expected_sq / (2 * prior_var))
            - n * np.log(len(loc))
            - 0.5 * n * dim * log_2pi
            - 0.5 * wsq.sum()
            + np.sum(loc * sums)
            - 0.5 * np.sum(counts * expected_sq)
            - neg_entropy
            + np.sum(0.5 * dim * (log_2pi + 1.0 + np.log(var)))
        )
    return trace


def per_iteration(run, iters, repeats):
    run()  # warm-up: compiles XLA, allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / iters)
    return float(np.median(times))


def sklearn_run(x, iters):
    model = BayesianGaussianMixture(
        n_components=K,
        covariance_type="spherical",
        max_iter=iters,
        tol=0.0,
        n_init=1,
        init_params="random_from_data",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    assert model.n_iter_ == iters
    return model


def main(sizes, iters, repeats):
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(
        f"versions: Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, vicourse "
        f"{vicourse.__version__}"
    )
    print(f"K = {K}, D = {D}, {iters} iterations per run, median of {repeats} runs\n")
    print(
        "| N | vicourse (ms/iter) | NumPy (ms/iter) | scikit-learn (ms/iter) "
        "| vicourse/NumPy | vicourse/sklearn |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        x, _ = make_data(n)
        init = x[np.random.default_rng(1).choice(n, K, replace=False)]
        fit = vicourse.fit_gmm(x, K, PRIOR_SCALE, num_iters=iters, tol=0.0, init=init)
        reference = numpy_cavi(x, init, PRIOR_SCALE**2, iters)
        np.testing.assert_allclose(fit.elbo_trace.numpy(), reference, rtol=1e-9)
        t_vi = per_iteration(
            lambda x=x, init=init: vicourse.fit_gmm(
                x, K, PRIOR_SCALE, num_iters=iters, tol=0.0, init=init
            ).elbo_trace.numpy(),
            iters,
            repeats,
        )
        t_np = per_iteration(
            lambda x=x, init=init: numpy_cavi(x, init, 100.0, iters), iters, repeats
        )
        t_sk = per_iteration(lambda x=x: sklearn_run(x, iters), iters, repeats)
        print(
            f"| {n:,} | {1e3 * t_vi:.3f} | {1e3 * t_np:.3f} | {1e3 * t_sk:.3f} "
            f"| {t_vi / t_np:.2f} | {t_vi / t_sk:.2f} |",
            flush=True,
        )
    print("\nvicourse and NumPy agreed on the ELBO trace (rtol 1e-9) at every N.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.sizes, args.iters, args.repeats)
